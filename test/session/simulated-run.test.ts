// The live pipeline on simulated runs whose truth is known: the head motion the simulator applied
// and the single-trial betas it used.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appliedMotion, datasetPaths, runPaths, simulateDataset, type SimSummary } from '../../src/sim/dataset.ts';
import { nsdSource } from '../../src/ingest/nsd.ts';
import { runSession } from '../../src/session/run.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import { registrarFactory } from '../../src/cli/live.ts';
import type { MotionParams, TrialEstimate } from '../../src/events.ts';
import { framewiseDisplacement } from '../../src/preprocess/rigid.ts';

const SEED = 5;

function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0, mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i] / n; mb += b[i] / n; }
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) ** 2; sbb += (b[i] - mb) ** 2; }
  return sab / Math.sqrt(saa * sbb);
}

describe('simulated runs through the live pipeline', () => {
  let root: string;
  let moving: SimSummary;
  let still: SimSummary;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'sim-live-'));
    moving = await simulateDataset({ out: join(root, 'moving'), grid: 'epi', sessions: 0, testRuns: 1, seed: SEED, noise: false });
    still = await simulateDataset({ out: join(root, 'still'), grid: 'epi', sessions: 0, testRuns: 1, seed: SEED, noise: false, motionScale: 0 });
  });

  after(() => rmSync(root, { recursive: true, force: true }));

  test('motion correction recovers the applied motion', async () => {
    const run = moving.runs[0];
    const { source, paths } = nsdSource({ root: moving.out, subject: 1, session: run.session, run: run.run });
    const estimated: MotionParams[] = [];
    const result = await runSession({
      source, device: 'cpu', speed: { kind: 'max' },
      processing: { ...DEFAULT_PROCESSING, motion: 'auto', maskFile: paths.roi, maskRule: 'value == 1' },
      createRegistrar: registrarFactory(DEFAULT_PROCESSING),
      onEvent: (e) => { if (e.type === 'masked-volume') estimated[e.volIdx] = e.motion; },
    });
    assert.equal(result.report.run.motion, true, 'auto turns motion correction on for a simulated run');
    const truth = appliedMotion(SEED, run.session, run.run);
    assert.equal(estimated.length, truth.length);
    let worstMm = 0;
    let worstDeg = 0;
    for (let t = 0; t < truth.length; t++) {
      for (let a = 0; a < 3; a++) {
        worstMm = Math.max(worstMm, Math.abs(estimated[t].translationMm[a] - truth[t].translationMm[a]));
        worstDeg = Math.max(worstDeg, Math.abs(estimated[t].rotationRad[a] - truth[t].rotationRad[a]) * 180 / Math.PI);
      }
    }
    // Framewise displacement of the applied and of the recovered motion, volume by volume.
    const fd = (m: MotionParams[]) => m.slice(1).map((cur, t) => framewiseDisplacement(m[t], cur));
    const fdCorrelation = pearson(fd(estimated), fd(truth));
    console.log(`simulated motion recovery: worst ${worstMm.toFixed(3)} mm, ${worstDeg.toFixed(3)} degrees over ${truth.length} volumes; FD correlation ${fdCorrelation.toFixed(3)}`);
    // NOTE: recovered sub-voxel motions (under 0.6 mm in 3.2 mm voxels) come out smaller than
    // applied, by up to about 0.25 mm, because both the simulator and the corrector interpolate
    // trilinearly. Real EPI with known transforms meets 0.1 mm (test/preprocess/motion.test.ts).
    assert.ok(worstMm < 0.35, `translation error ${worstMm} mm`);
    assert.ok(worstDeg < 0.3, `rotation error ${worstDeg} degrees`);
    assert.ok(fdCorrelation > 0.8, `FD correlation ${fdCorrelation}`);
  });

  test('lsa final betas match the ground truth', async () => {
    const run = still.runs[0];
    const { source } = nsdSource({ root: still.out, subject: 1, session: run.session, run: run.run });
    const finals = new Map<number, TrialEstimate>();
    // Betas are in signal units; the simulator's are in percent signal change, so each voxel is
    // divided by its mean over the run before comparing.
    let voxelSums: Float64Array | undefined;
    let volumes = 0;
    await runSession({
      source, device: 'cpu', speed: { kind: 'max' },
      processing: { ...DEFAULT_PROCESSING, glm: 'lsa', windowSec: 30, motion: 'off', maskFile: datasetPaths(still.out).roi, maskRule: 'value == 1' },
      onEvent: (e) => {
        if (e.type === 'trial-estimate' && e.final) finals.set(e.trialId, e);
        if (e.type === 'masked-volume') {
          voxelSums ??= new Float64Array(e.values.length);
          for (let v = 0; v < e.values.length; v++) voxelSums[v] += e.values[v];
          volumes++;
        }
      },
    });
    const paths = runPaths(still.out, run.session, run.run);
    const meta = JSON.parse(readFileSync(paths.betasJson, 'utf8')) as { shape: [number, number] };
    const raw = readFileSync(paths.betas);
    const truth = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const [trialCount, voxelCount] = meta.shape;
    assert.equal(finals.size, trialCount, 'every trial has a final estimate');
    const correlations: number[] = [];
    for (let trial = 0; trial < trialCount; trial++) {
      const estimate = finals.get(trial)!;
      assert.equal(estimate.betas.length, voxelCount);
      const psc = Float64Array.from(estimate.betas, (b, v) => (100 * b) / (voxelSums![v] / volumes));
      correlations.push(pearson(psc, truth.subarray(trial * voxelCount, (trial + 1) * voxelCount)));
    }
    const sorted = [...correlations].sort((a, b) => a - b);
    console.log(`live final betas vs ground truth: median r ${sorted[sorted.length >> 1].toFixed(3)}, min r ${sorted[0].toFixed(3)}`);
    // Least-squares-all is the simulator's own model, so on a noise-free run it recovers every
    // trial up to int16 rounding. Rounding matters most for the last trials, which have few
    // volumes after them. Least-squares-separate would lump the other trials into one regressor.
    assert.ok(sorted[sorted.length >> 1] > 0.99, `median correlation ${sorted[sorted.length >> 1]}`);
    assert.ok(sorted[0] > 0.95, `lowest correlation ${sorted[0]}`);
  });
});
