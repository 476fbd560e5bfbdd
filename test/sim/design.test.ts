import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DESIGN_ROWS, designTsv, layoutRun, SLOT_SEC, STIMULUS_SEC, TR_SEC, trialCountForRun } from '../../src/sim/design.ts';

describe('NSD run design', () => {
  test('odd runs have 63 trials, even runs 62', () => {
    assert.equal(trialCountForRun(1), 63);
    assert.equal(trialCountForRun(2), 62);
    let total = 0;
    for (let run = 1; run <= 12; run++) total += trialCountForRun(run);
    assert.equal(total, 750);
  });

  test('trials sit on 4 s slots aligned to TRs', () => {
    const ids = Array.from({ length: 63 }, (_, i) => 100 + i);
    const trials = layoutRun(5, 1, 1, ids);
    assert.equal(trials.length, 63);
    const slots = new Set(trials.map((t) => t.slot));
    assert.equal(slots.size, 63, 'one trial per slot');
    for (const trial of trials) {
      assert.ok(trial.slot >= 0);
      assert.ok(trial.slot < 75);
      assert.equal(trial.onsetSec, trial.slot * SLOT_SEC);
      assert.equal(trial.onsetVolume, trial.slot * 3);
      assert.ok(Math.abs(trial.onsetVolume * TR_SEC - trial.onsetSec) < 1e-9, 'onset on a TR boundary');
      assert.equal(trial.durationSec, STIMULUS_SEC);
    }
    assert.deepEqual(trials.map((t) => t.imageId), ids, 'images keep their presentation order');
  });

  test('design TSV has 225 rows with ids at onsets', () => {
    const ids = Array.from({ length: 62 }, (_, i) => 1 + i);
    const trials = layoutRun(5, 1, 2, ids);
    const text = designTsv(trials);
    const rows = text.trimEnd().split('\n');
    assert.equal(rows.length, DESIGN_ROWS);
    assert.equal(rows.length, 225);
    for (const row of rows) assert.match(row, /^\d+$/);
    const onsets = rows.map(Number).map((v, i) => [v, i]).filter(([v]) => v > 0);
    assert.equal(onsets.length, 62);
    for (const [, row] of onsets) assert.equal(row % 3, 0, `onset row ${row} is a slot start`);
    assert.deepEqual(onsets.map(([v]) => v), ids);
  });

  test('blank slots depend on the seed', () => {
    const ids = Array.from({ length: 63 }, (_, i) => 1 + i);
    const a = layoutRun(1, 1, 1, ids).map((t) => t.slot);
    const b = layoutRun(1, 1, 1, ids).map((t) => t.slot);
    const c = layoutRun(2, 1, 1, ids).map((t) => t.slot);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test('more than 75 images are rejected', () => {
    assert.throws(() => layoutRun(1, 1, 1, Array.from({ length: 76 }, (_, i) => i + 1)), /76 images do not fit/);
  });
});
