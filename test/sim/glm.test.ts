import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNifti } from '../../src/io/nifti.ts';
import { datasetPaths, runPaths, simulateDataset, type SimSummary } from '../../src/sim/dataset.ts';

// Offline OLS check: a noise-free, motion-free run must give back the ground-truth betas.

const TR_SEC = 4 / 3;

/** SPM canonical HRF integral, written out independently of src/sim/hrf.ts. */
function hrfIntegral(tSec: number): number {
  if (tSec <= 0) return 0;
  const t = Math.min(tSec, 32);
  const erlang = (k: number) => {
    let term = 1, sum = 1;
    for (let i = 1; i < k; i++) { term *= t / i; sum += term; }
    return 1 - Math.exp(-t) * sum;
  };
  return erlang(6) - erlang(16) / 6;
}

function boxcar3(tSec: number): number {
  return hrfIntegral(tSec) - (tSec > 3 ? hrfIntegral(tSec - 3) : 0);
}

function normalMatrix(design: Float64Array[], columns: number): Float64Array {
  const xtx = new Float64Array(columns * columns);
  for (const row of design) for (let a = 0; a < columns; a++) for (let b = 0; b < columns; b++) xtx[a * columns + b] += row[a] * row[b];
  return xtx;
}

/** Cholesky factor L (lower, row-major) of a symmetric positive definite matrix. */
function cholesky(matrix: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = matrix[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i === j ? Math.sqrt(s) : s / l[j * n + j];
    }
  }
  return l;
}

/** Solves L L' b = rhs. */
function choleskySolve(l: Float64Array, n: number, rhs: Float64Array): Float64Array {
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = rhs[i];
    for (let k = 0; k < i; k++) s -= l[i * n + k] * z[k];
    z[i] = s / l[i * n + i];
  }
  const b = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = z[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * b[k];
    b[i] = s / l[i * n + i];
  }
  return b;
}

/** Solves min |X b - y| for many y at once (normal equations, Cholesky, float64). */
function leastSquares(design: Float64Array[], columns: number, targets: Float64Array[]): Float64Array[] {
  const l = cholesky(normalMatrix(design, columns), columns);
  return targets.map((y) => {
    const xty = new Float64Array(columns);
    for (let r = 0; r < design.length; r++) for (let c = 0; c < columns; c++) xty[c] += design[r][c] * y[r];
    return choleskySolve(l, columns, xty);
  });
}

/** Diagonal of (X'X)^-1, the variance factor of each coefficient. */
function inverseNormalDiagonal(design: Float64Array[], columns: number): Float64Array {
  const l = cholesky(normalMatrix(design, columns), columns);
  return Float64Array.from({ length: columns }, (_, c) => {
    const unit = new Float64Array(columns);
    unit[c] = 1;
    return choleskySolve(l, columns, unit)[c];
  });
}

describe('ground-truth betas', () => {
  let root: string;
  let summary: SimSummary;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'mindeye-sim-glm-'));
    summary = await simulateDataset({ out: root, grid: 'epi', sessions: 0, testRuns: 1, seed: 3, noise: false, motionScale: 0 });
  });

  after(() => rmSync(root, { recursive: true, force: true }));

  test('match an offline OLS fit of a noise-free run', () => {
    const run = summary.runs[0];
    const paths = runPaths(root, run.session, run.run);
    const series = readNifti(paths.timeseries);
    const roi = readNifti(datasetPaths(root).roi);
    const n = roi.data.length;
    const volumes = series.header.volumes;
    const meta = JSON.parse(readFileSync(paths.betasJson, 'utf8')) as { shape: [number, number]; trials: Array<{ onsetSec: number }> };
    const raw = readFileSync(paths.betas);
    const truth = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const [trialCount, voxelCount] = meta.shape;

    // Design from the design TSV: one regressor per trial (peak 1) plus an intercept.
    const onsets = readFileSync(paths.design, 'utf8').trimEnd().split('\n').map(Number)
      .map((id, row) => (id > 0 ? row * TR_SEC : -1)).filter((t) => t >= 0);
    assert.equal(onsets.length, trialCount);
    let peak = 0;
    for (let t = 0; t < 40; t += 0.001) peak = Math.max(peak, boxcar3(t));
    const design = Array.from({ length: volumes }, (_, v) => {
      const row = new Float64Array(trialCount + 1);
      onsets.forEach((onset, trial) => { row[trial] = boxcar3(v * TR_SEC - onset) / peak; });
      row[trialCount] = 1;
      return row;
    });

    const voxels: number[] = [];
    for (let i = 0; i < n; i++) if (roi.data[i] === 1) voxels.push(i);
    assert.equal(voxels.length, voxelCount);
    const targets = voxels.map((index) => Float64Array.from({ length: volumes }, (_, v) => series.data[v * n + index]));
    const fits = leastSquares(design, trialCount + 1, targets);

    // The only difference left is the int16 rounding of the time series: uniform noise with a
    // standard deviation of 1/sqrt(12) units, which the fit passes on with the design's
    // variance factor (X'X)^-1_ii. Allow 6 standard deviations of that, per voxel and trial.
    const inverseDiagonal = inverseNormalDiagonal(design, trialCount + 1);
    let maxAbsBeta = 0, maxAbsError = 0, worstRatio = 0;
    fits.forEach((coef, v) => {
      const baseline = coef[trialCount];
      for (let trial = 0; trial < trialCount; trial++) {
        const estimate = (100 * coef[trial]) / baseline;
        const expected = truth[trial * voxelCount + v];
        const roundingSd = (100 / baseline) * Math.sqrt(1 / 12) * Math.sqrt(inverseDiagonal[trial]);
        const error = Math.abs(estimate - expected);
        maxAbsBeta = Math.max(maxAbsBeta, Math.abs(expected));
        maxAbsError = Math.max(maxAbsError, error);
        worstRatio = Math.max(worstRatio, error / roundingSd);
      }
    });
    assert.ok(worstRatio <= 6, `an error reaches ${worstRatio.toFixed(1)} rounding standard deviations`);
    assert.ok(maxAbsError <= 0.05 * maxAbsBeta, `max error ${maxAbsError.toFixed(4)} PSC, max beta ${maxAbsBeta.toFixed(2)} PSC`);
  });

  test('noise-free betas vary across images', () => {
    const run = summary.runs[0];
    const raw = readFileSync(runPaths(root, run.session, run.run).betas);
    const truth = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const voxelCount = summary.roiVoxels;
    let sd = 0;
    for (let v = 0; v < voxelCount; v++) {
      let mean = 0;
      for (let t = 0; t < run.trials; t++) mean += truth[t * voxelCount + v] / run.trials;
      let variance = 0;
      for (let t = 0; t < run.trials; t++) variance += (truth[t * voxelCount + v] - mean) ** 2 / run.trials;
      sd += Math.sqrt(variance) / voxelCount;
    }
    assert.ok(sd > 0.3, `mean across-image standard deviation ${sd.toFixed(3)} PSC`);
  });
});
