// The numpy least-squares-separate betas of tools/demo/data.py (`train-demo --betas lss`). On a
// noise-free series built from the same HRF and drift model, with one amplitude per voxel for
// every trial (the case that LSS fits exactly), they must return that amplitude. Wrong onsets
// must not fit, and volumes after a trial's window must not change its beta.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const TOOLS = fileURLToPath(new URL('../../tools/demo', import.meta.url));

const SCRIPT = `
import json, sys
import numpy as np
sys.path.insert(0, ${JSON.stringify(TOOLS)})
from data import TR_SEC, lss_betas, spm_hrf

rng = np.random.default_rng(5)
volumes, voxels = 226, 7
onsets = [4.0 * slot for slot in range(0, 70, 3)]
truth = np.tile(rng.normal(2.0, 1.0, size=voxels), (len(onsets), 1))
dt = TR_SEC / 16
hrf = spm_hrf(dt)
fine = np.arange(int(np.ceil(volumes * TR_SEC / dt)) + 1) * dt
index = np.round(np.arange(volumes) * TR_SEC / dt).astype(int)
series = np.zeros((voxels, volumes))
for k, onset in enumerate(onsets):
    boxcar = ((fine >= onset) & (fine < onset + 3.0)).astype(float)
    series += np.outer(truth[k], np.convolve(boxcar, hrf)[:len(fine)][index])
x = np.linspace(-1, 1, volumes)
series += 1000 + 20 * x + 5 * (1.5 * x * x - 0.5)
exact = lss_betas(series, onsets)
shifted = lss_betas(series, [o + 1.5 for o in onsets])
# Trial 0's window ends at 0 + 3 + 5 s, that is volume 6; a spike at volume 20 lies outside it.
spiked = series.copy()
spiked[:, 20] += 500
after_window = lss_betas(spiked, onsets)
print(json.dumps({'exact': float(np.abs(exact - truth).max()), 'shifted': float(np.abs(shifted - truth).max()),
                  'firstTrialChange': float(np.abs(after_window[0] - exact[0]).max()),
                  'laterTrialChange': float(np.abs(after_window[5] - exact[5]).max()), 'shape': list(exact.shape)}))
`;

test('lss betas recover noise-free amplitudes', () => {
  const result = spawnSync('/usr/bin/python3', ['-c', SCRIPT], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const errors = JSON.parse(result.stdout) as { exact: number; shifted: number; firstTrialChange: number; laterTrialChange: number; shape: number[] };
  assert.deepEqual(errors.shape, [24, 7]);
  assert.ok(errors.exact < 1e-6, `max error ${errors.exact}`);
  assert.ok(errors.shifted > 0.05, `onsets shifted by 1.5 s still fit: max error ${errors.shifted}`);
  assert.ok(errors.firstTrialChange < 1e-9, `a volume after trial 0's window changed its beta by ${errors.firstTrialChange}`);
  assert.ok(errors.laterTrialChange > 0.01, 'a trial whose window holds the spike ignored it');
});
