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
 * - Spikes: the mean of each slice over the DVARS voxels, z-scored against that slice's running
 *   mean and standard deviation over earlier unflagged volumes (Welford). Flag 'spike' when any
 *   slice's |z| exceeds spikeZThreshold (default 5) once spikeWarmupVolumes (default 5) earlier
 *   volumes are in the statistics. Slice-wise, because RF spikes and dropouts hit single slices.
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
  /** Largest |z| of a slice mean against its running statistics; 0 during the warm-up. */
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

  private sliceStatsCount = 0;
  private readonly sliceMean: Float64Array;
  private readonly sliceM2: Float64Array;

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
    this.sliceMean = new Float64Array(nz);
    this.sliceM2 = new Float64Array(nz);
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
        dvarsStd = expected > 0 ? dvars / expected : dvars > 0 ? Number.POSITIVE_INFINITY : 1;
        if (dvarsStd > this.dvarsThreshold) out.add('dvars');
      }
    }

    let spikeZ = 0, spikeSlice = -1;
    if (!excluded && this.sliceStatsCount >= this.spikeWarmupVolumes) {
      for (let s = 0; s < this.sliceCount; s++) {
        if (sliceN[s] === 0) continue;
        const m = sliceSum[s] / sliceN[s];
        const sd = Math.sqrt(this.sliceM2[s] / (this.sliceStatsCount - 1));
        // Floor the deviation at 0.1 % of the slice mean so that a nearly constant slice does not
        // turn rounding noise into spikes.
        const z = Math.abs(m - this.sliceMean[s]) / Math.max(sd, 1e-3 * Math.abs(this.sliceMean[s]), 1e-12);
        if (z > spikeZ) { spikeZ = z; spikeSlice = s; }
      }
      if (spikeZ > this.spikeZThreshold) out.add('spike');
    }

    this.volumes++;
    if (!excluded) {
      this.accumulateVoxels(data);
      if (!out.has('spike')) this.accumulateSlices(sliceSum, sliceN);
      if (prev && diffCount > 0 && !out.has('dvars') && !out.has('spike')) {
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

  private accumulateSlices(sliceSum: Float64Array, sliceN: Uint32Array): void {
    this.sliceStatsCount++;
    const n = this.sliceStatsCount;
    for (let s = 0; s < this.sliceCount; s++) {
      if (sliceN[s] === 0) continue;
      const m = sliceSum[s] / sliceN[s];
      const delta = m - this.sliceMean[s];
      this.sliceMean[s] += delta / n;
      this.sliceM2[s] += delta * (m - this.sliceMean[s]);
    }
  }
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
