// Evaluation on a real demo replay through the command line, as a user runs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { ROOT } from '../helpers/data.ts';
import { pythonSkipReason, runPython } from '../helpers/python.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const skip = pythonSkipReason(['numpy', 'scipy', 'torch', 'onnx']);

const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), ...args], {
  encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' }, timeout: 300_000,
});

interface Point { volumesSinceOnset: number; retrievalTop1: number; pixCorrLowLevel: number; trials: number }

test('demo replay report has the evaluation', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-eval-'));
  runPython([join(HERE, 'feature_nets.py'), dir, join(dir, 'unused.u8'), '0', '32']);
  const report = join(dir, 'report.json');
  // 100 candidates: fewer than the 125 bank images (image retrieval draws), more than the 63
  // distinct test images of the run (brain retrieval is clamped, with a warning).
  const r = cli(['replay', '--demo', '--speed', 'max', '--no-dashboard', '--report', report, '--eval-candidates', '100',
    '--feature-net', `clip=${join(dir, 'dynamic.onnx')},size=32`, '--feature-net', `effnet=${join(dir, 'static.onnx')},size=32`]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(readFileSync(report, 'utf8')).summary;

  assert.equal(s.retrievalCandidates, 100);
  assert.equal(s.retrievalChance, 0.01);
  assert.deepEqual(s.evaluation.imageRetrieval, { candidates: 100, available: 125, requested: 100, clamped: false });
  assert.equal(s.brainRetrievalCandidates, 63);
  assert.deepEqual(s.evaluation.brainRetrieval, { candidates: 63, available: 63, requested: 100, clamped: true });
  assert.equal(s.evaluation.seed, 0);
  assert.equal(s.evaluation.draws, 30);
  assert.match(s.evaluation.warnings.join('\n'), /--eval-candidates 100 exceeds the 63 distinct test images/);
  assert.match(r.stdout, /warning: --eval-candidates 100 exceeds/);

  // One point per volume count 1..7 (the demo's trial window). A trial joins a point once it
  // has an estimate from that many volumes, so under load (a superseded decode) a point can
  // contain fewer trials, but the last one contains them all.
  const anytime = s.anytime as Point[];
  assert.deepEqual(anytime.map((p) => p.volumesSinceOnset), [1, 2, 3, 4, 5, 6, 7]);
  assert.ok(anytime.every((p) => p.trials <= s.retrievalTrials), 'no point has more trials than the run');
  const last = anytime[anytime.length - 1];
  assert.equal(last.trials, s.retrievalTrials);
  assert.equal(last.retrievalTop1, s.retrievalTop1, 'the last point holds the final estimates');
  assert.ok(Math.abs(last.pixCorrLowLevel - s.pixCorrLowLevelMean) < 1e-12, `last PixCorr ${last.pixCorrLowLevel} vs ${s.pixCorrLowLevelMean}`);
  assert.ok(anytime.every((p) => Number.isFinite(p.pixCorrLowLevel)), 'PixCorr at every point');
  assert.ok(last.retrievalTop1 > anytime[0].retrievalTop1, 'more volumes, better retrieval');

  assert.equal(s.featureMetrics.clip.metric, 'two-way');
  assert.equal(s.featureMetrics.clip.images, 63);
  assert.ok(s.featureMetrics.clip.value >= 0, `clip ${s.featureMetrics.clip.value}`);
  assert.ok(s.featureMetrics.clip.value <= 1, `clip ${s.featureMetrics.clip.value}`);
  assert.equal(s.featureMetrics.effnet.metric, 'correlation-distance');
  assert.ok(s.featureMetrics.effnet.value >= 0, `effnet ${s.featureMetrics.effnet.value}`);
  assert.ok(s.featureMetrics.effnet.value <= 2, `effnet ${s.featureMetrics.effnet.value}`);

  assert.match(r.stdout, /\| volumes since onset \| 1 \| 2 \| 3 \| 4 \| 5 \| 6 \| 7 \|/);
  assert.match(r.stdout, /\| retrieval top-1 \(N=100\) \|/);
  assert.match(r.stdout, /clip: 2-way [\d.]+% \(63 images\)/);
  const svg = join(dir, 'report.anytime.svg');
  assert.ok(existsSync(svg), 'report.anytime.svg beside the report');
  assert.match(r.stdout, /anytime curve written to .*report\.anytime\.svg/);
  return sharp(svg).metadata().then((meta) => assert.equal(meta.format, 'svg'));
});

test('bad evaluation flags stop the replay', () => {
  const small = cli(['replay', '--demo', '--no-dashboard', '--eval-candidates', '1']);
  assert.equal(small.status, 1);
  assert.match(small.stderr, /Invalid value for --eval-candidates/);
  assert.match(small.stderr, /an integer >= 2/);
  const missing = cli(['replay', '--demo', '--no-dashboard', '--feature-net', 'alexnet2=/no/such/alexnet2.onnx']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /The feature network file for alexnet2 was not found/);
});

test('help documents the evaluation flags', () => {
  const r = cli(['replay', '--help']);
  assert.equal(r.status, 0);
  for (const flag of ['--eval-candidates N', '--eval-draws D', '--eval-seed S', '--feature-net NAME=FILE.onnx']) assert.ok(r.stdout.includes(flag), flag);
});
