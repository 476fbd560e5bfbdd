/**
 * Volume sampling kernels for motion correction: trilinear interpolation under a voxel-to-voxel
 * affine, binomial smoothing and Gaussian pyramid reduction.
 *
 * All volumes are Float32Array in NIfTI order (x fastest, then y, then z). A voxel-to-voxel
 * matrix is the top three rows of a row-major 4x4 matrix (12 numbers) mapping (i, j, k, 1) of
 * the output grid to fractional (i, j, k) of the input grid.
 */
import type { Shape3 } from '../events.ts';

/**
 * Samples `data` by trilinear interpolation at fractional voxel (u, v, w). Coordinates outside
 * [0, n-1] on any axis are clamped to the nearest edge voxel, so callers that must detect
 * out-of-grid positions test the coordinates first.
 */
export function trilinearClamped(data: Float32Array, shape: Shape3, u: number, v: number, w: number): number {
  const nx = shape[0], ny = shape[1], nz = shape[2];
  if (u < 0) u = 0; else if (u > nx - 1) u = nx - 1;
  if (v < 0) v = 0; else if (v > ny - 1) v = ny - 1;
  if (w < 0) w = 0; else if (w > nz - 1) w = nz - 1;
  let i = Math.floor(u), j = Math.floor(v), k = Math.floor(w);
  // Size-1 axes have no neighbour: both corners are the same voxel.
  const sx = nx > 1 ? 1 : 0, sy = ny > 1 ? nx : 0, sz = nz > 1 ? nx * ny : 0;
  if (i >= nx - 1) i = Math.max(nx - 2, 0);
  if (j >= ny - 1) j = Math.max(ny - 2, 0);
  if (k >= nz - 1) k = Math.max(nz - 2, 0);
  const fx = u - i, fy = v - j, fz = w - k;
  const o = i + nx * (j + ny * k);
  const c00 = data[o] + fx * (data[o + sx] - data[o]);
  const c10 = data[o + sy] + fx * (data[o + sy + sx] - data[o + sy]);
  const c01 = data[o + sz] + fx * (data[o + sz + sx] - data[o + sz]);
  const c11 = data[o + sz + sy] + fx * (data[o + sz + sy + sx] - data[o + sz + sy]);
  const c0 = c00 + fy * (c10 - c00);
  const c1 = c01 + fy * (c11 - c01);
  return c0 + fz * (c1 - c0);
}

/**
 * Resamples a whole volume onto an output grid of `outShape`: output voxel (i, j, k) takes the
 * trilinear value of `data` at voxToVox * (i, j, k, 1). Positions outside the input grid get
 * `fill` (0 by default).
 */
export function resampleTrilinear(
  data: Float32Array,
  shape: Shape3,
  voxToVox: ArrayLike<number>,
  outShape: Shape3,
  out?: Float32Array,
  fill = 0,
): Float32Array {
  const [ox, oy, oz] = outShape;
  const result = out ?? new Float32Array(ox * oy * oz);
  const m = voxToVox;
  const maxU = shape[0] - 1, maxV = shape[1] - 1, maxW = shape[2] - 1;
  const eps = 1e-6;
  let idx = 0;
  for (let k = 0; k < oz; k++) {
    for (let j = 0; j < oy; j++) {
      let u = m[1] * j + m[2] * k + m[3];
      let v = m[5] * j + m[6] * k + m[7];
      let w = m[9] * j + m[10] * k + m[11];
      for (let i = 0; i < ox; i++, idx++, u += m[0], v += m[4], w += m[8]) {
        if (u < -eps || v < -eps || w < -eps || u > maxU + eps || v > maxV + eps || w > maxW + eps) {
          result[idx] = fill;
        } else {
          result[idx] = trilinearClamped(data, shape, u, v, w);
        }
      }
    }
  }
  return result;
}

/** Shape of the next pyramid level: each axis halved (rounded up). */
export function reducedShape(shape: Shape3): Shape3 {
  return [Math.ceil(shape[0] / 2), Math.ceil(shape[1] / 2), Math.ceil(shape[2] / 2)];
}

/**
 * Reduces a volume by one Gaussian pyramid step. It smooths with the binomial kernel
 * [1 4 6 4 1]/16 (close to a Gaussian of sigma 1 voxel) along each axis and keeps every second
 * voxel, so that coarse voxel i sits at fine voxel 2i. Edges are replicated. The three separable passes each decimate as
 * they go, so the work is about 1.75 times one pass over the input.
 */
export function pyramidReduce(data: Float32Array, shape: Shape3, scratch?: { a?: Float32Array; b?: Float32Array }): {
  data: Float32Array;
  shape: Shape3;
} {
  const [nx, ny, nz] = shape;
  const [mx, my, mz] = reducedShape(shape);
  // Pass 1: x, shape (mx, ny, nz).
  const a = scratch?.a && scratch.a.length >= mx * ny * nz ? scratch.a : new Float32Array(mx * ny * nz);
  for (let row = 0, src = 0, dst = 0; row < ny * nz; row++, src += nx, dst += mx) {
    for (let i = 0; i < mx; i++) {
      const c = 2 * i;
      const xm2 = c - 2 < 0 ? 0 : c - 2;
      const xm1 = c - 1 < 0 ? 0 : c - 1;
      const xp1 = c + 1 > nx - 1 ? nx - 1 : c + 1;
      const xp2 = c + 2 > nx - 1 ? nx - 1 : c + 2;
      a[dst + i] =
        (data[src + xm2] + data[src + xp2] + 4 * (data[src + xm1] + data[src + xp1]) + 6 * data[src + c]) * 0.0625;
    }
  }
  // Pass 2: y, shape (mx, my, nz).
  const b = scratch?.b && scratch.b.length >= mx * my * nz ? scratch.b : new Float32Array(mx * my * nz);
  for (let k = 0; k < nz; k++) {
    const srcSlice = k * mx * ny;
    const dstSlice = k * mx * my;
    for (let j = 0; j < my; j++) {
      const c = 2 * j;
      const r0 = srcSlice + (c - 2 < 0 ? 0 : c - 2) * mx;
      const r1 = srcSlice + (c - 1 < 0 ? 0 : c - 1) * mx;
      const r2 = srcSlice + c * mx;
      const r3 = srcSlice + (c + 1 > ny - 1 ? ny - 1 : c + 1) * mx;
      const r4 = srcSlice + (c + 2 > ny - 1 ? ny - 1 : c + 2) * mx;
      const d = dstSlice + j * mx;
      for (let i = 0; i < mx; i++) {
        b[d + i] = (a[r0 + i] + a[r4 + i] + 4 * (a[r1 + i] + a[r3 + i]) + 6 * a[r2 + i]) * 0.0625;
      }
    }
  }
  // Pass 3: z, shape (mx, my, mz).
  const plane = mx * my;
  const out = new Float32Array(plane * mz);
  for (let k = 0; k < mz; k++) {
    const c = 2 * k;
    const p0 = (c - 2 < 0 ? 0 : c - 2) * plane;
    const p1 = (c - 1 < 0 ? 0 : c - 1) * plane;
    const p2 = c * plane;
    const p3 = (c + 1 > nz - 1 ? nz - 1 : c + 1) * plane;
    const p4 = (c + 2 > nz - 1 ? nz - 1 : c + 2) * plane;
    const d = k * plane;
    for (let i = 0; i < plane; i++) {
      out[d + i] = (b[p0 + i] + b[p4 + i] + 4 * (b[p1 + i] + b[p3 + i]) + 6 * b[p2 + i]) * 0.0625;
    }
  }
  return { data: out, shape: [mx, my, mz] };
}

/** Reduces a 0/1 mask to the next pyramid level: a coarse voxel is set when any fine voxel of its 3x3x3 neighbourhood is. */
export function reduceMask(mask: Uint8Array, shape: Shape3): Uint8Array {
  const [nx, ny, nz] = shape;
  const [mx, my, mz] = reducedShape(shape);
  const out = new Uint8Array(mx * my * mz);
  for (let k = 0; k < mz; k++) {
    for (let j = 0; j < my; j++) {
      for (let i = 0; i < mx; i++) {
        let set = 0;
        for (let dk = -1; dk <= 1 && !set; dk++) {
          const z = 2 * k + dk;
          if (z < 0 || z >= nz) continue;
          for (let dj = -1; dj <= 1 && !set; dj++) {
            const y = 2 * j + dj;
            if (y < 0 || y >= ny) continue;
            for (let di = -1; di <= 1; di++) {
              const x = 2 * i + di;
              if (x >= 0 && x < nx && mask[x + nx * (y + ny * z)]) { set = 1; break; }
            }
          }
        }
        out[i + mx * (j + my * k)] = set;
      }
    }
  }
  return out;
}

/** Affine of a reduced grid: coarse voxel i is fine voxel 2i. */
export function reducedAffine(affine: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(affine);
  for (let row = 0; row < 3; row++) {
    out[row * 4] *= 2;
    out[row * 4 + 1] *= 2;
    out[row * 4 + 2] *= 2;
  }
  return out;
}

/** Binomial weights [1 8 28 56 70 56 28 8 1]/256: four passes of [1 2 1]/4, a Gaussian of sigma sqrt(2) voxels. */
const BINOMIAL9 = Float32Array.from([1, 8, 28, 56, 70, 56, 28, 8, 1], (w) => w / 256);

/**
 * Smooths a volume with the 9-tap binomial kernel (close to a Gaussian of sigma 1.4 voxels)
 * along each axis, edges replicated. Used at full resolution before registration to damp the
 * interpolation artefacts of trilinear sampling, which otherwise bias least squares towards
 * whole-voxel shifts. `scratch` (one volume) avoids allocating per call.
 */
export function smoothBinomial9(data: Float32Array, shape: Shape3, out?: Float32Array, scratch?: Float32Array): Float32Array {
  const [nx, ny, nz] = shape;
  const n = nx * ny * nz;
  const plane = nx * ny;
  const w = BINOMIAL9;
  const w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];
  // The passes alternate between `result` and `a`, so neither may be `data` itself.
  const result = out && out !== data && out.length >= n ? out : new Float32Array(n);
  const a = scratch && scratch !== data && scratch !== result && scratch.length >= n ? scratch : new Float32Array(n);

  // x pass: data -> result. Interior samples need no clamping, so the edges get their own loops.
  const interiorEnd = Math.max(4, nx - 4);
  for (let row = 0, o = 0; row < ny * nz; row++, o += nx) {
    for (let i = 0; i < Math.min(4, nx); i++) result[o + i] = edgeSample(data, o, i, nx, w);
    for (let c = o + 4; c < o + interiorEnd; c++) {
      result[c] = w0 * (data[c - 4] + data[c + 4]) + w1 * (data[c - 3] + data[c + 3]) +
        w2 * (data[c - 2] + data[c + 2]) + w3 * (data[c - 1] + data[c + 1]) + w4 * data[c];
    }
    for (let i = interiorEnd; i < nx; i++) result[o + i] = edgeSample(data, o, i, nx, w);
  }

  // y pass: result -> a, one row of x at a time.
  for (let k = 0; k < nz; k++) {
    const s = k * plane;
    for (let j = 0; j < ny; j++) {
      const d = s + j * nx;
      const r0 = s + clampIndex(j - 4, ny) * nx, r1 = s + clampIndex(j - 3, ny) * nx;
      const r2 = s + clampIndex(j - 2, ny) * nx, r3 = s + clampIndex(j - 1, ny) * nx;
      const r5 = s + clampIndex(j + 1, ny) * nx, r6 = s + clampIndex(j + 2, ny) * nx;
      const r7 = s + clampIndex(j + 3, ny) * nx, r8 = s + clampIndex(j + 4, ny) * nx;
      for (let i = 0; i < nx; i++) {
        a[d + i] = w0 * (result[r0 + i] + result[r8 + i]) + w1 * (result[r1 + i] + result[r7 + i]) +
          w2 * (result[r2 + i] + result[r6 + i]) + w3 * (result[r3 + i] + result[r5 + i]) + w4 * result[d + i];
      }
    }
  }

  // z pass: a -> result, one plane at a time.
  for (let k = 0; k < nz; k++) {
    const d = k * plane;
    const p0 = clampIndex(k - 4, nz) * plane, p1 = clampIndex(k - 3, nz) * plane;
    const p2 = clampIndex(k - 2, nz) * plane, p3 = clampIndex(k - 1, nz) * plane;
    const p5 = clampIndex(k + 1, nz) * plane, p6 = clampIndex(k + 2, nz) * plane;
    const p7 = clampIndex(k + 3, nz) * plane, p8 = clampIndex(k + 4, nz) * plane;
    for (let i = 0; i < plane; i++) {
      result[d + i] = w0 * (a[p0 + i] + a[p8 + i]) + w1 * (a[p1 + i] + a[p7 + i]) +
        w2 * (a[p2 + i] + a[p6 + i]) + w3 * (a[p3 + i] + a[p5 + i]) + w4 * a[d + i];
    }
  }
  return result;
}

/** Binomial-9 value at x index i of the row starting at offset o, edges replicated. */
function edgeSample(data: Float32Array, o: number, i: number, nx: number, w: Float32Array): number {
  let sum = 0;
  for (let t = -4; t <= 4; t++) sum += w[t + 4] * data[o + clampIndex(i + t, nx)];
  return sum;
}

/** Returns index i clamped to [0, n - 1] (edge replication). */
function clampIndex(i: number, n: number): number {
  if (i < 0) return 0;
  if (i > n - 1) return n - 1;
  return i;
}

/** Keeps every second voxel along each axis (coarse voxel i = fine voxel 2i); the input must already be smoothed. */
export function decimate2(data: Float32Array, shape: Shape3, out?: Float32Array): { data: Float32Array; shape: Shape3 } {
  const [nx, ny] = shape;
  const reduced = reducedShape(shape);
  const [mx, my, mz] = reduced;
  const result = out && out.length >= mx * my * mz ? out : new Float32Array(mx * my * mz);
  let o = 0;
  for (let k = 0; k < mz; k++) {
    for (let j = 0; j < my; j++) {
      const row = 2 * j * nx + 2 * k * nx * ny;
      for (let i = 0; i < mx; i++) result[o++] = data[row + 2 * i];
    }
  }
  return { data: result, shape: reduced };
}
