/**
 * Real-time quality metrics per volume: framewise displacement, DVARS and slice spikes, with
 * flags, and a running temporal SNR map.
 *
 * - FD: Power et al. (2012, NeuroImage 59:2142), from the motion parameters (rigid.ts): sum of
 *   absolute parameter changes, rotations as arc length on a 50 mm sphere. Flag 'fd' above
 *   fdThresholdMm (default 0.5 mm, the threshold of that paper).
 * - DVARS: root mean square over the DVARS voxels of the change since the previous volume, in
 *   signal units (`dvars`, what MaskedVolume carries) and as a percentage of the run's mean
 *   signal in those voxels (`dvarsPct`). The flag uses standardized DVARS (`dvarsStd`): DVARS
 *   divided by its expected value, estimated robustly as the median DVARS of the earlier
 *   unflagged volumes (after at least 3), so 1 is typical. 'dvars' above dvarsThreshold
 *   (default 1.5, fMRIPrep's default for standardized DVARS). A fixed percentage would not do:
 *   on unsmoothed real-time data thermal noise alone gives 1-4 % (sqrt(2) / tSNR), so the 0.5 %
 *   that Power et al. (2012) applied to their smoothed data would flag almost every volume.
 * - Spikes: slice-wise, because RF spikes and dropouts hit single slices. For each slice we take
 *   the relative change of its mean (over the DVARS voxels) since the last unflagged volume and
 *   subtract the median change over all slices, because a global change is DVARS's business.
 *   The result is divided by that slice's robust scale of change: 1.4826 times the median
 *   absolute value of its last 30 such changes (about zero, since a change has mean zero),
 *   floored at 0.1 %. Flag 'spike' when any |z| exceeds
 *   spikeZThreshold (default 5) once spikeWarmupVolumes (default 5) changes are in the history.
 *   Changes rather than levels, so that drift and the new position after a jump do not count.
 *   A second flagged volume in a row that matches the first is a new level (the head moved),
 *   not a spike, and is not flagged.
 * - Temporal SNR: per-voxel running mean and standard deviation (Welford, float64), readable at
 *   any time; tSNR = mean / sample standard deviation.
 *
 * Flagged volumes stay in the stream with their flags; the trial GLM decides whether to censor
 * them. Volumes flagged 'all-zero' or 'no-overlap' (by motion correction or here) are kept out
 * of the running statistics, and non-finite voxels are left out of every sum.
 */
import { MindeyeError } from '../errors.ts';
import type { MotionParams, QualityFlag, Shape3 } from '../events.ts';
import { framewiseDisplacement } from './rigid.ts';

export interface QualityOptions {
  /** Grid of the volumes passed to update (x fastest); or see `indices`. */
  shape: Shape3;
  /**
   * When set, update() takes the values at these linear voxel indices of `shape` (a masked
   * volume, in this order) instead of whole volumes, and maps are in the same order.
   */
  indices?: Int32Array;
  /** Voxels used for DVARS and spikes (non-zero = used), over the update() input; default: all. */
  dvarsMask?: Uint8Array;
  fdThresholdMm?: number;
  /** Standardized DVARS above which a volume is flagged 'dvars' (default 1.5). */
  dvarsThreshold?: number;
  spikeZThreshold?: number;
  spikeWarmupVolumes?: number;
  /** Sphere radius for FD (default 50 mm). */
  radiusMm?: number;
}

export interface QualityResult {
  /** Framewise displacement from the previous volume (mm); 0 for the first volume or without motion. */
  fdMm: number;
  /** RMS change since the previous volume over the DVARS voxels, signal units; 0 for the first volume. */
  dvars: number;
  /** dvars as a percentage of the run's mean signal over the DVARS voxels. */
  dvarsPct: number;
  /** dvars over the median DVARS of earlier unflagged volumes; NaN until 3 of them exist. */
  dvarsStd: number;
  /** Largest |z| of a slice's mean change (see the module header); 0 during the warm-up. */
  spikeZ: number;
  /** Slice (z index) with that largest |z|, or -1. */
  spikeSlice: number;
  /** The flags passed in plus those raised here, without duplicates. */
  flags: QualityFlag[];
}

const EXCLUDING_FLAGS: ReadonlySet<QualityFlag> = new Set(['all-zero', 'no-overlap']);

export class QualityMonitor {
  readonly fdThresholdMm: number;
  readonly dvarsThreshold: number;
  readonly spikeZThreshold: number;
  readonly spikeWarmupVolumes: number;
  readonly radiusMm: number;

  private readonly length: number;
  private readonly sliceOf: Int32Array;
  private readonly sliceCount: number;
  private readonly dvarsMask: Uint8Array | null;

  private readonly count: Uint32Array;
  private readonly mean: Float64Array;
  private readonly m2: Float64Array;
  private previous: Float32Array | null = null;
  private previousMotion: MotionParams | null = null;
  private volumes = 0;
  private globalMeanSum = 0;
  private globalMeanCount = 0;
  /** DVARS of the latest unflagged volumes (at most 50), for the standardized DVARS. */
  private readonly recentDvars: number[] = [];

  private readonly spikes: SliceSpikeDetector;

  constructor(opts: QualityOptions) {
    const [nx, ny, nz] = opts.shape;
    const plane = nx * ny;
    const voxels = plane * nz;
    this.fdThresholdMm = positive(opts.fdThresholdMm ?? 0.5, 'fdThresholdMm');
    this.dvarsThreshold = positive(opts.dvarsThreshold ?? 1.5, 'dvarsThreshold');
    this.spikeZThreshold = positive(opts.spikeZThreshold ?? 5, 'spikeZThreshold');
    this.spikeWarmupVolumes = Math.max(2, Math.floor(opts.spikeWarmupVolumes ?? 5));
    this.radiusMm = positive(opts.radiusMm ?? 50, 'radiusMm');

    if (opts.indices !== undefined) {
      this.length = opts.indices.length;
      this.sliceOf = new Int32Array(this.length);
      for (let n = 0; n < this.length; n++) {
        const index = opts.indices[n];
        if (!(index >= 0 && index < voxels)) {
          throw new MindeyeError('MASK_GRID_MISMATCH', 'A quality-monitor voxel index is outside the grid.', {
            field: `indices[${n}]`, value: index, expected: `0 to ${voxels - 1} (${opts.shape.join('x')})`,
          });
        }
        this.sliceOf[n] = Math.floor(index / plane);
      }
    } else {
      this.length = voxels;
      this.sliceOf = new Int32Array(voxels);
      for (let i = 0; i < voxels; i++) this.sliceOf[i] = Math.floor(i / plane);
    }
    this.sliceCount = nz;
    if (opts.dvarsMask !== undefined && opts.dvarsMask.length !== this.length) {
      throw new MindeyeError('MASK_GRID_MISMATCH', 'The DVARS mask does not match the quality monitor input.', {
        field: 'dvarsMask length', value: opts.dvarsMask.length, expected: `${this.length} values`,
      });
    }
    this.dvarsMask = opts.dvarsMask ?? null;
    let dvarsCount = this.length;
    if (this.dvarsMask) {
      dvarsCount = 0;
      for (let i = 0; i < this.length; i++) if (this.dvarsMask[i]) dvarsCount++;
    }
    if (dvarsCount === 0) {
      throw new MindeyeError('MASK_EMPTY', 'The DVARS mask selects no voxels.', {
        field: 'dvarsMask', value: '0 voxels', fix: 'pass a mask that covers the brain, or none to use every voxel',
      });
    }
    this.count = new Uint32Array(this.length);
    this.mean = new Float64Array(this.length);
    this.m2 = new Float64Array(this.length);
    this.spikes = new SliceSpikeDetector(nz, 30);
  }

  /** Volumes passed to update() so far, flagged ones included. */
  get volumeCount(): number {
    return this.volumes;
  }

  /**
   * Computes FD, DVARS and the spike score of one volume, adds it to the running statistics
   * (unless it is flagged 'all-zero' or 'no-overlap') and returns the metrics with the flags.
   * `motion` is the volume's motion estimate (omit it when motion correction is off: FD is 0).
   * `data` is not modified.
   */
  update(data: Float32Array, motion?: MotionParams | null, flags: readonly QualityFlag[] = []): QualityResult {
    if (data.length !== this.length) {
      throw new MindeyeError('VOLUME_GRID_MISMATCH', 'The volume does not match the quality monitor input size.', {
        field: 'data length', value: data.length, expected: `${this.length} values`,
      });
    }
    const out = new Set<QualityFlag>(flags);

    // One pass: finiteness, the global mean, slice means and DVARS over the DVARS voxels.
    const sliceSum = new Float64Array(this.sliceCount);
    const sliceN = new Uint32Array(this.sliceCount);
    let nonFinite = 0, anyNonZero = false, sum = 0, used = 0, sumSquaredDiff = 0, diffCount = 0;
    const prev = this.previous;
    for (let i = 0; i < this.length; i++) {
      const v = data[i];
      if (!Number.isFinite(v)) { nonFinite++; continue; }
      if (v !== 0) anyNonZero = true;
      if (this.dvarsMask && !this.dvarsMask[i]) continue;
      sum += v;
      used++;
      const s = this.sliceOf[i];
      sliceSum[s] += v;
      sliceN[s]++;
      if (prev) {
        const p = prev[i];
        if (Number.isFinite(p)) { sumSquaredDiff += (v - p) * (v - p); diffCount++; }
      }
    }
    if (nonFinite > 0) out.add('nan');
    if (!anyNonZero) out.add('all-zero');
    const excluded = [...out].some((f) => EXCLUDING_FLAGS.has(f));

    let fdMm = 0;
    if (motion && this.previousMotion) fdMm = framewiseDisplacement(this.previousMotion, motion, this.radiusMm);
    if (fdMm > this.fdThresholdMm) out.add('fd');

    let dvars = 0, dvarsPct = 0, dvarsStd = Number.NaN;
    if (prev && !excluded && diffCount > 0) {
      dvars = Math.sqrt(sumSquaredDiff / diffCount);
      const runMean = (this.globalMeanSum + sum / Math.max(used, 1)) / (this.globalMeanCount + 1);
      dvarsPct = runMean !== 0 ? (100 * dvars) / Math.abs(runMean) : 0;
      if (this.recentDvars.length >= 3) {
        const expected = median(this.recentDvars);
        if (expected > 0) dvarsStd = dvars / expected;
        else dvarsStd = dvars > 0 ? Number.POSITIVE_INFINITY : 1;
        if (dvarsStd > this.dvarsThreshold) out.add('dvars');
      }
    }

    const sliceMeans = Float64Array.from(sliceSum, (total, slice) => (sliceN[slice] > 0 ? total / sliceN[slice] : Number.NaN));
    let spikeZ = 0, spikeSlice = -1;
    let spike = false;
    if (!excluded) {
      const score = this.spikes.score(sliceMeans, this.spikeWarmupVolumes, this.spikeZThreshold);
      spikeZ = score.z;
      spikeSlice = score.slice;
      spike = score.spike;
      if (spike) out.add('spike');
      this.spikes.commit(sliceMeans, score);
    }

    this.volumes++;
    if (!excluded) {
      this.accumulateVoxels(data);
      if (prev && diffCount > 0 && !out.has('dvars') && !spike) {
        this.recentDvars.push(dvars);
        if (this.recentDvars.length > 50) this.recentDvars.shift();
      }
      if (used > 0) { this.globalMeanSum += sum / used; this.globalMeanCount++; }
      this.previous = Float32Array.from(data);
      if (motion) this.previousMotion = { translationMm: [...motion.translationMm], rotationRad: [...motion.rotationRad] };
    }
    return { fdMm, dvars, dvarsPct, dvarsStd, spikeZ, spikeSlice, flags: [...out] };
  }

  /** Running mean per voxel (0 where no finite value has been seen). */
  meanMap(out?: Float32Array): Float32Array {
    const result = out ?? new Float32Array(this.length);
    for (let i = 0; i < this.length; i++) result[i] = this.mean[i];
    return result;
  }

  /** Running sample standard deviation per voxel (n - 1 denominator; 0 below two values). */
  stdMap(out?: Float32Array): Float32Array {
    const result = out ?? new Float32Array(this.length);
    for (let i = 0; i < this.length; i++) result[i] = this.count[i] > 1 ? Math.sqrt(this.m2[i] / (this.count[i] - 1)) : 0;
    return result;
  }

  /** Temporal SNR per voxel: mean / sample standard deviation; 0 where the deviation is 0 or undefined. */
  tsnrMap(out?: Float32Array): Float32Array {
    const result = out ?? new Float32Array(this.length);
    for (let i = 0; i < this.length; i++) {
      const n = this.count[i];
      const sd = n > 1 ? Math.sqrt(this.m2[i] / (n - 1)) : 0;
      result[i] = sd > 0 ? this.mean[i] / sd : 0;
    }
    return result;
  }

  /** Median tSNR over the DVARS voxels with a defined tSNR, or NaN before two volumes. */
  medianTsnr(): number {
    const map = this.tsnrMap();
    const values: number[] = [];
    for (let i = 0; i < this.length; i++) {
      if ((this.dvarsMask === null || this.dvarsMask[i]) && this.count[i] > 1 && map[i] !== 0) values.push(map[i]);
    }
    return values.length === 0 ? Number.NaN : median(values);
  }

  private accumulateVoxels(data: Float32Array): void {
    for (let i = 0; i < this.length; i++) {
      const v = data[i];
      if (!Number.isFinite(v)) continue;
      const n = ++this.count[i];
      const delta = v - this.mean[i];
      this.mean[i] += delta / n;
      this.m2[i] += delta * (v - this.mean[i]);
    }
  }
}

interface SpikeScore {
  z: number;
  slice: number;
  spike: boolean;
  /** Residual relative changes against the last unflagged volume, or null without one. */
  residuals: Float64Array | null;
  /** The volume repeats the previous flagged one: a new level, not a spike. */
  levelShift: boolean;
}

/** Slice-wise spike detection on relative slice-mean changes (see the module header). */
class SliceSpikeDetector {
  private lastGood: Float64Array | null = null;
  private previous: Float64Array | null = null;
  private previousWasSpike = false;
  /** Ring buffer of residual changes, `window` rows of `slices` values. */
  private readonly history: Float64Array;
  private filled = 0;
  private nextRow = 0;

  constructor(private readonly slices: number, private readonly window: number) {
    this.history = new Float64Array(slices * window).fill(Number.NaN);
  }

  score(means: Float64Array, warmup: number, threshold: number): SpikeScore {
    if (this.lastGood === null) return { z: 0, slice: -1, spike: false, residuals: null, levelShift: false };
    const residuals = residualChanges(means, this.lastGood);
    if (this.filled < warmup) return { z: 0, slice: -1, spike: false, residuals, levelShift: false };
    const scales = this.scales();
    const best = maxZ(residuals, scales);
    let spike = best.z > threshold;
    let levelShift = false;
    if (spike && this.previousWasSpike && this.previous !== null) {
      // Same pattern as the previous flagged volume: the head or the signal moved to a new level.
      const againstPrevious = maxZ(residualChanges(means, this.previous), scales);
      if (againstPrevious.z <= threshold) { spike = false; levelShift = true; }
    }
    return { z: best.z, slice: best.slice, spike, residuals, levelShift };
  }

  commit(means: Float64Array, score: SpikeScore): void {
    this.previous = means;
    this.previousWasSpike = score.spike;
    if (score.spike) return;
    if (score.residuals !== null && !score.levelShift) {
      this.history.set(score.residuals, this.nextRow * this.slices);
      this.nextRow = (this.nextRow + 1) % this.window;
      this.filled = Math.min(this.filled + 1, this.window);
    }
    this.lastGood = means;
  }

  /**
   * Per slice: the robust scale of the history about zero, 1.4826 median(|change|), floored at
   * 0.1 %. About zero rather than about the median: a slice whose mean alternates (+a, -a, ...)
   * would otherwise get a median of +a and a scale of 0.
   */
  private scales(): { centre: Float64Array; scale: Float64Array } {
    const centre = new Float64Array(this.slices);
    const scale = new Float64Array(this.slices);
    const column: number[] = [];
    for (let s = 0; s < this.slices; s++) {
      column.length = 0;
      for (let r = 0; r < this.window; r++) {
        const v = this.history[r * this.slices + s];
        if (Number.isFinite(v)) column.push(v);
      }
      if (column.length === 0) { centre[s] = Number.NaN; continue; }
      scale[s] = Math.max(1.4826 * median(column.map(Math.abs)), 1e-3);
    }
    return { centre, scale };
  }
}

/** Relative change of each slice mean against `base`, minus the median change over slices. */
function residualChanges(means: Float64Array, base: Float64Array): Float64Array {
  const out = new Float64Array(means.length).fill(Number.NaN);
  const valid: number[] = [];
  for (let s = 0; s < means.length; s++) {
    if (Number.isFinite(means[s]) && Number.isFinite(base[s]) && base[s] !== 0) {
      out[s] = (means[s] - base[s]) / Math.abs(base[s]);
      valid.push(out[s]);
    }
  }
  if (valid.length === 0) return out;
  const global = median(valid);
  for (let s = 0; s < out.length; s++) out[s] -= global;
  return out;
}

function maxZ(residuals: Float64Array, stats: { centre: Float64Array; scale: Float64Array }): { z: number; slice: number } {
  let z = 0, slice = -1;
  for (let s = 0; s < residuals.length; s++) {
    if (!Number.isFinite(residuals[s]) || !Number.isFinite(stats.centre[s])) continue;
    const zs = Math.abs(residuals[s] - stats.centre[s]) / stats.scale[s];
    if (zs > z) { z = zs; slice = s; }
  }
  return { z, slice };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function positive(value: number, field: string): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new MindeyeError('CLI_USAGE', 'Invalid quality threshold.', { field, value, expected: 'a positive finite number' });
  }
  return value;
}
