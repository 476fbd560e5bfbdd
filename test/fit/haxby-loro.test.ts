// Leave-one-run-out decoding of the real Haxby et al. (2001) runs through the live path: fit a
// ridge classifier on 11 runs with the same pipeline that replays, replay the 12th at max speed
// with that model, and score the block decodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fitLabelModel } from '../../src/fit/fit.ts';
import { bidsSource } from '../../src/ingest/bids.ts';
import { runSession } from '../../src/session/run.ts';
import { DEFAULT_PROCESSING, type ProcessingOptions } from '../../src/session/options.ts';
import { HAXBY_MASK, haxbyRun } from '../helpers/data.ts';

// Haxby blocks last 22.5 s with 12.5 s or more of rest between them, so a window 30 s past the
// offset lets each block's response and undershoot into its estimate.
const processing: ProcessingOptions = { ...DEFAULT_PROCESSING, windowSec: 30, maskFile: HAXBY_MASK };

test('haxby leave-one-run-out decoding beats chance', async () => {
  const root = mkdtempSync(join(tmpdir(), 'haxby-loro-'));
  let correct = 0;
  let total = 0;
  const perRun: string[] = [];
  for (let held = 1; held <= 12; held++) {
    const train = [];
    for (let r = 1; r <= 12; r++) if (r !== held) train.push(haxbyRun(r));
    const outDir = join(root, `model-${held}`);
    await fitLabelModel({ runs: train, processing, maskFile: HAXBY_MASK, outDir, alpha: 'auto' });
    const result = await runSession({
      source: bidsSource(haxbyRun(held)), processing: { ...processing, normalize: 'auto' }, modelDir: outDir,
      device: 'cpu', speed: { kind: 'max' },
    });
    await result.model?.close();
    const trials = result.report.trials;
    assert.equal(trials.length, 8, `run ${held} has 8 blocks`);
    const hits = trials.filter((t) => t.final?.retrievalRank === 1).length;
    for (const t of trials) assert.ok(t.final?.retrievalRank !== undefined, `run ${held} block ${t.trialId} was decoded`);
    correct += hits;
    total += trials.length;
    perRun.push(`${hits}/8`);
  }
  const accuracy = correct / total;
  console.log(`Haxby leave-one-run-out block accuracy: ${(accuracy * 100).toFixed(1)}% (${correct}/${total}; chance 12.5%); per run ${perRun.join(' ')}`);
  assert.equal(total, 96);
  assert.ok(accuracy >= 0.35, `accuracy ${accuracy} below the 0.35 bar`);
});
