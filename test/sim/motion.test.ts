import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNifti } from '../../src/io/nifti.ts';
import { datasetPaths, runPaths, simulateDataset } from '../../src/sim/dataset.ts';
import { pythonSkipReason, runPython } from '../helpers/python.ts';

// A noise-free run with three times the default motion, against the same run without motion.

describe('applied head motion', () => {
  let root: string;
  let still: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'mindeye-sim-motion-'));
    still = join(root, 'still');
    await simulateDataset({ out: join(root, 'moving'), grid: 'epi', sessions: 0, testRuns: 1, seed: 5, noise: false, motionScale: 3 });
    await simulateDataset({ out: still, grid: 'epi', sessions: 0, testRuns: 1, seed: 5, noise: false, motionScale: 0 });
  });

  after(() => rmSync(root, { recursive: true, force: true }));

  test('matches an independent resampling', (t) => {
    const skip = pythonSkipReason(['numpy', 'scipy', 'nibabel']);
    if (skip !== undefined) {
      t.skip(skip);
      return;
    }
    const moving = runPaths(join(root, 'moving'), 1, 1);
    const output = runPython([
      new URL('./motion_reference.py', import.meta.url).pathname,
      moving.timeseries, runPaths(still, 1, 1).timeseries, datasetPaths(join(root, 'moving')).brainMask, moving.motion, '5',
    ]);
    const result = JSON.parse(output) as { maxAbsDiff: number; maxZeroMismatchFraction: number };
    // Both sides start from int16 values, so rounding alone allows a difference just under 1.
    assert.ok(result.maxAbsDiff <= 1, `max difference ${result.maxAbsDiff}`);
    assert.ok(result.maxZeroMismatchFraction < 0.001, `brain edge differs in ${(100 * result.maxZeroMismatchFraction).toFixed(2)} % of voxels`);
  });

  test('is large enough to correct', () => {
    const rows = readFileSync(runPaths(join(root, 'moving'), 1, 1).motion, 'utf8').trimEnd().split('\n').slice(1).map((line) => line.split('\t').map(Number));
    const maxTranslationMm = Math.max(...rows.map((r) => Math.hypot(r[0], r[1], r[2])));
    assert.ok(maxTranslationMm > 0.5, `largest translation ${maxTranslationMm.toFixed(2)} mm`);
  });

  test('leaves volume 0 unmoved', () => {
    const moving = readNifti(runPaths(join(root, 'moving'), 1, 1).timeseries);
    const reference = readNifti(runPaths(still, 1, 1).timeseries);
    const n = moving.header.shape[0] * moving.header.shape[1] * moving.header.shape[2];
    let differing = 0;
    for (let i = 0; i < n; i++) if (moving.data[i] !== reference.data[i]) differing++;
    assert.equal(differing, 0);
  });

  test('keeps moved volumes inside the brain margin', () => {
    const moving = readNifti(runPaths(join(root, 'moving'), 1, 1).timeseries);
    const brain = readNifti(datasetPaths(join(root, 'moving')).brainMask);
    const n = brain.data.length;
    let nonZero = 0, inBrain = 0;
    for (let v = 1; v < moving.header.volumes; v++) {
      for (let i = 0; i < n; i++) {
        if (moving.data[v * n + i] === 0) continue;
        nonZero++;
        if (brain.data[i] === 1) inBrain++;
      }
    }
    assert.ok(inBrain / nonZero > 0.97, `${(100 * inBrain / nonZero).toFixed(1)} % of non-zero voxels inside the reference brain`);
  });
});
