import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import type { Decoded } from '../../src/events.ts';
import { anytimeCurve, anytimeMarkdown, anytimeSvg, decodeKey } from '../../src/eval/anytime.ts';
import { ReportCollector } from '../../src/session/report.ts';

function decoded(trialId: number, volumesSinceOnset: number, trueRank: number, final = false, volIdx = trialId * 10 + volumesSinceOnset): Decoded {
  return {
    type: 'decoded', runId: 'r', volIdx, receivedAtMs: 0, trialId, stimulusId: `s${trialId}`, final, volumesSinceOnset,
    estimatedAtMs: 0, decodedAtMs: 0, topK: [], trueRank, candidateCount: 10,
  };
}

const exact = { candidates: 10, draws: 30, seed: 0 };

test('curve carries estimates forward', () => {
  // Trial 0: wrong at 1 and 2 volumes, right at 3 (final). Trial 1: its window closed after 2 volumes.
  const decodes = [
    decoded(0, 1, 4), decoded(1, 1, 1), decoded(0, 2, 2), decoded(1, 2, 1, true), decoded(0, 3, 1, true),
  ];
  const points = anytimeCurve({ decodes, include: () => true, retrieval: exact });
  assert.deepEqual(points.map((p) => p.volumesSinceOnset), [1, 2, 3]);
  assert.deepEqual(points.map((p) => p.retrievalTop1), [0.5, 0.5, 1]);
  assert.deepEqual(points.map((p) => p.trials), [2, 2, 2]);
});

test('final decode wins a tie', () => {
  // The run ended: trial 0 got a provisional and a final decode of the same volume.
  const decodes = [decoded(0, 4, 3, false, 40), decoded(0, 4, 1, true, 40), decoded(1, 4, 2, true)];
  const points = anytimeCurve({ decodes, include: () => true, retrieval: exact });
  assert.equal(points.length, 1);
  assert.equal(points[0].trials, 2, 'one estimate per trial');
  assert.equal(points[0].retrievalTop1, 0.5);
});

test('late trials join when decoded', () => {
  const decodes = [decoded(0, 1, 1), decoded(0, 2, 1, true), decoded(1, 2, 5, true)];
  const points = anytimeCurve({ decodes, include: () => true, retrieval: exact });
  assert.deepEqual(points.map((p) => p.trials), [1, 2]);
});

test('excluded trials and PixCorr keys', () => {
  const decodes = [decoded(0, 1, 1), decoded(0, 2, 1, true), decoded(1, 1, 1), decoded(1, 2, 1, true)];
  const pix = new Map([[decodeKey(decodes[0]), 0.1], [decodeKey(decodes[1]), 0.3]]);
  const points = anytimeCurve({ decodes, include: (id) => id === 0, retrieval: exact, pixCorrLowLevel: pix });
  assert.deepEqual(points.map((p) => p.pixCorrLowLevel), [0.1, 0.3]);
  assert.deepEqual(points.map((p) => p.trials), [1, 1]);
  const noRetrieval = anytimeCurve({ decodes, include: () => true });
  assert.equal(noRetrieval[0].retrievalTop1, undefined, 'no retrieval settings, no top-1');
});

test('final point equals summary top-1', () => {
  // 40 trials, 7 volumes each, candidates drawn 20 of 125: the last point and the summary use the same draws.
  const collector = new ReportCollector();
  const trials = Array.from({ length: 40 }, (_, trialId) => ({ trialId, onsetSec: trialId * 8, durationSec: 3, stimulusId: `s${trialId}`, testImage: true }));
  collector.onEvent({ type: 'run-info', runId: 'r', trSec: 1.333, shape: [2, 2, 2], affine: new Float64Array(16), source: 'test', motionCorrection: false, trials });
  collector.evaluation.settings = { candidates: 20, draws: 30, seed: 4 };
  for (const t of trials) {
    for (let k = 1; k <= 7; k++) {
      const rank = 1 + ((t.trialId * 7 + k * 13) % (k < 5 ? 60 : 8));
      collector.onEvent({ ...decoded(t.trialId, k, rank, k === 7), candidateCount: 125 });
    }
  }
  const report = collector.build({ source: 'test', model: 'none', device: 'cpu', motion: false, speed: 'max' }, 1000);
  const summary = report.summary as { anytime: Array<{ volumesSinceOnset: number; retrievalTop1: number; trials: number }>; retrievalTop1: number; retrievalCandidates: number; evaluation: unknown };
  assert.deepEqual(summary.anytime.map((p) => p.volumesSinceOnset), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(summary.anytime[6].retrievalTop1, summary.retrievalTop1);
  assert.equal(summary.anytime[6].trials, 40);
  assert.equal(summary.retrievalCandidates, 20);
  assert.deepEqual(summary.evaluation, { seed: 4, draws: 30, imageRetrieval: { candidates: 20, available: 125, requested: 20, clamped: false } });
});

test('request above the pool is clamped', () => {
  const collector = new ReportCollector();
  collector.onEvent({ type: 'run-info', runId: 'r', trSec: 1, shape: [2, 2, 2], affine: new Float64Array(16), source: 'test', motionCorrection: false, trials: [{ trialId: 0, onsetSec: 0, durationSec: 1, stimulusId: 's0' }] });
  collector.evaluation.settings = { candidates: 300, draws: 30, seed: 0 };
  collector.onEvent(decoded(0, 1, 1, true));
  const summary = collector.build({ source: 'test', model: 'none', device: 'cpu', motion: false, speed: 'max' }, 1000).summary as Record<string, any>;
  assert.equal(summary.retrievalCandidates, 10);
  assert.equal(summary.retrievalChance, 0.1);
  assert.deepEqual(summary.evaluation.imageRetrieval, { candidates: 10, available: 10, requested: 300, clamped: true });
  assert.match(summary.evaluation.warnings[0], /--eval-candidates 300 exceeds the 10 retrieval candidates/);
});

test('Markdown table and SVG of the curve', async () => {
  const points = [
    { volumesSinceOnset: 1, retrievalTop1: 0.01, pixCorrLowLevel: -0.05, trials: 3 },
    { volumesSinceOnset: 2, retrievalTop1: 0.2, pixCorrLowLevel: 0.3, trials: 3 },
  ];
  const table = anytimeMarkdown(points, 100).split('\n');
  assert.equal(table[0], '| volumes since onset | 1 | 2 |');
  assert.equal(table[1], '|---|---:|---:|');
  assert.equal(table[2], '| retrieval top-1 (N=100) | 1.0% | 20.0% |');
  assert.equal(table[3], '| low-level PixCorr | -0.050 | 0.300 |');
  assert.equal(table[4], '| trials | 3 | 3 |');

  const svg = anytimeSvg(points, { title: 'a <run> & more', chance: 0.01, trSec: 1.5 });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /a &lt;run&gt; &amp; more/);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 3, 'top-1, PixCorr and chance lines');
  assert.match(svg, /1 volume = 1.500 s/);
  // sharp (librsvg) renders it, so the SVG is well formed.
  const meta = await sharp(Buffer.from(svg)).metadata();
  assert.equal(meta.width, 700);
});
