// The session record: write-ahead order, lossless volume storage, repair after a kill, reading
// back a damaged record, and replaying a record in its recorded order with its live trials.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { bidsSource } from '../../src/ingest/bids.ts';
import { readNifti, readNiftiHeader } from '../../src/io/nifti.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import { SessionRecorder, losslessDtype, readJsonLines, readRecord, volumeFileName } from '../../src/session/record.ts';
import { runSession } from '../../src/session/run.ts';
import type { PipelineEvent, PipelineWarning, RunInfo } from '../../src/events.ts';
import { HAXBY_MASK, haxbyRun, ROOT } from '../helpers/data.ts';

const CLI = join(ROOT, 'bin/mindeye-rt.js');
const ENV = { ...process.env, MINDEYE_LOG_LEVEL: 'error' };
const PROCESSING = { ...DEFAULT_PROCESSING, maskFile: HAXBY_MASK, motion: 'off' as const };

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'record-test-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs Haxby run 4 through the session with a recorder wired as live sessions wire it. */
async function recordHaxbyRun(record: string, onEvent?: (e: PipelineEvent, recorder: SessionRecorder) => void) {
  const recorder = new SessionRecorder(record, { processing: PROCESSING, command: 'test' });
  try {
    return await runSession({
      source: bidsSource(haxbyRun(4)), processing: PROCESSING, device: 'cpu', speed: { kind: 'max' },
      writeAhead: (v) => { recorder.writeVolume(v); },
      onEvent: (e) => {
        onEvent?.(e, recorder);
        recorder.onEvent(e);
      },
    });
  } finally {
    recorder.close();
  }
}

test('volume on disk before the pipeline sees it', async () => {
  const record = join(dir, 'write-ahead');
  let checked = 0;
  const result = await recordHaxbyRun(record, (e) => {
    if (e.type !== 'volume' && e.type !== 'masked-volume') return;
    const file = join(record, 'volumes', volumeFileName(e.volIdx));
    assert.ok(existsSync(file), `volume ${e.volIdx} is on disk when the ${e.type} event is published`);
    const lines = readJsonLines<{ type: string; volIdx: number }>(join(record, 'events.jsonl')).lines;
    assert.ok(lines.some((l) => l.type === 'volume' && l.volIdx === e.volIdx), `volume ${e.volIdx} has its line before the ${e.type} event`);
    checked++;
  });
  assert.equal(result.report.summary.volumesProcessed, 121);
  assert.equal(checked, 242, 'every volume and masked volume checked');
});

test('int16 volumes stored as int16', () => {
  const record = join(dir, 'write-ahead');
  const header = readNiftiHeader(join(record, 'volumes', volumeFileName(5)));
  assert.equal(header.datatypeCode, 4, 'int16 NIfTI datatype');
  assert.equal(statSync(join(record, 'volumes', volumeFileName(5))).size, 352 + 40 * 20 * 2);
  const original = readNifti(haxbyRun(4).bold);
  const stored = readNifti(join(record, 'volumes', volumeFileName(5)));
  assert.deepEqual(stored.data, original.data.subarray(5 * 800, 6 * 800), 'stored values equal the received values');
  assert.deepEqual(Array.from(stored.header.affine), Array.from(original.header.affine));
  const line = readJsonLines<{ type: string; volIdx: number; dtype: string; receivedAtEpochMs: number; acqTimeSec: number }>(join(record, 'events.jsonl'))
    .lines.find((l) => l.type === 'volume' && l.volIdx === 5)!;
  assert.equal(line.dtype, 'int16');
  assert.equal(line.acqTimeSec, 12.5);
  assert.ok(Math.abs(line.receivedAtEpochMs - Date.now()) < 3_600_000, 'receive time on the epoch clock');
});

test('lossless dtype choice', () => {
  assert.equal(losslessDtype(Float32Array.from([0, -5, 32767])), 'int16');
  assert.equal(losslessDtype(Float32Array.from([0, 40000])), 'uint16');
  assert.equal(losslessDtype(Float32Array.from([-1, 40000])), 'float32');
  assert.equal(losslessDtype(Float32Array.from([1.5, 2])), 'float32');
  assert.equal(losslessDtype(Float32Array.from([Number.NaN])), 'float32');
});

test('failed volume write warns and processing continues', async () => {
  const record = join(dir, 'unwritable');
  const warnings: PipelineWarning[] = [];
  const result = await recordHaxbyRun(record, (e) => {
    if (e.type === 'run-info') {
      // The volumes folder disappears under the session (a removed disk, a full quota).
      rmSync(join(record, 'volumes'), { recursive: true, force: true });
      writeFileSync(join(record, 'volumes'), 'not a folder');
    }
    if (e.type === 'warning') warnings.push(e);
  });
  assert.equal(result.report.summary.volumesProcessed, 121, 'every volume still processed');
  const failed = warnings.filter((w) => w.code === 'RECORD_WRITE_FAILED');
  assert.equal(failed.length, 121, 'one warning per unrecorded volume');
  assert.match(failed[0].message, /volume 0 could not be recorded/);
  assert.equal(result.report.summary.volumesNotRecorded, 121);
  assert.ok((result.report.summary.problems as string[]).some((p) => p.includes('the session record lacks volume 0')), 'the report lists the problem');
});

test('partial last line tolerated and reported', () => {
  const file = join(dir, 'partial.jsonl');
  writeFileSync(file, '{"a":1}\n{"a":2}\nnot json\n{"a":3}\n{"a":');
  const read = readJsonLines<{ a: number }>(file);
  assert.deepEqual(read.lines.map((l) => l.a), [1, 2, 3]);
  assert.equal(read.partialTail, true);
  assert.deepEqual(read.invalidLines.sort(), [3, 5]);
  assert.deepEqual(readJsonLines(join(dir, 'absent.jsonl')), { lines: [], invalidLines: [], partialTail: false });
});

test('recorder repairs what a kill left', () => {
  const record = join(dir, 'killed');
  const first = new SessionRecorder(record);
  first.note({ type: 'trigger', pulseIndex: 0 });
  first.close();
  mkdirSync(join(record, 'volumes'));
  // What a kill -9 can leave: a temp volume, a half line, a betas row without its trial line.
  writeFileSync(join(record, 'volumes', 'vol_000007.nii.tmp'), 'half a volume');
  appendFileSync(join(record, 'events.jsonl'), '{"type":"volume","volIdx":');
  writeFileSync(join(record, 'trials.jsonl'), JSON.stringify({ trialId: 0, stimulusId: 'cat', row: 0, voxels: 3 }) + '\n{"trialId":1,');
  writeFileSync(join(record, 'betas_final.f32'), Buffer.alloc(4 * 3 * 2 + 5));

  const second = new SessionRecorder(record);
  second.close();
  assert.equal(second.repairs.length, 4, second.repairs.join('\n'));
  assert.ok(!existsSync(join(record, 'volumes', 'vol_000007.nii.tmp')), 'temp volume removed');
  assert.equal(statSync(join(record, 'betas_final.f32')).size, 12, 'betas cut back to the rows with a trial line');
  const events = readJsonLines<{ type: string; resumed?: boolean }>(join(record, 'events.jsonl'));
  assert.equal(events.partialTail, false, 'the half line is gone, so appends start on a fresh line');
  assert.deepEqual(events.invalidLines, []);
  assert.deepEqual(events.lines.map((l) => l.type), ['record-start', 'trigger']);
  assert.equal(readJsonLines(join(record, 'trials.jsonl')).lines.length, 1);
});

test('not a record rejected with the fix', () => {
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  assert.throws(() => readRecord(empty), (err: Error & { details?: { fix?: string } }) => {
    assert.match(err.message, /run\.json is missing/);
    assert.match(err.details?.fix ?? '', /--record-to/);
    return true;
  });
  writeFileSync(join(empty, 'run.json'), '{"format": "mindeye-rt-record/1", "shape":');
  assert.throws(() => readRecord(empty), /run\.json is not valid JSON/);
  writeFileSync(join(empty, 'run.json'), JSON.stringify({ format: 'other-tool/3' }));
  assert.throws(() => readRecord(empty), /Unsupported record format/);
  writeFileSync(join(empty, 'run.json'), JSON.stringify({ format: 'mindeye-rt-record/2', shape: [2, 2, 2], trSec: 2 }));
  assert.throws(() => readRecord(empty), /lacks the grid or the TR/);
});

/**
 * Builds a record as a live session would leave it: the design's first two trials, a third
 * announced live on the feedback channel, volumes 0-39 received 4 ms apart, volume 20 a gap.
 */
function buildLiveRecord(record: string): void {
  const img = readNifti(haxbyRun(4).bold);
  const recorder = new SessionRecorder(record, { processing: PROCESSING, command: 'serve' });
  const info: RunInfo = {
    type: 'run-info', runId: 'live', trSec: 2.5, shape: img.header.shape, affine: img.header.affine, source: 'push test',
    motionCorrection: false, trials: [
      { trialId: 0, onsetSec: 15, durationSec: 22.5, stimulusId: 'shoe' },
      { trialId: 1, onsetSec: 52.5, durationSec: 22.5, stimulusId: 'house' },
    ],
  };
  recorder.onEvent(info);
  const t0 = performance.now();
  for (let i = 0; i < 40; i++) {
    if (i === 20) {
      recorder.onEvent({ type: 'gap', runId: 'live', volIdx: 20, reason: 'volume 20 was skipped by the sender' });
      continue;
    }
    recorder.writeVolume({
      type: 'volume', runId: 'live', volIdx: i, acqTimeSec: i * 2.5, receivedAtMs: t0 + i * 4, shape: img.header.shape,
      affine: img.header.affine, data: img.data.slice(i * 800, (i + 1) * 800), sourceId: `push #${i}`,
    });
    if (i === 30) recorder.onEvent({ type: 'trial-added', runId: 'live', trial: { trialId: 2, onsetSec: 87.5, durationSec: 22.5, stimulusId: 'chair' } });
  }
  recorder.close();
}

test('replay keeps recorded order and live trials', () => {
  const record = join(dir, 'live-record');
  buildLiveRecord(record);
  const replayed = join(dir, 'replayed-recorded');
  const report = join(dir, 'replayed-recorded.json');
  const r = spawnSync(process.execPath, [CLI, 'replay', '--record', record, '--speed', 'recorded', '--no-dashboard', '--report', report,
    '--record-to', replayed], { encoding: 'utf8', env: ENV });
  assert.equal(r.status, 0, r.stderr);
  const lines = readJsonLines<{ type: string; volIdx: number; trial?: { trialId: number } }>(join(replayed, 'events.jsonl')).lines;
  const order = lines.filter((l) => l.type === 'volume' || l.type === 'gap').map((l) => `${l.type}:${l.volIdx}`);
  const expected = Array.from({ length: 40 }, (_, i) => (i === 20 ? 'gap:20' : `volume:${i}`));
  assert.deepEqual(order, expected, 'volumes and the gap in recorded order, each once');
  const announcedAfter = lines.findIndex((l) => l.type === 'trial-added');
  const volumesBefore = lines.slice(0, announcedAfter).filter((l) => l.type === 'volume').length;
  assert.equal(volumesBefore, 30, 'the live trial is announced after volume 30, as recorded');

  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.run.speed, 'recorded');
  assert.equal(rep.run.trialCount, 3, 'the design plus the trial announced live');
  assert.equal(rep.summary.volumesReceived, 39);
  const trials = readJsonLines<{ trialId: number; stimulusId: string }>(join(replayed, 'trials.jsonl')).lines;
  assert.deepEqual(trials.map((t) => t.stimulusId), ['shoe', 'house', 'chair']);
  const replayedRun = JSON.parse(readFileSync(join(replayed, 'run.json'), 'utf8'));
  assert.equal(replayedRun.processing.maskFile, HAXBY_MASK, 'processing options taken from the record');
});

test('replay rejects bad record flags', () => {
  const record = join(dir, 'live-record');
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, 'replay', ...args], { encoding: 'utf8', env: ENV });
  const noRecord = cli(['--bids', haxbyRun(4).bold, '--events', haxbyRun(4).events, '--speed', 'recorded', '--no-dashboard']);
  assert.equal(noRecord.status, 1);
  assert.match(noRecord.stderr, /--speed recorded needs --record/);
  const intoItself = cli(['--record', record, '--record-to', record, '--no-dashboard']);
  assert.equal(intoItself.status, 1);
  assert.match(intoItself.stderr, /cannot record into the record it replays/);
  const missing = cli(['--record', join(dir, 'nowhere'), '--no-dashboard']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /run\.json is missing/);
  const zeroSpeed = cli(['--record', record, '--speed', '0', '--no-dashboard']);
  assert.equal(zeroSpeed.status, 1);
  assert.match(zeroSpeed.stderr, /expected: realtime, max, a positive factor, or recorded/);
  const help = cli(['--help']);
  assert.match(help.stdout, /--speed recorded/);
  assert.match(help.stdout, /--speed S +realtime/);
});

test('second recorder on a live lock rejected', () => {
  const record = join(dir, 'locked');
  const first = new SessionRecorder(record, { command: 'watch' });
  first.note({ type: 'trigger', pulseIndex: 0 });
  const lock = JSON.parse(readFileSync(join(record, 'lock'), 'utf8'));
  assert.equal(lock.pid, process.pid);
  assert.throws(() => new SessionRecorder(record, { command: 'watch' }), (err: Error) => {
    assert.match(err.message, /Another process is writing this session record/);
    assert.ok(err.message.includes(join(record, 'lock')), err.message);
    assert.match(err.message, new RegExp(`pid ${process.pid}`));
    assert.match(err.message, /record to another folder/);
    return true;
  });
  first.close();
  assert.ok(!existsSync(join(record, 'lock')), 'close removes the lock');
  const second = new SessionRecorder(record, { command: 'watch' });
  second.close();
});

test('stale lock of a dead process taken over', () => {
  const record = join(dir, 'stale-lock');
  mkdirSync(record);
  // A process that has exited: its pid no longer exists (unless reused within this test).
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout);
  writeFileSync(join(record, 'lock'), JSON.stringify({ pid: deadPid, hostname: hostname(), processStartEpochMs: 1, lockedAtEpochMs: 1, command: 'watch' }));
  const recorder = new SessionRecorder(record, { command: 'watch' });
  assert.equal(JSON.parse(readFileSync(join(record, 'lock'), 'utf8')).pid, process.pid, 'the lock now names this process');
  recorder.close();
  writeFileSync(join(record, 'lock'), 'half a lock');
  const afterGarbage = new SessionRecorder(record, { command: 'watch' });
  assert.equal(JSON.parse(readFileSync(join(record, 'lock'), 'utf8')).pid, process.pid, 'an unreadable lock is taken over');
  afterGarbage.close();
});

test('recorder writing nothing leaves no folder', () => {
  const parent = join(dir, 'never-written');
  const recorder = new SessionRecorder(join(parent, 'session'), { command: 'serve' });
  assert.ok(existsSync(join(parent, 'session', 'lock')), 'the lock exists while the recorder is open');
  recorder.close();
  assert.ok(!existsSync(parent), 'the folders created for the record are removed');
  const existing = join(dir, 'given-empty');
  mkdirSync(existing);
  new SessionRecorder(existing).close();
  assert.ok(existsSync(existing), 'a folder that existed before stays');
});
