/**
 * `mindeye-rt bench` run as a user runs it, on a tiny configuration: 30 volumes at max speed,
 * 5 at realtime and the fast peers. The tests read its outputs back: the report schema, a
 * timing for every stage the demo model exercises, the SVG plots and the Markdown budget table.
 * No timed assertions: the figures themselves are not checked, only that they exist.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PYTHON, pythonSkipReason } from '../helpers/python.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/mindeye-rt.js');
const MANIFEST = JSON.parse(readFileSync(join(ROOT, 'models/demo/manifest.json'), 'utf8')) as { heads: Record<string, unknown> };
const pythonSkip = pythonSkipReason(['numpy', 'torch', 'onnx']);

let out: string;
let result: ReturnType<typeof spawnSync>;

function runBench(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [CLI, 'bench', ...args], {
    cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: { ...env, MINDEYE_LOG_LEVEL: 'warn' }, maxBuffer: 32 * 1024 * 1024,
  });
}

before(() => {
  out = mkdtempSync(join(tmpdir(), 'mindeye-bench-test-'));
  // PATH holds only a link to node, so dcm2niix is not found and its peer must be skipped.
  const bin = join(out, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  result = runBench(['--max-volumes', '30', '--realtime-volumes', '5', '--peers', 'dcm2niix,numpy,torch', '--out', out],
    { ...process.env, PATH: bin });
});

after(() => rmSync(out, { recursive: true, force: true }));

function report(): Record<string, any> {
  return JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8'));
}

/** Stages the demo model exercises, from its manifest. */
function expectedStages(): string[] {
  const heads = MANIFEST.heads;
  const stages = ['ingest', 'motion', 'mask', 'glm', 'normalize', 'preprocess'];
  for (const head of ['classifier', 'backbone', 'retrieval', 'lowLevel']) if (heads[head]) stages.push(`decode:${head}`);
  if (heads.prior) stages.push('prior-sampling');
  if (heads.lowLevel && heads.vaeDecoder) stages.push('low-level', 'encode', 'send');
  if (heads.unet) stages.push('img2img-step', 'img2img-decode');
  return stages;
}

function assertPercentiles(value: unknown, label: string): void {
  assert.equal(typeof value, 'object', `${label} is missing`);
  for (const key of ['p50', 'p95', 'p99', 'max']) {
    const x = (value as Record<string, unknown>)[key];
    assert.equal(typeof x, 'number', `${label}.${key} = ${x}`);
    assert.ok(Number.isFinite(x), `${label}.${key} = ${x}`);
    assert.ok((x as number) >= 0, `${label}.${key} = ${x}`);
  }
}

/** Parses an SVG with Python's XML parser; returns the count of each element class per data-stage. */
function parseSvg(file: string): Record<string, Record<string, number>> {
  const script = [
    'import json, sys, xml.etree.ElementTree as ET',
    'root = ET.parse(sys.argv[1]).getroot()',
    'assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag',
    'counts = {}',
    'for e in root.iter():',
    '    stage, cls = e.get("data-stage"), e.get("class")',
    '    if stage is not None and cls is not None:',
    '        counts.setdefault(cls, {}).setdefault(stage, 0)',
    '        counts[cls][stage] += 1',
    'print(json.dumps(counts))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', script, file], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${file} does not parse as SVG: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('bench exits 0 and shows progress', () => {
  assert.equal(result.status, 0, `bench failed: ${result.stderr}`);
  assert.match(String(result.stderr), /max-speed replay: volume \d+\/30/);
  assert.match(String(result.stderr), /max-speed replay: volume 30\/30/);
  assert.match(String(result.stderr), /realtime segment: volume 5\/5/);
  assert.match(String(result.stdout), /results written to .*bench\.json/);
});

test('bench.json has the report schema', () => {
  const r = report();
  for (const key of ['source', 'trSec', 'volumeCount', 'trialCount', 'model', 'device', 'motion', 'speed']) {
    assert.ok(key in r.run, `run.${key}`);
  }
  assert.equal(r.run.motion, true);
  assert.equal(r.run.speed, 'max');
  assert.ok(Array.isArray(r.trials), 'trials is an array');
  assert.ok(r.trials.length > 0, 'trials is empty');
  for (const key of ['trialId', 'stimulusId', 'onsetSec', 'frames']) assert.ok(key in r.trials[0], `trials[0].${key}`);
  const s = r.summary;
  for (const key of ['volumesReceived', 'volumesProcessed', 'volumesDropped', 'throughputVolumesPerSec', 'realtimeFactor', 'peakRssMb']) {
    assert.equal(typeof s[key], 'number', `summary.${key}`);
  }
  assert.equal(s.volumesProcessed, 30);
  assert.equal(typeof s.skipped.img2img, 'number');
  assert.equal(typeof s.skipped.previews, 'number');
  for (const stage of ['preprocess', 'decode', 'render', 'glm', 'betaToFirstFrame']) assertPercentiles(s.latencyMs[stage], `summary.latencyMs.${stage}`);
});

test('bench.json has bench fields', () => {
  const r = report();
  assert.match(r.command, /^mindeye-rt bench --max-volumes 30/);
  assert.ok(!Number.isNaN(Date.parse(r.date)), `date ${r.date}`);
  for (const key of ['cpuModel', 'cpuCores', 'memoryGb', 'gpu', 'node', 'onnxruntime', 'loadAverageStart']) assert.ok(key in r.machine, `machine.${key}`);
  assert.match(r.machine.gpu, /none found|[A-Za-z]/);
  assert.equal(r.grid, 'epi');
  assert.equal(r.budgets.length, 5);
  for (const b of r.budgets) {
    assert.equal(typeof b.path, 'string');
    assert.equal(typeof b.firstBar, 'number', `${b.path}: firstBar`);
    assert.equal(typeof b.measured, 'number', `${b.path}: measured`);
  }
  assert.equal(r.realtime.volumes, 5);
  assert.equal(typeof r.realtime.trialsWithFullImg2img, 'number');
  for (const stage of ['volumeToBetas', 'betaToFirstFrame', 'betaToFinalFrame', 'volumeToFinalFrame']) {
    const row = r.endToEnd.find((e: { stage: string }) => e.stage === stage);
    assertPercentiles(row, `endToEnd ${stage}`);
  }
});

test('every exercised stage has timings', () => {
  const r = report();
  for (const stage of expectedStages()) {
    const row = r.stages.find((e: { stage: string }) => e.stage === stage);
    assertPercentiles(row, `stages ${stage}`);
    assert.ok(row.count > 0, `${stage} count`);
    assertPercentiles(r.summary.latencyMs[stage], `summary.latencyMs.${stage}`);
  }
  assert.ok(!r.stages.some((e: { stage: string }) => e.stage === 'prior-sampling') || MANIFEST.heads.prior, 'no prior timing without a prior head');
});

test('peers report ratios or skip', { skip: pythonSkip }, () => {
  const peers = report().peers;
  assert.match(peers.dcm2niix.skipped, /not installed/);
  assert.match(String(result.stdout), /peer dcm2niix skipped/);
  for (const name of ['numpyGlm', 'torchBackbone']) {
    assert.equal(peers[name].skipped, undefined, `${name} skipped: ${peers[name].skipped}`);
    assert.ok(peers[name].ratio > 0, `${name} ratio ${peers[name].ratio}`);
  }
  // Same inputs and weights: the peers' outputs match ours.
  assert.ok(peers.numpyGlm.betasMaxRelativeDifference < 1e-6, `GLM betas differ by ${peers.numpyGlm.betasMaxRelativeDifference}`);
  assert.ok(peers.torchBackbone.latentMaxRelativeDifference < 1e-4, `latents differ by ${peers.torchBackbone.latentMaxRelativeDifference}`);
});

test('histogram SVG has bars per stage', () => {
  const counts = parseSvg(join(out, 'latency-histograms.svg'));
  for (const stage of expectedStages()) assert.ok((counts.bar?.[stage] ?? 0) >= 1, `no histogram bar for ${stage}`);
});

test('timeline SVG has spans of one trial', () => {
  const counts = parseSvg(join(out, 'trial-timeline.svg'));
  for (const stage of ['decode:backbone', 'low-level', 'encode']) assert.ok((counts.span?.[stage] ?? 0) >= 1, `no timeline span for ${stage}`);
  assert.ok(Object.keys(counts.span ?? {}).length >= 5, `timeline stages: ${Object.keys(counts.span ?? {}).join(', ')}`);
});

test('Markdown has the budget table', () => {
  const md = readFileSync(join(out, 'bench.md'), 'utf8');
  assert.match(md, /\| path \| measured \| first bar \| goal \| vs first bar \| vs goal \|/);
  for (const path of ['preprocess one NSD-grid volume', 'final betas -> first low-level frame', 'replay at max speed', 'replay at realtime', 'peak RSS']) {
    assert.match(md, new RegExp(`\\| ${path}[^\\n]*\\| (meets|misses)`), `budget row ${path}`);
  }
  assert.match(md, /latency-histograms\.svg/);
  assert.match(md, /trial-timeline\.svg/);
});

test('bad flags are rejected before any replay', () => {
  const cases: [string[], RegExp][] = [
    [['--grid', 'mni'], /--grid[\s\S]*epi or nsd/],
    [['--device', 'tpu'], /--device[\s\S]*cpu or cuda/],
    [['--peers', 'numpy,matlab'], /--peers[\s\S]*dcm2niix, nipy, numpy, torch/],
    [['--max-volumes', '0'], /--max-volumes[\s\S]*integer >= 1/],
    [['--realtime-volumes', 'ten'], /--realtime-volumes[\s\S]*integer >= 0/],
    [['--model', join(out, 'no-model')], /no manifest\.json/],
    [['--frobnicate'], /Unknown option '--frobnicate'/],
    [['--soak', '0'], /--soak[\s\S]*positive number of minutes/],
    [['--soak', 'long'], /--soak[\s\S]*positive number of minutes/],
  ];
  writeFileSync(join(out, 'plain-file'), 'not a folder');
  cases.push([['--out', join(out, 'plain-file', 'sub')], /--out[\s\S]*ENOTDIR[\s\S]*fix: pass another --out/]);
  for (const [args, message] of cases) {
    const r = runBench(['--out', join(out, 'bad'), ...args]);
    assert.notEqual(r.status, 0, `${args.join(' ')} was accepted`);
    assert.match(r.stderr, message, `${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /max-speed replay: volume/, `${args.join(' ')} started a replay`);
  }
});
