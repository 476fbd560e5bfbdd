/**
 * Test fixtures for motion correction: the real EPI series committed under data/epi/ and a
 * rigid-transform resampler written independently of src/preprocess (Rodrigues rotations,
 * Catmull-Rom cubic interpolation), so a test does not check the code against itself.
 */
import { fileURLToPath } from 'node:url';
import { readNifti, type NiftiHeader } from '../../src/io/nifti.ts';
import type { MotionParams, Shape3 } from '../../src/events.ts';

export const EPI_SIEMENS = fileURLToPath(new URL('../../data/epi/siemens-ep2d-asc/2_ep2d_Asc.nii.gz', import.meta.url));
export const EPI_PYNEAL = fileURLToPath(new URL('../../data/epi/pyneal/testSeries.nii.gz', import.meta.url));

export interface EpiSeries {
  header: NiftiHeader;
  volumes: Float32Array[];
}

export function loadSeries(file: string): EpiSeries {
  const image = readNifti(file);
  const [nx, ny, nz] = image.header.shape;
  const n = nx * ny * nz;
  const volumes: Float32Array[] = [];
  for (let v = 0; v < image.header.volumes; v++) volumes.push(image.data.slice(v * n, (v + 1) * n));
  return { header: image.header, volumes };
}

type Mat3 = number[][];

/** Rotation by `angle` radians about a unit axis (Rodrigues' formula). */
function axisRotation(axis: [number, number, number], angle: number): Mat3 {
  const [x, y, z] = axis;
  const c = Math.cos(angle), s = Math.sin(angle), C = 1 - c;
  return [
    [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
    [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
    [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
  ];
}

function matMul(a: Mat3, b: Mat3): Mat3 {
  return a.map((row) => [0, 1, 2].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
}

/** Builds the rotation of the documented convention: about x first, then y, then z (R = Rz Ry Rx). */
export function rotationOf(m: MotionParams): Mat3 {
  const [rx, ry, rz] = m.rotationRad;
  return matMul(axisRotation([0, 0, 1], rz), matMul(axisRotation([0, 1, 0], ry), axisRotation([1, 0, 0], rx)));
}

export function gridCentre(shape: Shape3, affine: Float64Array): [number, number, number] {
  const p = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2];
  return [0, 1, 2].map((r) => affine[r * 4] * p[0] + affine[r * 4 + 1] * p[1] + affine[r * 4 + 2] * p[2] + affine[r * 4 + 3]) as [number, number, number];
}

function keys(t: number): number {
  const a = Math.abs(t);
  if (a < 1) return 1.5 * a * a * a - 2.5 * a * a + 1;
  if (a < 2) return -0.5 * a * a * a + 2.5 * a * a - 4 * a + 2;
  return 0;
}

function cubicAt(data: Float32Array, shape: Shape3, x: number, y: number, z: number): number {
  const [nx, ny, nz] = shape;
  const x0 = Math.floor(x), y0 = Math.floor(y), z0 = Math.floor(z);
  let sum = 0;
  for (let dz = -1; dz <= 2; dz++) {
    const zz = Math.min(nz - 1, Math.max(0, z0 + dz));
    const wz = keys(z - (z0 + dz));
    for (let dy = -1; dy <= 2; dy++) {
      const yy = Math.min(ny - 1, Math.max(0, y0 + dy));
      const wy = keys(y - (y0 + dy)) * wz;
      for (let dx = -1; dx <= 2; dx++) {
        const xx = Math.min(nx - 1, Math.max(0, x0 + dx));
        sum += data[xx + nx * (yy + ny * zz)] * keys(x - (x0 + dx)) * wy;
      }
    }
  }
  return sum;
}

/**
 * Moves the head in `volume` by `motion` (the documented convention, about the grid centre).
 * The output at world y takes the input at R^T (y - c - t) + c by Catmull-Rom cubic
 * interpolation, and 0 outside the input grid.
 */
export function applyRigid(volume: Float32Array, shape: Shape3, affine: Float64Array, motion: MotionParams): Float32Array {
  const r = rotationOf(motion);
  const c = gridCentre(shape, affine);
  const t = motion.translationMm;
  const a = [0, 1, 2].map((row) => [affine[row * 4], affine[row * 4 + 1], affine[row * 4 + 2]]);
  const det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  const inv = [
    [(a[1][1] * a[2][2] - a[1][2] * a[2][1]) / det, (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / det, (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / det],
    [(a[1][2] * a[2][0] - a[1][0] * a[2][2]) / det, (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / det, (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / det],
    [(a[1][0] * a[2][1] - a[1][1] * a[2][0]) / det, (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / det, (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / det],
  ];
  const offset = [affine[3], affine[7], affine[11]];
  const [nx, ny, nz] = shape;
  const out = new Float32Array(volume.length);
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        const y = [0, 1, 2].map((row) => a[row][0] * i + a[row][1] * j + a[row][2] * k + offset[row]);
        const d = [y[0] - c[0] - t[0], y[1] - c[1] - t[1], y[2] - c[2] - t[2]];
        // R^T d + c, then back to input voxel coordinates.
        const x = [0, 1, 2].map((row) => r[0][row] * d[0] + r[1][row] * d[1] + r[2][row] * d[2] + c[row] - offset[row]);
        const u = inv[0][0] * x[0] + inv[0][1] * x[1] + inv[0][2] * x[2];
        const v = inv[1][0] * x[0] + inv[1][1] * x[1] + inv[1][2] * x[2];
        const w = inv[2][0] * x[0] + inv[2][1] * x[1] + inv[2][2] * x[2];
        const inside = u >= -0.5 && v >= -0.5 && w >= -0.5 && u <= nx - 0.5 && v <= ny - 0.5 && w <= nz - 0.5;
        out[i + nx * (j + ny * k)] = inside ? cubicAt(volume, shape, u, v, w) : 0;
      }
    }
  }
  return out;
}

export function motion(tx: number, ty: number, tz: number, rxDeg: number, ryDeg: number, rzDeg: number): MotionParams {
  const rad = Math.PI / 180;
  return { translationMm: [tx, ty, tz], rotationRad: [rxDeg * rad, ryDeg * rad, rzDeg * rad] };
}

/** Largest absolute translation error (mm) and rotation error (degrees) between two parameter sets. */
export function motionError(a: MotionParams, b: MotionParams): { translationMm: number; rotationDeg: number } {
  let translationMm = 0, rotationDeg = 0;
  for (let i = 0; i < 3; i++) {
    translationMm = Math.max(translationMm, Math.abs(a.translationMm[i] - b.translationMm[i]));
    rotationDeg = Math.max(rotationDeg, (Math.abs(a.rotationRad[i] - b.rotationRad[i]) * 180) / Math.PI);
  }
  return { translationMm, rotationDeg };
}
