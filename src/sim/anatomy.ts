/**
 * Anatomy and baseline of the simulated subject, taken from real EPI volumes.
 *
 * The EPI is a Siemens Prisma fit gradient-echo BOLD series (64 x 64 x 36, 3.2 x 3.2 x 3.6 mm;
 * data/anatomy/README.md). The mean of its volumes is the baseline signal. The brain mask is
 * an Otsu threshold of that mean, reduced to its largest 6-connected component, with enclosed
 * holes filled. The `epi` grid is the native one; the `nsd` grid is NSD subj01's prepared
 * 1.8 mm grid (81 x 104 x 83), axis-aligned in RAS+ and centred on the brain, onto which the EPI is
 * resampled trilinearly. Non-brain voxels are 0, as in NSD's prepared time series.
 *
 * The visual-cortex ROI ("nsdgeneral" = 1) is the most posterior part of a cortical ribbon (the
 * brain voxels within about 5 mm of the brain surface) above the lowest quarter of the brain,
 * sized to a fixed volume so that its voxel count scales with the grid.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MindeyeError } from '../errors.ts';
import type { Shape3 } from '../events.ts';
import { readNifti } from '../io/nifti.ts';
import { invertAffine, multiply4 } from './motion.ts';

export type GridName = 'nsd' | 'epi';

export const ANATOMY_FILE = fileURLToPath(new URL('../../data/anatomy/ep2d_Asc_2_vol0-2.nii.gz', import.meta.url));

/** NSD subj01 func1pt8mm grid. */
export const NSD_SHAPE: Shape3 = [81, 104, 83];
export const NSD_VOXEL_MM = 1.8;

/** Brain median of the baseline after scaling (int16 units); keeps rounding error far below the signal. */
export const BASELINE_BRAIN_MEDIAN = 1000;

/** Lowest baseline inside the brain, as a fraction of the brain median. */
export const BASELINE_FLOOR_FRACTION = 0.4;

/** Thickness of the cortical ribbon, in mm from the brain surface. */
export const CORTEX_DEPTH_MM = 5;

/**
 * Volume of the simulated visual cortex in mm^3: about 11,000 voxels on the nsd grid and 1,700
 * on the epi grid. NSD subj01's nsdgeneral is larger (15724 voxels of 1.8 mm, about 92 cm^3),
 * but a region that size would reach beyond the occipital part of this EPI's coverage.
 */
export const ROI_VOLUME_MM3 = 64_000;

export interface Anatomy {
  grid: GridName;
  shape: Shape3;
  voxelSizeMm: [number, number, number];
  affine: Float64Array;
  /** Baseline signal (int16 units), 0 outside the brain. */
  baseline: Float32Array;
  /** 1 inside the brain, else 0. */
  brain: Uint8Array;
  /** NSD-style ROI: -1 outside cortex, 0 unlabelled cortex, 1 simulated visual cortex. */
  roi: Int8Array;
  /** Grid indices of the ROI voxels (value 1) in NIfTI order (x fastest). */
  roiIndices: Int32Array;
  /** World RAS+ coordinates (mm) of the ROI voxels, x y z interleaved. */
  roiRasMm: Float64Array;
  /** Source file of the EPI. */
  source: string;
}

export function loadAnatomy(grid: GridName, file = ANATOMY_FILE): Anatomy {
  if (!existsSync(file)) {
    // NOTE: errors.ts has no code for missing bundled data yet; CLI_USAGE is the closest.
    throw new MindeyeError('CLI_USAGE', 'The anatomy EPI is missing.', {
      file, field: 'data/anatomy', value: 'not found', fix: 'restore data/anatomy from the repository (git checkout -- data/anatomy)',
    });
  }
  const image = readNifti(file);
  const { shape, volumes, affine, voxelSizeMm } = image.header;
  const n = shape[0] * shape[1] * shape[2];
  if (volumes < 1 || n < 8) {
    throw new MindeyeError('NIFTI_HEADER_INVALID', 'The anatomy EPI has no usable volume.', {
      file, field: 'dim', value: [...shape, volumes], expected: 'a 3D or 4D EPI with at least one volume',
      fix: 'restore data/anatomy from the repository',
    });
  }
  const mean = new Float32Array(n);
  for (let v = 0; v < volumes; v++) for (let i = 0; i < n; i++) mean[i] += image.data[v * n + i] / volumes;
  const nativeBrain = brainMask(mean, shape);

  let outShape: Shape3 = shape;
  let outAffine = affine;
  let outVoxel: [number, number, number] = [...voxelSizeMm];
  let baseline = mean;
  let brain = nativeBrain;
  if (grid === 'nsd') {
    outShape = NSD_SHAPE;
    outVoxel = [NSD_VOXEL_MM, NSD_VOXEL_MM, NSD_VOXEL_MM];
    outAffine = nsdGridAffine(affine, shape, nativeBrain);
    const brainFloat = Float32Array.from(nativeBrain);
    const targets = [new Float32Array(outShape[0] * outShape[1] * outShape[2]), new Float32Array(outShape[0] * outShape[1] * outShape[2])];
    // Target voxel -> world -> source voxel.
    const map = multiply4(invertAffine(affine), outAffine);
    resampleAcrossGrids([mean, brainFloat], shape, targets, outShape, map);
    baseline = targets[0];
    brain = new Uint8Array(baseline.length);
    for (let i = 0; i < brain.length; i++) brain[i] = targets[1][i] >= 0.5 ? 1 : 0;
  }

  const scaled = scaleBaseline(baseline, brain);
  const roi = labelRoi(brain, outShape, outAffine, outVoxel);
  const roiList: number[] = [];
  for (let i = 0; i < roi.length; i++) if (roi[i] === 1) roiList.push(i);
  const roiIndices = Int32Array.from(roiList);
  const roiRasMm = new Float64Array(roiIndices.length * 3);
  roiIndices.forEach((index, r) => {
    const [x, y, z] = indexToRas(outAffine, outShape, index);
    roiRasMm[r * 3] = x;
    roiRasMm[r * 3 + 1] = y;
    roiRasMm[r * 3 + 2] = z;
  });
  return { grid, shape: outShape, voxelSizeMm: outVoxel, affine: outAffine, baseline: scaled, brain, roi, roiIndices, roiRasMm, source: file };
}

function indexToRas(affine: Float64Array, shape: Shape3, index: number): [number, number, number] {
  const i = index % shape[0];
  const j = Math.floor(index / shape[0]) % shape[1];
  const k = Math.floor(index / (shape[0] * shape[1]));
  return [
    affine[0] * i + affine[1] * j + affine[2] * k + affine[3],
    affine[4] * i + affine[5] * j + affine[6] * k + affine[7],
    affine[8] * i + affine[9] * j + affine[10] * k + affine[11],
  ];
}

/** Resamples trilinearly from one grid to another through a target-to-source voxel map. */
function resampleAcrossGrids(sources: Float32Array[], sourceShape: Shape3, targets: Float32Array[], targetShape: Shape3, map: Float64Array): void {
  const [sx, sy, sz] = sourceShape;
  const sxy = sx * sy;
  let q = 0;
  for (let k = 0; k < targetShape[2]; k++) {
    for (let j = 0; j < targetShape[1]; j++) {
      for (let i = 0; i < targetShape[0]; i++, q++) {
        const x = map[0] * i + map[1] * j + map[2] * k + map[3];
        const y = map[4] * i + map[5] * j + map[6] * k + map[7];
        const z = map[8] * i + map[9] * j + map[10] * k + map[11];
        const x0 = Math.floor(x), y0 = Math.floor(y), z0 = Math.floor(z);
        for (let s = 0; s < sources.length; s++) {
          let value = 0;
          for (let dz = 0; dz < 2; dz++) {
            const zz = z0 + dz;
            if (zz < 0 || zz >= sz) continue;
            const wz = dz === 0 ? 1 - (z - z0) : z - z0;
            for (let dy = 0; dy < 2; dy++) {
              const yy = y0 + dy;
              if (yy < 0 || yy >= sy) continue;
              const wy = dy === 0 ? 1 - (y - y0) : y - y0;
              for (let dx = 0; dx < 2; dx++) {
                const xx = x0 + dx;
                if (xx < 0 || xx >= sx) continue;
                const wx = dx === 0 ? 1 - (x - x0) : x - x0;
                value += wz * wy * wx * sources[s][zz * sxy + yy * sx + xx];
              }
            }
          }
          targets[s][q] = value;
        }
      }
    }
  }
}

/** Builds the axis-aligned RAS+ 1.8 mm affine whose grid centre is the brain's centroid. */
function nsdGridAffine(affine: Float64Array, shape: Shape3, brain: Uint8Array): Float64Array {
  let sx = 0, sy = 0, sz = 0, count = 0;
  for (let index = 0; index < brain.length; index++) {
    if (brain[index] === 0) continue;
    const [x, y, z] = indexToRas(affine, shape, index);
    sx += x; sy += y; sz += z; count++;
  }
  const centre = [sx / count, sy / count, sz / count];
  const out = new Float64Array(16);
  for (let axis = 0; axis < 3; axis++) {
    out[axis * 4 + axis] = NSD_VOXEL_MM;
    out[axis * 4 + 3] = Math.round((centre[axis] - ((NSD_SHAPE[axis] - 1) / 2) * NSD_VOXEL_MM) * 10) / 10;
  }
  out[15] = 1;
  return out;
}

/** Computes the Otsu threshold of the positive values (256 bins). */
export function otsuThreshold(values: Float32Array): number {
  let max = 0;
  for (const v of values) if (v > max) max = v;
  if (max <= 0) return 0;
  const bins = new Float64Array(256);
  for (const v of values) if (v > 0) bins[Math.min(255, Math.floor((v / max) * 256))]++;
  let total = 0, sumAll = 0;
  for (let b = 0; b < 256; b++) { total += bins[b]; sumAll += b * bins[b]; }
  let best = 0, bestVar = -1, weightLow = 0, sumLow = 0;
  for (let b = 0; b < 256; b++) {
    weightLow += bins[b];
    sumLow += b * bins[b];
    const weightHigh = total - weightLow;
    if (weightLow === 0 || weightHigh === 0) continue;
    const meanLow = sumLow / weightLow;
    const meanHigh = (sumAll - sumLow) / weightHigh;
    const between = weightLow * weightHigh * (meanLow - meanHigh) ** 2;
    if (between > bestVar) { bestVar = between; best = b; }
  }
  return ((best + 1) / 256) * max;
}

function neighbours(index: number, shape: Shape3, visit: (n: number) => void): void {
  const [nx, ny, nz] = shape;
  const i = index % nx, j = Math.floor(index / nx) % ny, k = Math.floor(index / (nx * ny));
  if (i > 0) visit(index - 1);
  if (i < nx - 1) visit(index + 1);
  if (j > 0) visit(index - nx);
  if (j < ny - 1) visit(index + nx);
  if (k > 0) visit(index - nx * ny);
  if (k < nz - 1) visit(index + nx * ny);
}

/** Computes the brain mask: Otsu threshold, largest 6-connected component, enclosed holes filled. */
export function brainMask(mean: Float32Array, shape: Shape3): Uint8Array {
  const threshold = otsuThreshold(mean);
  const above = new Uint8Array(mean.length);
  for (let i = 0; i < mean.length; i++) above[i] = mean[i] > threshold ? 1 : 0;

  // Largest 6-connected component (drops ghosts, eyes and scalp fragments).
  const label = new Int32Array(mean.length);
  let bestLabel = 0, bestSize = 0, next = 0;
  const stack: number[] = [];
  for (let seed = 0; seed < mean.length; seed++) {
    if (above[seed] === 0 || label[seed] !== 0) continue;
    next++;
    let size = 0;
    label[seed] = next;
    stack.push(seed);
    while (stack.length > 0) {
      const index = stack.pop() as number;
      size++;
      neighbours(index, shape, (n) => {
        if (above[n] === 1 && label[n] === 0) { label[n] = next; stack.push(n); }
      });
    }
    if (size > bestSize) { bestSize = size; bestLabel = next; }
  }
  const mask = new Uint8Array(mean.length);
  for (let i = 0; i < mean.length; i++) mask[i] = label[i] === bestLabel && bestLabel > 0 ? 1 : 0;

  // Fill holes: everything not reachable from the grid border through non-brain voxels is brain.
  // Slice by slice (axial), because ventricles touch the 3D border through the open top slices.
  const [nx, ny, nz] = shape;
  for (let k = 0; k < nz; k++) {
    const outside = new Uint8Array(nx * ny);
    const queue: number[] = [];
    const offset = k * nx * ny;
    for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) {
      if ((i === 0 || j === 0 || i === nx - 1 || j === ny - 1) && mask[offset + j * nx + i] === 0) {
        outside[j * nx + i] = 1;
        queue.push(j * nx + i);
      }
    }
    while (queue.length > 0) {
      const p = queue.pop() as number;
      const i = p % nx, j = Math.floor(p / nx);
      const candidates = [i > 0 ? p - 1 : -1, i < nx - 1 ? p + 1 : -1, j > 0 ? p - nx : -1, j < ny - 1 ? p + nx : -1];
      for (const c of candidates) {
        if (c >= 0 && outside[c] === 0 && mask[offset + c] === 0) { outside[c] = 1; queue.push(c); }
      }
    }
    for (let p = 0; p < nx * ny; p++) if (outside[p] === 0) mask[offset + p] = 1;
  }
  return mask;
}

function scaleBaseline(baseline: Float32Array, brain: Uint8Array): Float32Array {
  const inside: number[] = [];
  for (let i = 0; i < brain.length; i++) if (brain[i] === 1) inside.push(baseline[i]);
  inside.sort((a, b) => a - b);
  const median = inside[Math.floor(inside.length / 2)];
  const factor = median > 0 ? BASELINE_BRAIN_MEDIAN / median : 1;
  const out = new Float32Array(baseline.length);
  // Dark voxels inside the brain (partial volume at the surface, susceptibility dropout) are
  // raised to BASELINE_FLOOR_FRACTION of the median, so that int16 rounding stays small next to
  // their percent-signal-change responses.
  for (let i = 0; i < brain.length; i++) out[i] = brain[i] === 1 ? Math.max(baseline[i] * factor, BASELINE_FLOOR_FRACTION * BASELINE_BRAIN_MEDIAN) : 0;
  return out;
}

/** Computes each brain voxel's depth in voxels from the surface (1 = touches non-brain) by repeated erosion. */
function brainDepth(brain: Uint8Array, shape: Shape3, maxDepth: number): Uint8Array {
  const depth = new Uint8Array(brain.length);
  let current = Uint8Array.from(brain);
  for (let d = 1; d <= maxDepth; d++) {
    const eroded = new Uint8Array(brain.length);
    for (let i = 0; i < brain.length; i++) {
      if (current[i] === 0) continue;
      let interior = true;
      neighbours(i, shape, (n) => { if (current[n] === 0) interior = false; });
      const [nx, ny, nz] = shape;
      const x = i % nx, y = Math.floor(i / nx) % ny, z = Math.floor(i / (nx * ny));
      if (x === 0 || y === 0 || z === 0 || x === nx - 1 || y === ny - 1 || z === nz - 1) interior = false;
      if (interior) eroded[i] = 1;
      else depth[i] = d;
    }
    current = eroded;
  }
  for (let i = 0; i < brain.length; i++) if (current[i] === 1) depth[i] = maxDepth + 1;
  return depth;
}

/** Labels the NSD-style ROI: -1 non-cortex, 0 cortex, 1 simulated visual cortex. */
function labelRoi(brain: Uint8Array, shape: Shape3, affine: Float64Array, voxelSizeMm: [number, number, number]): Int8Array {
  const minVoxel = Math.min(...voxelSizeMm);
  const ribbonLayers = Math.max(1, Math.round(CORTEX_DEPTH_MM / minVoxel));
  const depth = brainDepth(brain, shape, ribbonLayers);
  const roi = new Int8Array(brain.length).fill(-1);
  let zMin = Infinity, zMax = -Infinity;
  const cortex: number[] = [];
  for (let i = 0; i < brain.length; i++) {
    if (brain[i] === 1 && depth[i] >= 1 && depth[i] <= ribbonLayers) {
      roi[i] = 0;
      cortex.push(i);
      const z = indexToRas(affine, shape, i)[2];
      zMin = Math.min(zMin, z);
      zMax = Math.max(zMax, z);
    }
  }
  // Candidates: cortex above the lowest quarter of the brain (left out because the cerebellum
  // lies there in a typical axial EPI), ranked from the most posterior (smallest y).
  const zFloor = zMin + 0.25 * (zMax - zMin);
  const candidates = cortex
    .map((index) => ({ index, ras: indexToRas(affine, shape, index) }))
    .filter((c) => c.ras[2] >= zFloor)
    .sort((a, b) => a.ras[1] - b.ras[1] || a.index - b.index);
  const voxelVolume = voxelSizeMm[0] * voxelSizeMm[1] * voxelSizeMm[2];
  const count = Math.min(candidates.length, Math.round(ROI_VOLUME_MM3 / voxelVolume));
  for (let c = 0; c < count; c++) roi[candidates[c].index] = 1;
  return roi;
}
