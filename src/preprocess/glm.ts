/**
 * Online single-trial GLM with progressive estimates.
 *
 * Design (all float64):
 * - task columns: one regressor per trial, the canonical HRF convolved with the trial's boxcar
 *   (src/preprocess/hrf.ts); the regressor is zero before the trial's onset.
 * - drift columns: Legendre polynomials of order 0..P over the run's expected duration
 *   (`poly`), or an intercept plus a DCT high-pass basis with a cutoff period (`dct`, as SPM).
 * - optional motion columns: the 6 rigid parameters of each volume.
 * - censored volumes (quality flags, when censoring is on) contribute no row.
 *
 * Estimators:
 * - `lss` (least-squares-separate, Mumford et al. 2012): for trial k, columns
 *   [g_k, sum of all other trials, drift, motion].
 * - `lsa` (least-squares-all): columns [g_0 .. g_J, drift, motion] for the trials started so far.
 *
 * Progressive estimates: trial k's window contains the volumes acquired in
 * [onset, onset + duration + windowSec]. For every volume t in the window, the estimate is the OLS
 * fit on rows 0..t (the run so far), and the one at the window's last volume is final. So each
 * intermediate estimate equals an offline OLS on the truncated data, and the final one an offline
 * OLS on the data up to the window's end.
 *
 * Incremental: a new volume adds one row. The run keeps Z^T Z and Z^T Y for
 * Z = [every trial column, the sum of all trial columns, drift, motion]; an LSS design is a
 * linear map of three of Z's column groups ([g_k, a, D] -> [g_k, a - g_k, D]), so its normal
 * equations follow from those sums with no refit over past volumes. A trial column only
 * accumulates while its regressor is non-zero (onset to onset + duration + 32 s).
 *
 * Trials can be added during the run (`addTrial`, for live sessions whose stimulus onsets come
 * from the stimulus program). The rows of the run so far are kept (V float32 values per volume),
 * so a trial whose onset precedes volumes already added still gets its exact contribution.
 */
import { MindeyeError } from '../errors.ts';
import type { MotionParams, TrialSpec } from '../events.ts';
import { canonicalHrf, trialRegressorAt } from './hrf.ts';

export type GlmMethod = 'lss' | 'lsa';

export type DriftModel = { kind: 'poly'; order: number } | { kind: 'dct'; cutoffSec: number };

export interface GlmOptions {
  method: GlmMethod;
  trSec: number;
  /** Seconds after the trial's offset that its window stays open. */
  windowSec: number;
  drift: DriftModel;
  /** Run duration used to scale the drift basis; nominal 300 s when the run length is unknown. */
  expectedDurationSec?: number;
  motionRegressors: boolean;
  /** Fine-grid points per TR for the HRF convolution. */
  oversampling?: number;
  /** HRF sampled every `hrfDtSec` seconds (default: the SPM canonical HRF). */
  hrf?: Float32Array | Float64Array;
  hrfDtSec?: number;
}

export interface RawTrialEstimate {
  trialId: number;
  stimulusId: string;
  volIdx: number;
  volumesSinceOnset: number;
  betas: Float64Array;
  final: boolean;
}

interface TrialState {
  spec: TrialSpec;
  /** Index of the trial's column in Z. */
  column: number;
  /** Last time (s) at which the regressor can be non-zero. */
  activeUntilSec: number;
  windowEndSec: number;
  volumesSeen: number;
  closed: boolean;
}

const NOMINAL_DURATION_SEC = 300;
/**
 * Maximum run length the drift basis is sized for (1 hour). A header can claim any volume count (a
 * NIfTI-2 dim[4] of 2^40), and the DCT basis grows with the run, so a claim is clamped here.
 * NOTE: a real run longer than an hour keeps the 1-hour basis, which models slow drift less well.
 */
export const MAX_RUN_DURATION_SEC = 3600;

export class OnlineTrialGlm {
  readonly voxelCount: number;
  private readonly opts: GlmOptions;
  private readonly hrf: Float64Array;
  private readonly dtSec: number;
  private readonly trials: TrialState[] = [];
  private readonly driftCount: number;
  private readonly motionCount: number;
  /** Column layout of Z: [all-trials, drift..., motion..., trial 0, trial 1, ...]. */
  private columnCount: number;
  private readonly allColumn = 0;
  private readonly driftStart = 1;
  private readonly motionStart: number;
  private readonly trialStart: number;
  /** Capacity (columns) of gram and zty; grows by doubling as trials are added. */
  private capacity: number;
  private gram: Float64Array; // capacity x capacity
  private zty: Float64Array; // capacity x V
  /** Rows added so far (censored rows are not kept), for trials added after their onset. */
  private readonly history: { tSec: number; values: Float32Array | Float64Array; fixed: number[] }[] = [];
  private readonly durationSec: number;

  constructor(trials: TrialSpec[], voxelCount: number, opts: GlmOptions) {
    this.opts = opts;
    this.voxelCount = voxelCount;
    this.dtSec = opts.trSec / (opts.oversampling ?? 16);
    this.hrf = opts.hrf ? resampleHrf(opts.hrf, opts.hrfDtSec ?? this.dtSec, this.dtSec) : canonicalHrf(this.dtSec);
    const hrfLengthSec = (this.hrf.length - 1) * this.dtSec;
    this.hrfLengthSec = hrfLengthSec;
    this.durationSec = Math.min(opts.expectedDurationSec ?? NOMINAL_DURATION_SEC, MAX_RUN_DURATION_SEC);
    this.driftCount = opts.drift.kind === 'poly'
      ? opts.drift.order + 1
      : 1 + Math.max(0, Math.floor((2 * this.durationSec) / opts.drift.cutoffSec));
    this.motionCount = opts.motionRegressors ? 6 : 0;
    this.motionStart = this.driftStart + this.driftCount;
    this.trialStart = this.motionStart + this.motionCount;
    this.columnCount = this.trialStart;
    this.capacity = this.trialStart + Math.max(trials.length, 8);
    this.gram = new Float64Array(this.capacity * this.capacity);
    this.zty = new Float64Array(this.capacity * voxelCount);
    for (const spec of trials) this.addTrial(spec);
  }

  private readonly hrfLengthSec: number;

  /**
   * Adds a trial to the design. Rows already added at or after its onset get its regressor
   * (the 'all trials' column changes for them too), so the result equals a design that held
   * the trial from the start. A trial whose window already ended is estimated at the next volume.
   */
  addTrial(spec: TrialSpec): void {
    const column = this.columnCount;
    this.ensureCapacity(column + 1);
    this.columnCount++;
    const state: TrialState = {
      spec,
      column,
      activeUntilSec: spec.onsetSec + spec.durationSec + this.hrfLengthSec,
      windowEndSec: spec.onsetSec + spec.durationSec + this.opts.windowSec,
      volumesSeen: 0,
      closed: false,
    };
    this.trials.push(state);
    for (const row of this.history) {
      if (row.tSec < spec.onsetSec || row.tSec > state.activeUntilSec) continue;
      const g = this.trialRegressor(spec, row.tSec);
      if (g === 0) continue;
      // Remove the row as it was accumulated, then add it with the new trial included.
      const before = this.sparseRow(row.tSec, row.fixed, state);
      this.addOuter(before.idx, before.val, row.values, -1);
      const after = this.sparseRow(row.tSec, row.fixed);
      this.addOuter(after.idx, after.val, row.values, 1);
    }
    // Volumes of the window that were already added count as seen.
    for (const row of this.history) {
      if (row.tSec >= spec.onsetSec && row.tSec <= state.windowEndSec + 1e-9) state.volumesSeen++;
    }
  }

  private ensureCapacity(columns: number): void {
    if (columns <= this.capacity) return;
    const capacity = Math.max(columns, this.capacity * 2);
    const gram = new Float64Array(capacity * capacity);
    for (let a = 0; a < this.columnCount; a++) {
      for (let b = 0; b < this.columnCount; b++) gram[a * capacity + b] = this.gram[a * this.capacity + b];
    }
    const zty = new Float64Array(capacity * this.voxelCount);
    zty.set(this.zty.subarray(0, this.columnCount * this.voxelCount));
    this.capacity = capacity;
    this.gram = gram;
    this.zty = zty;
  }

  /** Values of the drift basis at time tSec. */
  driftRow(tSec: number): Float64Array {
    const out = new Float64Array(this.driftCount);
    if (this.opts.drift.kind === 'poly') {
      // Legendre polynomials on x in [-1, 1] over the expected run duration (Bonnet's recursion).
      const x = (2 * tSec) / this.durationSec - 1;
      out[0] = 1;
      if (this.driftCount > 1) out[1] = x;
      for (let n = 1; n + 1 < this.driftCount; n++) out[n + 1] = ((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1);
    } else {
      // SPM's DCT basis: cos(pi * k * (2 n + 1) / (2 N)) with N volumes over the run.
      const nVol = this.durationSec / this.opts.trSec;
      const n = tSec / this.opts.trSec;
      out[0] = 1;
      for (let k = 1; k < this.driftCount; k++) out[k] = Math.cos((Math.PI * k * (2 * n + 1)) / (2 * nVol));
    }
    return out;
  }

  trialRegressor(trial: TrialSpec, tSec: number): number {
    return trialRegressorAt(this.hrf, this.dtSec, trial.onsetSec, trial.durationSec, tSec);
  }

  /**
   * Adds one volume (already masked, length V) and returns the estimates of every trial whose
   * window contains it, the last of each trial marked final. A censored volume adds no row but
   * still advances the windows.
   */
  addVolume(volIdx: number, acqTimeSec: number, values: Float32Array | Float64Array, motion?: MotionParams, censored = false): RawTrialEstimate[] {
    if (values.length !== this.voxelCount) {
      throw new MindeyeError('VOLUME_GRID_MISMATCH', 'Masked volume length does not match the GLM voxel count.', {
        field: 'values.length', value: values.length, expected: String(this.voxelCount), fix: 'use the same mask for every volume of a run',
      });
    }
    if (!censored) this.accumulate(acqTimeSec, values, motion);
    const out: RawTrialEstimate[] = [];
    for (const t of this.trials) {
      if (t.closed || acqTimeSec < t.spec.onsetSec) continue;
      if (acqTimeSec > t.windowEndSec + 1e-9) {
        // The window ended between volumes (a gap): close it with the data so far.
        t.closed = true;
        out.push(this.estimate(t, volIdx, true));
        continue;
      }
      t.volumesSeen++;
      const final = acqTimeSec + this.opts.trSec > t.windowEndSec + 1e-9;
      if (final) t.closed = true;
      out.push(this.estimate(t, volIdx, final));
    }
    return out;
  }

  /** Closes every open window at the end of the run and returns their final estimates. */
  finish(lastVolIdx: number): RawTrialEstimate[] {
    const out: RawTrialEstimate[] = [];
    for (const t of this.trials) {
      if (t.closed || t.volumesSeen === 0) continue;
      t.closed = true;
      out.push(this.estimate(t, lastVolIdx, true));
    }
    return out;
  }

  /** Trials whose onset no volume reached (the run ended first). */
  unstartedTrials(): TrialSpec[] {
    return this.trials.filter((t) => t.volumesSeen === 0).map((t) => t.spec);
  }

  private fixedRow(tSec: number, motion?: MotionParams): number[] {
    const fixed = Array.from(this.driftRow(tSec));
    if (this.motionCount > 0) {
      const m = motion ?? { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] };
      fixed.push(...m.translationMm, ...m.rotationRad);
    }
    return fixed;
  }

  /** Sparse row of Z at tSec: active trial columns, the all-trials column, drift and motion. */
  private sparseRow(tSec: number, fixed: number[], exclude?: TrialState): { idx: number[]; val: number[] } {
    const idx: number[] = [];
    const val: number[] = [];
    let all = 0;
    for (const t of this.trials) {
      if (t === exclude || tSec < t.spec.onsetSec || tSec > t.activeUntilSec) continue;
      const g = this.trialRegressor(t.spec, tSec);
      if (g === 0) continue;
      idx.push(t.column);
      val.push(g);
      all += g;
    }
    if (all !== 0) {
      idx.push(this.allColumn);
      val.push(all);
    }
    for (let d = 0; d < fixed.length; d++) {
      idx.push(this.driftStart + d);
      val.push(fixed[d]);
    }
    return { idx, val };
  }

  private addOuter(idx: number[], val: number[], values: Float32Array | Float64Array, sign: 1 | -1): void {
    const V = this.voxelCount;
    const C = this.capacity;
    const zty = this.zty;
    for (let a = 0; a < idx.length; a++) {
      for (let b = 0; b < idx.length; b++) this.gram[idx[a] * C + idx[b]] += sign * val[a] * val[b];
      const row = idx[a] * V;
      const w = sign * val[a];
      for (let v = 0; v < V; v++) zty[row + v] += w * values[v];
    }
  }

  private accumulate(tSec: number, values: Float32Array | Float64Array, motion?: MotionParams): void {
    const fixed = this.fixedRow(tSec, motion);
    const { idx, val } = this.sparseRow(tSec, fixed);
    this.addOuter(idx, val, values, 1);
    this.history.push({ tSec, values, fixed });
  }

  private estimate(t: TrialState, volIdx: number, final: boolean): RawTrialEstimate {
    const { columns, transform } = this.designFor(t);
    const betas = this.solveRow(columns, transform);
    return {
      trialId: t.spec.trialId,
      stimulusId: t.spec.stimulusId,
      volIdx,
      volumesSinceOnset: t.volumesSeen,
      betas,
      final,
    };
  }

  /**
   * Returns the Z columns of trial t's design and the matrix T (q x p, row-major) with
   * X = Z[:, columns] T, where the first column of X is the trial's regressor.
   */
  private designFor(t: TrialState): { columns: number[]; transform: Float64Array } {
    const nuisance: number[] = [];
    for (let d = 0; d < this.driftCount; d++) nuisance.push(this.driftStart + d);
    for (let d = 0; d < this.motionCount; d++) nuisance.push(this.motionStart + d);
    if (this.opts.method === 'lss') {
      const columns = [t.column, this.allColumn, ...nuisance];
      const q = columns.length;
      const transform = new Float64Array(q * q);
      for (let i = 0; i < q; i++) transform[i * q + i] = 1;
      transform[0 * q + 1] = -1; // others = all - g_k
      return { columns, transform };
    }
    const started = this.trials.filter((s) => s.volumesSeen > 0 || s === t).map((s) => s.column);
    const ordered = [t.column, ...started.filter((c) => c !== t.column), ...nuisance];
    const q = ordered.length;
    const transform = new Float64Array(q * q);
    for (let i = 0; i < q; i++) transform[i * q + i] = 1;
    return { columns: ordered, transform };
  }

  /** Solves the normal equations of X = Z[:, columns] T and returns the first coefficient row (length V). */
  private solveRow(columns: number[], transform: Float64Array): Float64Array {
    const C = this.capacity;
    const V = this.voxelCount;
    const q = columns.length;
    const p = q; // T is square here
    // Z_s^T Z_s
    const zz = new Float64Array(q * q);
    for (let a = 0; a < q; a++) for (let b = 0; b < q; b++) zz[a * q + b] = this.gram[columns[a] * C + columns[b]];
    // X^T X = T^T zz T
    const tmp = matMul(zz, transform, q, q, p);
    const xtx = matMul(transpose(transform, q, p), tmp, p, q, p);
    const inv = pseudoInverseSymmetric(xtx, p);
    // first row of (X^T X)^+ T^T, a 1 x q vector applied to Z_s^T Y
    const weights = new Float64Array(q);
    for (let j = 0; j < q; j++) {
      let s = 0;
      for (let k = 0; k < p; k++) s += inv[0 * p + k] * transform[j * p + k];
      weights[j] = s;
    }
    const betas = new Float64Array(V);
    for (let j = 0; j < q; j++) {
      const w = weights[j];
      if (w === 0) continue;
      const row = columns[j] * V;
      for (let v = 0; v < V; v++) betas[v] += w * this.zty[row + v];
    }
    return betas;
  }
}

/** Resamples an HRF from one time step to another (linear interpolation), with unit sum. */
export function resampleHrf(hrf: ArrayLike<number>, fromDtSec: number, toDtSec: number): Float64Array {
  const lengthSec = (hrf.length - 1) * fromDtSec;
  const n = Math.floor(lengthSec / toDtSec) + 1;
  const out = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = (i * toDtSec) / fromDtSec;
    const k = Math.min(Math.floor(x), hrf.length - 2);
    const f = x - k;
    out[i] = hrf[k] * (1 - f) + hrf[k + 1] * f;
    sum += out[i];
  }
  if (sum !== 0) for (let i = 0; i < n; i++) out[i] /= sum;
  return out;
}

/**
 * Per-voxel HRF choice (as GLMsingle's library of 20): voxels are grouped by the index of their
 * HRF and each group gets its own online GLM; the betas are merged back into mask order.
 */
export class HrfLibraryGlm {
  private readonly groups: { voxels: Int32Array; glm: OnlineTrialGlm; buffer: Float64Array }[] = [];
  readonly voxelCount: number;

  constructor(trials: TrialSpec[], index: Uint8Array, library: Float32Array, samples: number, dtSec: number, opts: GlmOptions) {
    this.voxelCount = index.length;
    const count = library.length / samples;
    for (let h = 0; h < count; h++) {
      const members: number[] = [];
      for (let v = 0; v < index.length; v++) if (index[v] === h) members.push(v);
      if (members.length === 0) continue;
      const hrf = library.subarray(h * samples, (h + 1) * samples);
      this.groups.push({
        voxels: Int32Array.from(members),
        glm: new OnlineTrialGlm(trials, members.length, { ...opts, hrf, hrfDtSec: dtSec }),
        buffer: new Float64Array(members.length),
      });
    }
  }

  addTrial(spec: TrialSpec): void {
    for (const g of this.groups) g.glm.addTrial(spec);
  }

  addVolume(volIdx: number, acqTimeSec: number, values: Float32Array | Float64Array, motion?: MotionParams, censored = false): RawTrialEstimate[] {
    const parts = this.groups.map((g) => {
      for (let i = 0; i < g.voxels.length; i++) g.buffer[i] = values[g.voxels[i]];
      return g.glm.addVolume(volIdx, acqTimeSec, g.buffer, motion, censored);
    });
    return this.merge(parts);
  }

  finish(lastVolIdx: number): RawTrialEstimate[] {
    return this.merge(this.groups.map((g) => g.glm.finish(lastVolIdx)));
  }

  unstartedTrials(): TrialSpec[] {
    return this.groups[0]?.glm.unstartedTrials() ?? [];
  }

  /** Merges the groups' estimates, which list the same trials in the same order (same design and timing). */
  private merge(parts: RawTrialEstimate[][]): RawTrialEstimate[] {
    if (parts.length === 0) return [];
    return parts[0].map((first, k) => {
      const betas = new Float64Array(this.voxelCount);
      parts.forEach((estimates, g) => {
        const voxels = this.groups[g].voxels;
        const b = estimates[k].betas;
        for (let i = 0; i < voxels.length; i++) betas[voxels[i]] = b[i];
      });
      return { ...first, betas };
    });
  }
}

function matMul(a: Float64Array, b: Float64Array, n: number, m: number, p: number): Float64Array {
  const out = new Float64Array(n * p);
  for (let i = 0; i < n; i++) for (let k = 0; k < m; k++) {
    const x = a[i * m + k];
    if (x === 0) continue;
    for (let j = 0; j < p; j++) out[i * p + j] += x * b[k * p + j];
  }
  return out;
}

function transpose(a: Float64Array, n: number, m: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[j * n + i] = a[i * m + j];
  return out;
}

/**
 * Computes the Moore-Penrose inverse of a symmetric positive semi-definite matrix by Jacobi
 * eigendecomposition. Eigenvalues below 1e-12 x the largest count as zero. So a column that is
 * still all zeros (a trial regressor at its onset volume) gets a zero coefficient, as a
 * minimum-norm least-squares solver would give.
 */
export function pseudoInverseSymmetric(m: Float64Array, n: number): Float64Array {
  const a = Float64Array.from(m);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += a[i * n + j] * a[i * n + j];
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) {
      const apq = a[p * n + q];
      if (Math.abs(apq) < 1e-300) continue;
      const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
      const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1);
      const s = t * c;
      for (let k = 0; k < n; k++) {
        const akp = a[k * n + p];
        const akq = a[k * n + q];
        a[k * n + p] = c * akp - s * akq;
        a[k * n + q] = s * akp + c * akq;
      }
      for (let k = 0; k < n; k++) {
        const apk = a[p * n + k];
        const aqk = a[q * n + k];
        a[p * n + k] = c * apk - s * aqk;
        a[q * n + k] = s * apk + c * aqk;
      }
      for (let k = 0; k < n; k++) {
        const vkp = v[k * n + p];
        const vkq = v[k * n + q];
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
      }
    }
  }
  let maxEig = 0;
  for (let i = 0; i < n; i++) maxEig = Math.max(maxEig, Math.abs(a[i * n + i]));
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const e = a[k * n + k];
    if (Math.abs(e) <= 1e-12 * maxEig || e === 0) continue;
    const inv = 1 / e;
    for (let i = 0; i < n; i++) {
      const vik = v[i * n + k] * inv;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += vik * v[j * n + k];
    }
  }
  return out;
}
