/**
 * ROI masks. The voxel order inside the mask (NIfTI order, x fastest) is the model's input
 * order, so it is fixed by the mask file alone.
 */
import { MindeyeError } from '../errors.ts';
import type { Shape3 } from '../events.ts';
import { readNifti } from '../io/nifti.ts';

export type MaskRule = 'value == 1' | 'value > 0';

export interface Mask {
  file: string;
  shape: Shape3;
  affine: Float64Array;
  /** Flat voxel indices (NIfTI order) of the voxels inside the mask, increasing. */
  indices: Int32Array;
  /** 1 inside the mask, 0 outside, over the whole grid. */
  inside: Uint8Array;
  rule: MaskRule;
}

/** Largest element-wise affine difference (mm) still treated as the same grid. */
const AFFINE_TOLERANCE_MM = 1e-3;

export function loadMask(file: string, rule: MaskRule = 'value > 0'): Mask {
  const img = readNifti(file);
  const { shape } = img.header;
  const n = shape[0] * shape[1] * shape[2];
  const inside = new Uint8Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const v = img.data[i];
    const isIn = rule === 'value == 1' ? v === 1 : v > 0;
    if (isIn) {
      inside[i] = 1;
      count++;
    }
  }
  if (count === 0) {
    throw new MindeyeError('MASK_EMPTY', 'The mask selects no voxels.', {
      file, field: 'voxel values', value: `0 voxels with ${rule}`,
      expected: rule === 'value == 1' ? 'NSD nsdgeneral values (-1, 0, 1) with some 1s' : 'some voxels > 0',
      fix: 'check the mask file and the mask rule',
    });
  }
  const indices = new Int32Array(count);
  for (let i = 0, k = 0; i < n; i++) if (inside[i]) indices[k++] = i;
  return { file, shape, affine: img.header.affine, indices, inside, rule };
}

export function formatAffine(a: Float64Array): string {
  const rows = [0, 1, 2].map((r) => `[${[0, 1, 2, 3].map((c) => a[r * 4 + c].toFixed(3)).join(' ')}]`);
  return rows.join(' ');
}

/** Throws MASK_GRID_MISMATCH unless the image grid (shape and affine) equals the mask's. */
export function checkSameGrid(mask: Mask, shape: Shape3, affine: Float64Array, imageLabel: string): void {
  const sameShape = shape[0] === mask.shape[0] && shape[1] === mask.shape[1] && shape[2] === mask.shape[2];
  if (!sameShape) {
    throw new MindeyeError('MASK_GRID_MISMATCH', 'The mask and the images are on different grids (shape).', {
      file: mask.file, field: 'dim[1..3]', value: mask.shape.join('x'),
      expected: `${shape.join('x')}, the shape of ${imageLabel}`,
      fix: 'use the mask made for this grid (e.g. func1pt8mm for NSD 1.8 mm data) or resample it onto the images',
    });
  }
  let maxDiff = 0;
  for (let i = 0; i < 12; i++) maxDiff = Math.max(maxDiff, Math.abs(affine[i] - mask.affine[i]));
  if (maxDiff > AFFINE_TOLERANCE_MM) {
    throw new MindeyeError('MASK_GRID_MISMATCH', 'The mask and the images are on different grids (affine).', {
      file: mask.file, field: 'sform/qform affine', value: formatAffine(mask.affine),
      expected: `${formatAffine(affine)}, the affine of ${imageLabel} (max difference ${maxDiff.toFixed(4)} mm > ${AFFINE_TOLERANCE_MM} mm)`,
      fix: 'use the mask made for this grid, or resample it onto the images',
    });
  }
}

/** Copies the mask voxels of a volume into `out` (length V). */
export function applyMask(mask: Mask, data: Float32Array, out = new Float32Array(mask.indices.length)): Float32Array {
  const idx = mask.indices;
  for (let i = 0; i < idx.length; i++) out[i] = data[idx[i]];
  return out;
}
