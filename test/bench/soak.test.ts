import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak, slope, summarizeSoak, type SoakRun } from '../../src/bench/soak.ts';
import { demoReplay } from '../../src/cli/bench.ts';
import { soakLines } from '../../src/bench/report-md.ts';
import { DEMO_MODEL_DIR } from '../../src/demo/prepare.ts';

test('slope of steady and growing series', () => {
  assert.equal(slope([5, 5, 5, 5]), 0);
  assert.equal(slope([10, 12, 14, 16]), 2);
  assert.equal(slope([7]), 0);
});

test('short soak keeps memory flat', async () => {
  const seen: SoakRun[] = [];
  const result = await runSoak({
    minutes: 0,
    minRuns: 4,
    // 60 volumes per run: enough for several trials to be decoded and rendered.
    replayOnce: () => demoReplay('epi', { kind: 'max' }, 'cpu', DEMO_MODEL_DIR, 60),
    onRun: (r) => seen.push(r),
  });
  assert.equal(result.series.length, 4);
  assert.deepEqual(seen.map((r) => r.run), [1, 2, 3, 4], 'progress reported after every run, in order');
  for (const r of result.series) {
    assert.ok(r.volumes >= 60, `run ${r.run} processed ${r.volumes} volumes`);
    assert.ok(r.trialsDecoded >= 5, `run ${r.run} decoded ${r.trialsDecoded} trials`);
    for (const stage of ['preprocess', 'decode', 'render', 'betaToFirstFrame']) {
      assert.equal(typeof r.p95Ms[stage], 'number', `run ${r.run} has a p95 for ${stage}`);
    }
  }
  // The first run warms caches and loads libraries, so growth is judged from the second run on.
  const steady = result.series.slice(1);
  const heapSlope = slope(steady.map((r) => r.heapUsedMb));
  assert.ok(heapSlope < 1, `heap after collection grows ${heapSlope.toFixed(2)} MiB per run`);
  const rssGrowth = steady[steady.length - 1].rssMb - steady[0].rssMb;
  assert.ok(rssGrowth < 48, `RSS grew ${rssGrowth.toFixed(1)} MiB over ${steady.length - 1} runs`);
  const summary = summarizeSoak(0, result.series, 1);
  assert.equal(summary.runs, 4);
  assert.equal(summary.rssMb.first, result.series[0].rssMb);
  assert.equal(summary.volumes, result.series.reduce((a, r) => a + r.volumes, 0));
});

test('soak markdown lists memory and p95', () => {
  const series: SoakRun[] = [1, 2, 3].map((run) => ({
    run, startedAtSec: (run - 1) * 20, durationSec: 20, volumes: 226, trialsDecoded: 63,
    rssMb: 200 + run, heapUsedMb: 13, arrayBuffersMb: 0.3, p95Ms: { preprocess: 10 * run, betaToFirstFrame: 30 },
  }));
  const text = soakLines({ summary: summarizeSoak(1, series, 60), series });
  assert.match(text, /^3 max-speed replays back to back in 1\.0 min \(678 volumes\)/);
  assert.match(text, /\| RSS \(MiB\) \| 201 \| 203 \| 203 \| 1 \|/);
  assert.match(text, /\| V8 heap in use \(MiB\) \| 13 \| 13 \| 13 \| 0 \|/);
  assert.match(text, /\| preprocess \| 10 \| 30 \|/);
  assert.match(text, /\| betaToFirstFrame \| 30 \| 30 \|/);
});
