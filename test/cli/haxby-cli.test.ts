// The command line end to end on real Haxby runs: fit on two runs, replay a third with the model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAXBY_MASK, haxbyRun, ROOT } from '../helpers/data.ts';

const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), ...args], {
  encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' },
});

test('fit then replay writes a report', () => {
  const dir = mkdtempSync(join(tmpdir(), 'haxby-cli-'));
  const model = join(dir, 'model');
  const fitArgs = ['fit', '--mask', HAXBY_MASK, '--out', model, '--window-sec', '30'];
  for (const r of [1, 2, 3]) fitArgs.push('--bids', haxbyRun(r).bold, '--events', haxbyRun(r).events);
  const fit = cli(fitArgs);
  assert.equal(fit.status, 0, fit.stderr);
  assert.match(fit.stdout, /fitted a ridge classifier on 24 trials from 3 runs, 8 labels/);
  assert.match(fit.stdout, /leave-one-run-out accuracy/);
  for (const f of ['manifest.json', 'classifier.onnx', 'norm_mean.f32', 'norm_std.f32', 'mask.nii.gz']) assert.ok(existsSync(join(model, f)), f);

  const report = join(dir, 'report.json');
  const replay = cli(['replay', '--bids', haxbyRun(4).bold, '--events', haxbyRun(4).events, '--model', model, '--window-sec', '30',
    '--speed', 'max', '--no-dashboard', '--report', report]);
  assert.equal(replay.status, 0, replay.stderr);
  assert.match(replay.stdout, /retrieval top-1: [\d.]+% of 8 trials \(8 candidates, chance 12\.5%\)/);
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.run.volumeCount, 121);
  assert.equal(rep.run.trialCount, 8);
  assert.equal(rep.run.speed, 'max');
  assert.equal(rep.run.motion, false);
  assert.equal(rep.summary.volumesProcessed, 121);
  assert.equal(rep.summary.retrievalCandidates, 8);
  assert.equal(rep.summary.retrievalChance, 0.125);
  assert.equal(rep.trials.length, 8);
  for (const t of rep.trials) {
    assert.ok(Number.isInteger(t.final.retrievalRank), `rank of trial ${t.trialId} is an integer`);
    assert.ok(t.final.retrievalRank >= 1, `rank of trial ${t.trialId} is at least 1`);
    assert.ok(t.final.retrievalRank <= 8, `rank of trial ${t.trialId} is at most 8`);
    assert.equal(t.frames, 0, 'a classifier makes no frames');
    assert.equal(t.final.pixCorr, undefined, 'no image metric without images');
  }
  assert.ok(rep.summary.queues.decode.highWater <= rep.summary.queues.decode.bound, 'decode queue within its bound');
  for (const stage of ['ingest', 'preprocess', 'decode', 'volumeToDecode', 'glm']) {
    assert.ok(rep.summary.latencyMs[stage]?.p95 >= 0, `latency of ${stage}`);
  }
  assert.ok(Array.isArray(rep.summary.anytime), 'anytime curve in the summary');
  assert.ok(rep.summary.anytime.length > 1, 'anytime curve from progressive estimates');
});

test('fit rejects unequal bids and events', () => {
  const r = cli(['fit', '--bids', haxbyRun(1).bold, '--mask', HAXBY_MASK, '--out', join(tmpdir(), 'unused')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /one --events for every --bids/);
  assert.match(r.stderr, /1 --bids, 0 --events/);
});

test('help lists every command', () => {
  const r = cli(['--help']);
  assert.equal(r.status, 0);
  for (const c of ['replay', 'watch', 'serve', 'push', 'convert', 'fit', 'simulate', 'train-demo', 'bank', 'export', 'bench']) {
    assert.match(r.stdout, new RegExp(`\\n  ${c} `), c);
    const h = cli([c, '--help']);
    assert.equal(h.status, 0, `${c} --help: ${h.stderr}`);
    assert.match(h.stdout, new RegExp(`mindeye-rt ${c}`), `${c} --help prints usage`);
  }
});

test('ctrl-c mid-run still writes the report', async () => {
  const { spawn } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'haxby-sigint-'));
  const report = join(dir, 'report.json');
  const child = spawn(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'replay', '--bids', haxbyRun(5).bold, '--events', haxbyRun(5).events,
    '--mask', HAXBY_MASK, '--speed', '10', '--no-dashboard', '--report', report], { env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  // Wait until the run has started, then interrupt it as a user would.
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (existsSync(report) || stdout.length > 0 || Date.now() - started > 4000) { clearInterval(timer); resolve(); }
    }, 100);
    const started = Date.now();
  });
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, stderr);
  assert.match(stderr, /stopping the run now: the report covers the volumes received so far\. Writing the report to /);
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.ok(rep.summary.volumesProcessed > 0, 'some volumes were processed');
  assert.ok(rep.summary.volumesProcessed < 121, `stopped early (${rep.summary.volumesProcessed} volumes)`);
  assert.match(stdout, /volumes: received \d+, processed \d+/);
});
