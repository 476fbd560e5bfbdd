/**
 * Simulated rigid head motion and its application to volumes.
 *
 * Convention: for volume t the six parameters (tx, ty, tz in mm, rx, ry, rz in radians) describe
 * a rigid transform in world RAS+ coordinates. It moves the head from its position in volume 0
 * (the reference, whose parameters are all 0) to its position in volume t:
 *
 *   p_t = R (p_0 - c) + c + t,   R = Rz(rz) Ry(ry) Rx(rx)   (rotation about x first)
 *
 * where c is the world position of the grid centre. A volume is moved by resampling: the value
 * at grid point q is the reference-space image at p_0 = R^T (q - c - t) + c, interpolated
 * trilinearly. A registration that aligns volume t back to volume 0 estimates the inverse
 * transform; tools differ in sign, rotation order and centre (MCFLIRT, SPM, AFNI), so compare
 * through the displacement of points (for example FD on a 50 mm sphere), not parameter by
 * parameter.
 */
import type { MotionParams, Shape3 } from '../events.ts';
import { streamFor } from './prng.ts';

/** Largest translation (mm) and rotation (degrees) at motion scale 1. */
export const MAX_TRANSLATION_MM = 0.6;
export const MAX_ROTATION_DEG = 0.5;

export interface RunMotionOptions {
  seed: number;
  session: number;
  run: number;
  volumes: number;
  /** Multiplies the default amplitudes; 0 gives no motion. */
  scale?: number;
}

/**
 * Returns the motion applied to each volume of a run (volume 0 is the reference: all zeros).
 * Each parameter is a slow random walk (AR(1) with coefficient 0.97, a time constant of about
 * 44 s at TR 4/3 s) plus one small step at a random volume. It is then rescaled so that its
 * largest absolute value is a random fraction (0.3 to 1) of the maximum.
 */
export function runMotion(opts: RunMotionOptions): MotionParams[] {
  const scale = opts.scale ?? 1;
  const rng = streamFor(opts.seed, 'motion', opts.session, opts.run);
  const columns: Float64Array[] = [];
  for (let p = 0; p < 6; p++) {
    const series = new Float64Array(opts.volumes);
    const stepAt = 1 + rng.int(Math.max(1, opts.volumes - 1));
    const stepSize = rng.normal() * 2;
    let state = 0;
    for (let t = 1; t < opts.volumes; t++) {
      state = 0.97 * state + rng.normal();
      series[t] = state + (t >= stepAt ? stepSize : 0);
    }
    let maxAbs = 0;
    for (let t = 0; t < opts.volumes; t++) maxAbs = Math.max(maxAbs, Math.abs(series[t]));
    const limit = p < 3 ? MAX_TRANSLATION_MM : (MAX_ROTATION_DEG * Math.PI) / 180;
    const target = limit * rng.range(0.3, 1) * scale;
    const factor = maxAbs > 0 ? target / maxAbs : 0;
    for (let t = 0; t < opts.volumes; t++) series[t] *= factor;
    columns.push(series);
  }
  const motion: MotionParams[] = [];
  for (let t = 0; t < opts.volumes; t++) {
    motion.push({
      translationMm: [columns[0][t], columns[1][t], columns[2][t]],
      rotationRad: [columns[3][t], columns[4][t], columns[5][t]],
    });
  }
  return motion;
}

/** Formats the motion TSV: a header line, then one row per volume: tx ty tz (mm), rx ry rz (radians). */
export function motionTsv(motion: MotionParams[]): string {
  const lines = ['trans_x_mm\ttrans_y_mm\ttrans_z_mm\trot_x_rad\trot_y_rad\trot_z_rad'];
  for (const m of motion) lines.push([...m.translationMm, ...m.rotationRad].map((v) => v.toFixed(6)).join('\t'));
  return lines.join('\n') + '\n';
}

/** Builds the rotation matrix R = Rz Ry Rx (row-major 3x3). */
export function rotationMatrix(rotationRad: [number, number, number]): Float64Array {
  const [a, b, g] = rotationRad;
  const ca = Math.cos(a), sa = Math.sin(a), cb = Math.cos(b), sb = Math.sin(b), cg = Math.cos(g), sg = Math.sin(g);
  return new Float64Array([
    cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa,
    sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa,
    -sb, cb * sa, cb * ca,
  ]);
}

/** Inverts a row-major 4x4 affine whose last row is 0 0 0 1. */
export function invertAffine(a: Float64Array): Float64Array {
  const m = [a[0], a[1], a[2], a[4], a[5], a[6], a[8], a[9], a[10]];
  const det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
  const inv = [
    (m[4] * m[8] - m[5] * m[7]) / det, (m[2] * m[7] - m[1] * m[8]) / det, (m[1] * m[5] - m[2] * m[4]) / det,
    (m[5] * m[6] - m[3] * m[8]) / det, (m[0] * m[8] - m[2] * m[6]) / det, (m[2] * m[3] - m[0] * m[5]) / det,
    (m[3] * m[7] - m[4] * m[6]) / det, (m[1] * m[6] - m[0] * m[7]) / det, (m[0] * m[4] - m[1] * m[3]) / det,
  ];
  const t = [a[3], a[7], a[11]];
  const out = new Float64Array(16);
  for (let r = 0; r < 3; r++) {
    out[r * 4] = inv[r * 3];
    out[r * 4 + 1] = inv[r * 3 + 1];
    out[r * 4 + 2] = inv[r * 3 + 2];
    out[r * 4 + 3] = -(inv[r * 3] * t[0] + inv[r * 3 + 1] * t[1] + inv[r * 3 + 2] * t[2]);
  }
  out[15] = 1;
  return out;
}

/**
 * Computes the voxel-to-voxel map of one volume as a 4x4 row-major affine: for grid voxel q, the
 * reference-space voxel coordinates whose content moves to q.
 */
export function motionVoxelMap(affine: Float64Array, shape: Shape3, motion: MotionParams): Float64Array {
  const r = rotationMatrix(motion.rotationRad);
  const t = motion.translationMm;
  const centreVox = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2];
  const c = [0, 1, 2].map((row) => affine[row * 4] * centreVox[0] + affine[row * 4 + 1] * centreVox[1] + affine[row * 4 + 2] * centreVox[2] + affine[row * 4 + 3]);
  // World-to-world map q -> p0 = R^T (q - c - t) + c, as a 4x4.
  const world = new Float64Array(16);
  for (let row = 0; row < 3; row++) {
    let offset = c[row];
    for (let col = 0; col < 3; col++) {
      world[row * 4 + col] = r[col * 3 + row];
      offset -= r[col * 3 + row] * (c[col] + t[col]);
    }
    world[row * 4 + 3] = offset;
  }
  world[15] = 1;
  return multiply4(invertAffine(affine), multiply4(world, affine));
}

export function multiply4(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(16);
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 4; c++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[r * 4 + k] * b[k * 4 + c];
      out[r * 4 + c] = s;
    }
  }
  return out;
}

/**
 * Resamples `sources` (volumes on one grid) through a voxel map with trilinear interpolation,
 * only at the listed grid indices, writing into `targets` (other indices are left as they
 * are). Points outside the grid read as 0.
 */
export function resampleTrilinearAt(indices: Int32Array, sources: Float32Array[], targets: Float32Array[], shape: Shape3, map: Float64Array): void {
  const [nx, ny, nz] = shape;
  const nxy = nx * ny;
  const sourceCount = sources.length;
  for (let n = 0; n < indices.length; n++) {
    const q = indices[n];
    const i = q % nx;
    const j = ((q - i) / nx) % ny;
    const k = (q - i - j * nx) / nxy;
    const x = map[0] * i + map[1] * j + map[2] * k + map[3];
    const y = map[4] * i + map[5] * j + map[6] * k + map[7];
    const z = map[8] * i + map[9] * j + map[10] * k + map[11];
    const x0 = Math.floor(x), y0 = Math.floor(y), z0 = Math.floor(z);
    const fx = x - x0, fy = y - y0, fz = z - z0;
    if (x0 >= 0 && y0 >= 0 && z0 >= 0 && x0 + 1 < nx && y0 + 1 < ny && z0 + 1 < nz) {
      // Fast path: all eight neighbours inside the grid.
      const b = z0 * nxy + y0 * nx + x0;
      const w000 = (1 - fx) * (1 - fy) * (1 - fz), w100 = fx * (1 - fy) * (1 - fz);
      const w010 = (1 - fx) * fy * (1 - fz), w110 = fx * fy * (1 - fz);
      const w001 = (1 - fx) * (1 - fy) * fz, w101 = fx * (1 - fy) * fz;
      const w011 = (1 - fx) * fy * fz, w111 = fx * fy * fz;
      for (let s = 0; s < sourceCount; s++) {
        const src = sources[s];
        targets[s][q] = w000 * src[b] + w100 * src[b + 1] + w010 * src[b + nx] + w110 * src[b + nx + 1]
          + w001 * src[b + nxy] + w101 * src[b + nxy + 1] + w011 * src[b + nxy + nx] + w111 * src[b + nxy + nx + 1];
      }
      continue;
    }
    for (let s = 0; s < sourceCount; s++) {
      const src = sources[s];
      let value = 0;
      for (let dz = 0; dz < 2; dz++) {
        const zz = z0 + dz;
        if (zz < 0 || zz >= nz) continue;
        const wz = dz === 0 ? 1 - fz : fz;
        for (let dy = 0; dy < 2; dy++) {
          const yy = y0 + dy;
          if (yy < 0 || yy >= ny) continue;
          const wyz = wz * (dy === 0 ? 1 - fy : fy);
          const base = zz * nxy + yy * nx;
          if (x0 >= 0 && x0 < nx) value += wyz * (1 - fx) * src[base + x0];
          if (x0 + 1 >= 0 && x0 + 1 < nx) value += wyz * fx * src[base + x0 + 1];
        }
      }
      targets[s][q] = value;
    }
  }
}

/** Grid indices of a mask dilated by `steps` voxels (6-connected), in ascending order. */
export function dilatedIndices(mask: Uint8Array, shape: Shape3, steps: number): Int32Array {
  const [nx, ny, nz] = shape;
  let current = Uint8Array.from(mask);
  for (let step = 0; step < steps; step++) {
    const next = Uint8Array.from(current);
    for (let q = 0; q < current.length; q++) {
      if (current[q] === 0) continue;
      const i = q % nx, j = Math.floor(q / nx) % ny, k = Math.floor(q / (nx * ny));
      if (i > 0) next[q - 1] = 1;
      if (i < nx - 1) next[q + 1] = 1;
      if (j > 0) next[q - nx] = 1;
      if (j < ny - 1) next[q + nx] = 1;
      if (k > 0) next[q - nx * ny] = 1;
      if (k < nz - 1) next[q + nx * ny] = 1;
    }
    current = next;
  }
  const list: number[] = [];
  for (let q = 0; q < current.length; q++) if (current[q] === 1) list.push(q);
  return Int32Array.from(list);
}
