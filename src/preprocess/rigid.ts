/**
 * Rigid-body geometry shared by motion correction and its tests: the parameter convention,
 * conversions between the six motion parameters and 4x4 world matrices, and affine helpers.
 *
 * Convention (the one `MotionParams` uses everywhere in mindeye-rt):
 *
 *   xyzMovingMm = R (xyzRefMm - c) + c + t,    R = Rz(rz) * Ry(ry) * Rx(rx)
 *
 * - xyzRefMm is a point in the reference volume's world space (RAS+ mm) and xyzMovingMm is where
 *   that piece of head is found in the incoming volume's world space. The parameters describe
 *   the head's displacement, not the correction applied to undo it.
 * - t = translationMm (x, y, z along the RAS+ world axes, in mm).
 * - rx, ry, rz = rotationRad, right-handed rotations in radians about axes parallel to the world
 *   x, y and z axes through c. The rotation about x is applied first, then y, then z
 *   (R = Rz Ry Rx acting on column vectors).
 * - c is the rotation centre: the world position of the reference grid's centre voxel,
 *   ((nx-1)/2, (ny-1)/2, (nz-1)/2), as FSL MCFLIRT does. Not the world origin: for scanner data
 *   the origin can lie far from the head, which would couple rotations and translations.
 *
 * Matrices are Float64Array(16), row-major, acting on column vectors (x, y, z, 1).
 */
import type { MotionParams } from '../events.ts';

export type Vec3 = [number, number, number];

/** Returns identity motion parameters. */
export function zeroMotion(): MotionParams {
  return { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] };
}

export function copyMotion(m: MotionParams): MotionParams {
  return { translationMm: [...m.translationMm], rotationRad: [...m.rotationRad] };
}

/** Row-major 3x3 rotation R = Rz(rz) Ry(ry) Rx(rx). */
export function eulerToRotation(rx: number, ry: number, rz: number): Float64Array {
  const cx = Math.cos(rx), sx = Math.sin(rx);
  const cy = Math.cos(ry), sy = Math.sin(ry);
  const cz = Math.cos(rz), sz = Math.sin(rz);
  return Float64Array.of(
    cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
    sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
    -sy, cy * sx, cy * cx,
  );
}

/**
 * Extracts (rx, ry, rz) from a rotation matrix R = Rz Ry Rx. Unique for |ry| < 90 degrees, far
 * beyond any head motion; at the gimbal-lock pole rx is set to 0.
 */
export function rotationToEuler(r: ArrayLike<number>): Vec3 {
  const sy = -clamp(r[6], -1, 1);
  const ry = Math.asin(sy);
  if (Math.abs(sy) > 1 - 1e-12) {
    return [0, ry, Math.atan2(-r[1], r[4])];
  }
  return [Math.atan2(r[7], r[8]), ry, Math.atan2(r[3], r[0])];
}

/** Builds the 4x4 world matrix (reference mm to moving mm) of a motion about centre c. */
export function motionToMatrix(m: MotionParams, centreMm: Vec3): Float64Array {
  const r = eulerToRotation(m.rotationRad[0], m.rotationRad[1], m.rotationRad[2]);
  const out = new Float64Array(16);
  for (let row = 0; row < 3; row++) {
    const rc = r[row * 3] * centreMm[0] + r[row * 3 + 1] * centreMm[1] + r[row * 3 + 2] * centreMm[2];
    out[row * 4] = r[row * 3];
    out[row * 4 + 1] = r[row * 3 + 1];
    out[row * 4 + 2] = r[row * 3 + 2];
    out[row * 4 + 3] = centreMm[row] + m.translationMm[row] - rc;
  }
  out[15] = 1;
  return out;
}

/** Inverse of motionToMatrix: the rigid part of a 4x4 world matrix as parameters about c. */
export function matrixToMotion(mat: Float64Array, centreMm: Vec3): MotionParams {
  const r = [mat[0], mat[1], mat[2], mat[4], mat[5], mat[6], mat[8], mat[9], mat[10]];
  const t: Vec3 = [0, 0, 0];
  for (let row = 0; row < 3; row++) {
    const rc = r[row * 3] * centreMm[0] + r[row * 3 + 1] * centreMm[1] + r[row * 3 + 2] * centreMm[2];
    t[row] = mat[row * 4 + 3] - centreMm[row] + rc;
  }
  return { translationMm: t, rotationRad: rotationToEuler(r) };
}

export function multiply4(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(16);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      out[i * 4 + j] = a[i * 4] * b[j] + a[i * 4 + 1] * b[4 + j] + a[i * 4 + 2] * b[8 + j] + a[i * 4 + 3] * b[12 + j];
    }
  }
  return out;
}

/** Inverse of a 4x4 affine whose last row is (0, 0, 0, 1); returns null when it is singular. */
export function invertAffine(a: ArrayLike<number>): Float64Array | null {
  const det =
    a[0] * (a[5] * a[10] - a[6] * a[9]) - a[1] * (a[4] * a[10] - a[6] * a[8]) + a[2] * (a[4] * a[9] - a[5] * a[8]);
  if (!Number.isFinite(det) || Math.abs(det) < 1e-12) return null;
  const inv = new Float64Array(16);
  inv[0] = (a[5] * a[10] - a[6] * a[9]) / det;
  inv[1] = (a[2] * a[9] - a[1] * a[10]) / det;
  inv[2] = (a[1] * a[6] - a[2] * a[5]) / det;
  inv[4] = (a[6] * a[8] - a[4] * a[10]) / det;
  inv[5] = (a[0] * a[10] - a[2] * a[8]) / det;
  inv[6] = (a[2] * a[4] - a[0] * a[6]) / det;
  inv[8] = (a[4] * a[9] - a[5] * a[8]) / det;
  inv[9] = (a[1] * a[8] - a[0] * a[9]) / det;
  inv[10] = (a[0] * a[5] - a[1] * a[4]) / det;
  for (let row = 0; row < 3; row++) {
    inv[row * 4 + 3] = -(inv[row * 4] * a[3] + inv[row * 4 + 1] * a[7] + inv[row * 4 + 2] * a[11]);
  }
  inv[15] = 1;
  return inv;
}

/** Inverse of a rigid 4x4 matrix [R | b]: [R^T | -R^T b]. */
export function invertRigid(m: Float64Array): Float64Array {
  const out = new Float64Array(16);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) out[i * 4 + j] = m[j * 4 + i];
    out[i * 4 + 3] = -(m[i] * m[3] + m[4 + i] * m[7] + m[8 + i] * m[11]);
  }
  out[15] = 1;
  return out;
}

/** World position (mm) of the centre of a grid: voxel ((nx-1)/2, (ny-1)/2, (nz-1)/2). */
export function gridCentreMm(shape: Vec3, affine: ArrayLike<number>): Vec3 {
  const i = (shape[0] - 1) / 2, j = (shape[1] - 1) / 2, k = (shape[2] - 1) / 2;
  return [
    affine[0] * i + affine[1] * j + affine[2] * k + affine[3],
    affine[4] * i + affine[5] * j + affine[6] * k + affine[7],
    affine[8] * i + affine[9] * j + affine[10] * k + affine[11],
  ];
}

/**
 * Computes framewise displacement after Power et al. (2012, NeuroImage 59:2142). FD is the sum
 * of the absolute changes of the three translations (mm) and of the three rotations, which are
 * converted to arc length on a sphere of radiusMm. The default 50 mm is about the distance from
 * the centre of the head to the cortex.
 */
export function framewiseDisplacement(prev: MotionParams, cur: MotionParams, radiusMm = 50): number {
  let fd = 0;
  for (let a = 0; a < 3; a++) {
    fd += Math.abs(cur.translationMm[a] - prev.translationMm[a]);
    fd += radiusMm * Math.abs(cur.rotationRad[a] - prev.rotationRad[a]);
  }
  return fd;
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}
