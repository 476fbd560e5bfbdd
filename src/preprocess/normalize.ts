/**
 * Per-voxel beta normalisation (z-scores), computed in float64.
 *
 * - `calibration`: against the mean and standard deviation of the model's training betas
 *   (manifest `normalization.mean` / `.std`), so that live inputs match what the model saw.
 * - `running`: against the final betas of this session so far (Welford's algorithm). Until two
 *   final trials exist there is no per-voxel spread, so the pattern is z-scored across voxels
 *   instead; the report's anytime curve shows the effect.
 */
export type NormalizeKind = 'calibration' | 'running' | 'none';

export class BetaNormalizer {
  private readonly kind: NormalizeKind;
  private readonly mean: Float64Array;
  private readonly m2: Float64Array;
  private count = 0;
  private readonly calMean?: Float32Array;
  private readonly calStd?: Float32Array;

  constructor(kind: NormalizeKind, voxelCount: number, calibration?: { mean: Float32Array; std: Float32Array }) {
    this.kind = kind;
    this.mean = new Float64Array(voxelCount);
    this.m2 = new Float64Array(voxelCount);
    if (kind === 'calibration') {
      if (!calibration) throw new Error('calibration normalisation needs the model\'s mean and std arrays');
      this.calMean = calibration.mean;
      this.calStd = calibration.std;
    }
  }

  normalize(betas: Float64Array): Float32Array {
    const n = betas.length;
    const out = new Float32Array(n);
    if (this.kind === 'none') {
      for (let i = 0; i < n; i++) out[i] = betas[i];
      return out;
    }
    if (this.kind === 'calibration') {
      const mu = this.calMean!;
      const sd = this.calStd!;
      for (let i = 0; i < n; i++) out[i] = sd[i] > 0 ? (betas[i] - mu[i]) / sd[i] : 0;
      return out;
    }
    if (this.count < 2) {
      let s = 0;
      let ss = 0;
      for (let i = 0; i < n; i++) { s += betas[i]; ss += betas[i] * betas[i]; }
      const m = s / n;
      const sd = Math.sqrt(Math.max(ss / n - m * m, 0));
      for (let i = 0; i < n; i++) out[i] = sd > 0 ? (betas[i] - m) / sd : 0;
      return out;
    }
    const denom = this.count - 1;
    for (let i = 0; i < n; i++) {
      const sd = Math.sqrt(this.m2[i] / denom);
      out[i] = sd > 0 ? (betas[i] - this.mean[i]) / sd : 0;
    }
    return out;
  }

  /** Adds a final estimate to the running statistics (no effect for other kinds). */
  observeFinal(betas: Float64Array): void {
    if (this.kind !== 'running') return;
    this.count++;
    for (let i = 0; i < betas.length; i++) {
      const d = betas[i] - this.mean[i];
      this.mean[i] += d / this.count;
      this.m2[i] += d * (betas[i] - this.mean[i]);
    }
  }
}
