/**
 * The voxel model: what each simulated visual-cortex voxel responds to, and how reliably.
 *
 * Every ROI voxel v has
 * - a population receptive field (pRF; Dumoulin and Wandell 2008): an isotropic Gaussian over
 *   the visual field, centre (x, y) in degrees and size sigma in degrees. Positions follow a
 *   coarse retinotopic layout: the left hemisphere represents the right visual field and vice
 *   versa, voxels above the ROI's centre represent the lower field, and eccentricity grows from the occipital
 *   pole forwards (logarithmically, like cortical magnification). Size grows with eccentricity
 *   and with the voxel's "hierarchy level" h (0 at the pole, 1 at the ROI's front edge).
 * - tuning to the eleven feature maps of src/sim/features.ts: weights drawn from a Dirichlet
 *   distribution (concentration 0.5), so most voxels prefer one or two features.
 * - a compressive exponent n on the pRF-weighted drive, following the compressive spatial
 *   summation model (Kay et al. 2013): n falls from 0.7 at the pole to 0.35 at the front edge.
 * - a shared component: a random projection of a whole-image descriptor (the feature maps
 *   pooled on a 4 x 4 grid, 176 values), common to many voxels. It carries the image's identity
 *   across the ROI, so that exemplars that look alike locally still differ in the pattern. Its
 *   share of the stimulus-driven variance grows with h (0.2 to 0.7).
 * - a mean response to any image (percent signal change, PSC), an image-specific standard
 *   deviation, and a noise level given as a single-trial noise-ceiling SNR (ncsnr, the ratio of
 *   the signal standard deviation across images to the noise standard deviation of one trial's
 *   beta, as NSD defines it).
 *
 * A voxel's true response (beta, PSC at the peak of the trial's response) to image s is
 *   beta_v(s) = mean_v + sd_v * (sqrt(1 - f_v) * zprf_v(s) + sqrt(f_v) * zshared_v(s))
 * where zprf and zshared are the two drives standardized over a fixed reference set of crops.
 * The same image always gives the same true beta; trial-to-trial differences come only from the
 * time-series noise.
 */
import type { Anatomy } from './anatomy.ts';
import { FEATURE_COUNT, FEATURE_GRID } from './features.ts';
import { streamFor } from './prng.ts';

/** Visual angle of the stimulus (NSD: 8.4 x 8.4 degrees). */
export const STIMULUS_DEG = 8.4;
/** Largest pRF eccentricity in degrees (beyond the image's corners at 5.9 degrees). */
export const MAX_ECCENTRICITY_DEG = 7;
/** pRF size (sigma, degrees) = (SIZE_INTERCEPT + SIZE_SLOPE * eccentricity) * (1 + SIZE_HIERARCHY_GAIN * h). */
export const SIZE_INTERCEPT_DEG = 0.25;
export const SIZE_SLOPE = 0.15;
export const SIZE_HIERARCHY_GAIN = 2;
/** Median and log-normal spread of the mean response to an image, PSC. */
export const MEAN_RESPONSE_PCT = 1.5;
export const MEAN_RESPONSE_LOG_SD = 0.35;
/** Image-specific standard deviation as a fraction of the voxel's mean response. */
export const IMAGE_SD_FRACTION = 0.6;
/** Median single-trial ncsnr and its log-normal spread; early voxels are more reliable. */
export const NCSNR_MEDIAN = 0.5;
export const NCSNR_LOG_SD = 0.5;
export const DESCRIPTOR_BLOCKS = 4;
export const DESCRIPTOR_SIZE = DESCRIPTOR_BLOCKS * DESCRIPTOR_BLOCKS * FEATURE_COUNT;

/**
 * pRF size bins in feature-grid cells. Each voxel uses the nearest bin on a log scale.
 * NOTE: sizes above the largest bin (3.15 degrees, about 9 % of voxels, all near the ROI's front
 * edge) are clipped to it.
 */
const SIZE_BINS_CELLS = [0.8, 1.3, 2, 3.2, 5, 8, 12];
const CELL_DEG = STIMULUS_DEG / FEATURE_GRID;
/** Zero padding around the feature grid so that pRFs centred outside the image see its edge. */
const PAD = 12;
const PADDED = FEATURE_GRID + 2 * PAD;

export interface VoxelModel {
  count: number;
  prfXDeg: Float32Array;
  prfYDeg: Float32Array;
  prfSigmaDeg: Float32Array;
  hierarchy: Float32Array;
  sizeBin: Uint8Array;
  /** count x FEATURE_COUNT. */
  featureWeights: Float32Array;
  exponent: Float32Array;
  sharedFraction: Float32Array;
  /** count x DESCRIPTOR_SIZE. */
  sharedWeights: Float32Array;
  meanResponsePct: Float32Array;
  imageSdPct: Float32Array;
  ncsnr: Float32Array;
  /** Standardization over the reference set (set by calibrateVoxelModel). */
  prfMean: Float32Array;
  prfSd: Float32Array;
  sharedMean: Float32Array;
  sharedSd: Float32Array;
  descriptorMean: Float32Array;
  descriptorSd: Float32Array;
}

export function buildVoxelModel(seed: number, anatomy: Anatomy): VoxelModel {
  const count = anatomy.roiIndices.length;
  const ras = anatomy.roiRasMm;
  const rng = streamFor(seed, 'voxel-model', anatomy.grid);
  let xMid = 0, zMid = 0, yMin = Infinity, yMax = -Infinity;
  for (let v = 0; v < count; v++) {
    xMid += ras[v * 3] / count;
    zMid += ras[v * 3 + 2] / count;
    yMin = Math.min(yMin, ras[v * 3 + 1]);
    yMax = Math.max(yMax, ras[v * 3 + 1]);
  }
  let zHalf = 1e-6;
  for (let v = 0; v < count; v++) zHalf = Math.max(zHalf, Math.abs(ras[v * 3 + 2] - zMid));

  const model: VoxelModel = {
    count,
    prfXDeg: new Float32Array(count), prfYDeg: new Float32Array(count), prfSigmaDeg: new Float32Array(count),
    hierarchy: new Float32Array(count), sizeBin: new Uint8Array(count),
    featureWeights: new Float32Array(count * FEATURE_COUNT), exponent: new Float32Array(count),
    sharedFraction: new Float32Array(count), sharedWeights: new Float32Array(count * DESCRIPTOR_SIZE),
    meanResponsePct: new Float32Array(count), imageSdPct: new Float32Array(count), ncsnr: new Float32Array(count),
    prfMean: new Float32Array(count), prfSd: new Float32Array(count).fill(1),
    sharedMean: new Float32Array(count), sharedSd: new Float32Array(count).fill(1),
    descriptorMean: new Float32Array(DESCRIPTOR_SIZE), descriptorSd: new Float32Array(DESCRIPTOR_SIZE).fill(1),
  };
  const logRange = Math.log(MAX_ECCENTRICITY_DEG + 1);
  for (let v = 0; v < count; v++) {
    const x = ras[v * 3], y = ras[v * 3 + 1], z = ras[v * 3 + 2];
    const h = Math.min(1, Math.max(0, (y - yMin) / Math.max(1e-6, yMax - yMin)));
    // Eccentricity: log-spaced from the pole forwards, with jitter.
    const eccDeg = Math.min(MAX_ECCENTRICITY_DEG, Math.max(0.1, Math.exp(h * logRange) - 1 + rng.normal() * 0.4));
    // Polar angle: upper voxels map to the lower field; 0 is the horizontal meridian.
    const vertical = Math.max(-1, Math.min(1, (z - zMid) / zHalf + rng.normal() * 0.15));
    const angle = -vertical * (Math.PI / 2);
    // The left hemisphere (smaller x in RAS+) represents the right visual field.
    const side = x < xMid ? 1 : -1;
    model.prfXDeg[v] = side * eccDeg * Math.cos(angle);
    model.prfYDeg[v] = eccDeg * Math.sin(angle);
    const sigma = (SIZE_INTERCEPT_DEG + SIZE_SLOPE * eccDeg) * (1 + SIZE_HIERARCHY_GAIN * h) * Math.exp(rng.normal() * 0.15);
    model.prfSigmaDeg[v] = sigma;
    model.hierarchy[v] = h;
    model.sizeBin[v] = nearestBin(sigma / CELL_DEG);
    let total = 0;
    for (let f = 0; f < FEATURE_COUNT; f++) {
      const w = rng.gamma(0.5);
      model.featureWeights[v * FEATURE_COUNT + f] = w;
      total += w;
    }
    for (let f = 0; f < FEATURE_COUNT; f++) model.featureWeights[v * FEATURE_COUNT + f] /= total || 1;
    model.exponent[v] = 0.7 - 0.35 * h;
    model.sharedFraction[v] = 0.2 + 0.5 * h;
    const scale = 1 / Math.sqrt(DESCRIPTOR_SIZE);
    for (let d = 0; d < DESCRIPTOR_SIZE; d++) model.sharedWeights[v * DESCRIPTOR_SIZE + d] = rng.normal() * scale;
    const mean = MEAN_RESPONSE_PCT * Math.exp(rng.normal() * MEAN_RESPONSE_LOG_SD);
    model.meanResponsePct[v] = mean;
    model.imageSdPct[v] = IMAGE_SD_FRACTION * mean;
    const ncsnr = NCSNR_MEDIAN * (1.25 - 0.5 * h) * Math.exp(rng.normal() * NCSNR_LOG_SD);
    model.ncsnr[v] = Math.min(1.5, Math.max(0.05, ncsnr));
  }
  return model;
}

function nearestBin(sigmaCells: number): number {
  let best = 0;
  for (let b = 1; b < SIZE_BINS_CELLS.length; b++) {
    if (Math.abs(Math.log(sigmaCells / SIZE_BINS_CELLS[b])) < Math.abs(Math.log(sigmaCells / SIZE_BINS_CELLS[best]))) best = b;
  }
  return best;
}

function gaussianKernel(sigma: number): Float32Array {
  const radius = Math.ceil(2.5 * sigma);
  const kernel = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    kernel[i + radius] = Math.exp((-0.5 * i * i) / (sigma * sigma));
    sum += kernel[i + radius];
  }
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  return kernel;
}

const KERNELS = SIZE_BINS_CELLS.map(gaussianKernel);

/**
 * Sampling positions of the voxels on the blurred feature maps: each voxel's top-left padded
 * cell and bilinear fractions, and per size bin the cells and columns that any voxel reads.
 * Blurring only those cells keeps the drive computation cheap.
 */
interface SamplingPlan {
  base: Int32Array;
  fracCol: Float32Array;
  fracRow: Float32Array;
  cellsByBin: Int32Array[];
  columnsByBin: Int32Array[];
}

const plans = new WeakMap<VoxelModel, SamplingPlan>();

function samplingPlan(model: VoxelModel): SamplingPlan {
  const cached = plans.get(model);
  if (cached !== undefined) return cached;
  const half = STIMULUS_DEG / 2;
  const base = new Int32Array(model.count);
  const fracCol = new Float32Array(model.count);
  const fracRow = new Float32Array(model.count);
  const cellSets = SIZE_BINS_CELLS.map(() => new Uint8Array(PADDED * PADDED));
  for (let v = 0; v < model.count; v++) {
    // Visual field (x right, y up, degrees) to padded-grid cells (column right, row down),
    // clamped so that the 2 x 2 neighbourhood stays on the grid.
    const col = Math.min(PADDED - 1.001, Math.max(0, (model.prfXDeg[v] + half) / CELL_DEG - 0.5 + PAD));
    const row = Math.min(PADDED - 1.001, Math.max(0, (half - model.prfYDeg[v]) / CELL_DEG - 0.5 + PAD));
    const c0 = Math.floor(col), r0 = Math.floor(row);
    base[v] = r0 * PADDED + c0;
    fracCol[v] = col - c0;
    fracRow[v] = row - r0;
    const set = cellSets[model.sizeBin[v]];
    set[base[v]] = set[base[v] + 1] = set[base[v] + PADDED] = set[base[v] + PADDED + 1] = 1;
  }
  const cellsByBin = cellSets.map((set) => {
    const cells: number[] = [];
    set.forEach((flag, cell) => { if (flag === 1) cells.push(cell); });
    return Int32Array.from(cells);
  });
  const columnsByBin = cellsByBin.map((cells) => Int32Array.from(new Set(Array.from(cells, (cell) => cell % PADDED))));
  const plan = { base, fracCol, fracRow, cellsByBin, columnsByBin };
  plans.set(model, plan);
  return plan;
}

/**
 * Blurs one 32 x 32 feature map with a separable Gaussian onto the zero-padded grid, computing
 * only the listed cells (the padding is 0, so only taps inside the image contribute).
 */
function blurAtCells(map: Float32Array, offset: number, kernel: Float32Array, cells: Int32Array, columns: Int32Array, rows: Float32Array, out: Float32Array): void {
  const radius = (kernel.length - 1) / 2;
  for (let y = 0; y < FEATURE_GRID; y++) {
    const rowStart = offset + y * FEATURE_GRID;
    for (const px of columns) {
      const tLow = Math.max(-radius, PAD - px);
      const tHigh = Math.min(radius, FEATURE_GRID - 1 + PAD - px);
      let s = 0;
      for (let t = tLow; t <= tHigh; t++) s += kernel[t + radius] * map[rowStart + px - PAD + t];
      rows[y * PADDED + px] = s;
    }
  }
  for (const cell of cells) {
    const py = Math.floor(cell / PADDED);
    const px = cell - py * PADDED;
    const tLow = Math.max(-radius, PAD - py);
    const tHigh = Math.min(radius, FEATURE_GRID - 1 + PAD - py);
    let s = 0;
    for (let t = tLow; t <= tHigh; t++) s += kernel[t + radius] * rows[(py - PAD + t) * PADDED + px];
    out[cell] = s;
  }
}

/** Computes the whole-image descriptor: feature maps averaged over 4 x 4 blocks, log-compressed. */
export function imageDescriptor(features: Float32Array): Float32Array {
  const out = new Float32Array(DESCRIPTOR_SIZE);
  const block = FEATURE_GRID / DESCRIPTOR_BLOCKS;
  for (let f = 0; f < FEATURE_COUNT; f++) {
    for (let by = 0; by < DESCRIPTOR_BLOCKS; by++) {
      for (let bx = 0; bx < DESCRIPTOR_BLOCKS; bx++) {
        let s = 0;
        for (let y = by * block; y < (by + 1) * block; y++) for (let x = bx * block; x < (bx + 1) * block; x++) s += features[(f * FEATURE_GRID + y) * FEATURE_GRID + x];
        out[(f * DESCRIPTOR_BLOCKS + by) * DESCRIPTOR_BLOCKS + bx] = Math.log(s / (block * block) + 0.01);
      }
    }
  }
  return out;
}

/** Computes the raw (unstandardized) pRF and shared drives of every voxel for one image. */
export function rawDrives(model: VoxelModel, features: Float32Array, descriptor: Float32Array): { prf: Float32Array; shared: Float32Array } {
  const plan = samplingPlan(model);
  const mapSize = PADDED * PADDED;
  const blurred = new Float32Array(SIZE_BINS_CELLS.length * FEATURE_COUNT * mapSize);
  const rows = new Float32Array(FEATURE_GRID * PADDED);
  for (let b = 0; b < SIZE_BINS_CELLS.length; b++) {
    if (plan.cellsByBin[b].length === 0) continue;
    for (let f = 0; f < FEATURE_COUNT; f++) {
      const out = blurred.subarray((b * FEATURE_COUNT + f) * mapSize, (b * FEATURE_COUNT + f + 1) * mapSize);
      blurAtCells(features, f * FEATURE_GRID * FEATURE_GRID, KERNELS[b], plan.cellsByBin[b], plan.columnsByBin[b], rows, out);
    }
  }
  const z = new Float32Array(DESCRIPTOR_SIZE);
  for (let d = 0; d < DESCRIPTOR_SIZE; d++) z[d] = (descriptor[d] - model.descriptorMean[d]) / model.descriptorSd[d];
  const prf = new Float32Array(model.count);
  const shared = new Float32Array(model.count);
  for (let v = 0; v < model.count; v++) {
    const fc = plan.fracCol[v], fr = plan.fracRow[v];
    let drive = 0;
    for (let f = 0; f < FEATURE_COUNT; f++) {
      const cell = (model.sizeBin[v] * FEATURE_COUNT + f) * mapSize + plan.base[v];
      const sample = (1 - fr) * ((1 - fc) * blurred[cell] + fc * blurred[cell + 1])
        + fr * ((1 - fc) * blurred[cell + PADDED] + fc * blurred[cell + PADDED + 1]);
      drive += model.featureWeights[v * FEATURE_COUNT + f] * sample;
    }
    prf[v] = Math.pow(Math.max(0, drive), model.exponent[v]);
    let s = 0;
    for (let d = 0; d < DESCRIPTOR_SIZE; d++) s += model.sharedWeights[v * DESCRIPTOR_SIZE + d] * z[d];
    shared[v] = s;
  }
  return { prf, shared };
}

function meanAndSd(rows: Float32Array[], index: number): [number, number] {
  let mean = 0;
  for (const r of rows) mean += r[index] / rows.length;
  let variance = 0;
  for (const r of rows) variance += (r[index] - mean) ** 2 / rows.length;
  return [mean, Math.sqrt(variance)];
}

/**
 * Sets the standardization of the drives from a reference set of images (features and
 * descriptors), so that both drives have mean 0 and standard deviation 1 over that set.
 */
export function calibrateVoxelModel(model: VoxelModel, features: Float32Array[], descriptors: Float32Array[]): void {
  for (let d = 0; d < DESCRIPTOR_SIZE; d++) {
    const [mean, sd] = meanAndSd(descriptors, d);
    model.descriptorMean[d] = mean;
    model.descriptorSd[d] = sd > 1e-6 ? sd : 1;
  }
  const prfRows: Float32Array[] = [];
  const sharedRows: Float32Array[] = [];
  for (let s = 0; s < features.length; s++) {
    const drives = rawDrives(model, features[s], descriptors[s]);
    prfRows.push(drives.prf);
    sharedRows.push(drives.shared);
  }
  for (let v = 0; v < model.count; v++) {
    const [pm, ps] = meanAndSd(prfRows, v);
    const [sm, ss] = meanAndSd(sharedRows, v);
    model.prfMean[v] = pm;
    model.prfSd[v] = ps > 1e-9 ? ps : 1;
    model.sharedMean[v] = sm;
    model.sharedSd[v] = ss > 1e-9 ? ss : 1;
  }
}

/** Computes the true betas (PSC) of every ROI voxel for one image. */
export function imageBetas(model: VoxelModel, features: Float32Array, descriptor: Float32Array): Float32Array {
  const { prf, shared } = rawDrives(model, features, descriptor);
  const betas = new Float32Array(model.count);
  for (let v = 0; v < model.count; v++) {
    const zPrf = (prf[v] - model.prfMean[v]) / model.prfSd[v];
    const zShared = (shared[v] - model.sharedMean[v]) / model.sharedSd[v];
    const f = model.sharedFraction[v];
    betas[v] = model.meanResponsePct[v] + model.imageSdPct[v] * (Math.sqrt(1 - f) * zPrf + Math.sqrt(f) * zShared);
  }
  return betas;
}
