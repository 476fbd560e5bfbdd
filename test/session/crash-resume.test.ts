// A live watch session killed with SIGKILL at several points and restarted on its record: nothing
// it received is lost, the files that arrived while it was down are taken in order, and the final
// report covers every trial. A replay of the record gives the live run's final betas.
import { DEFAULT_PUSH_QUEUE } from '../../src/ingest/push.ts';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNifti, readNifti } from '../../src/io/nifti.ts';
import { SessionRecorder, readJsonLines, readRecord } from '../../src/session/record.ts';
import { HAXBY_MASK, haxbyRun, ROOT } from '../helpers/data.ts';

const CLI = join(ROOT, 'bin/mindeye-rt.js');
const ENV = { ...process.env, MINDEYE_LOG_LEVEL: 'error' };
const RUN = haxbyRun(4);
const VOLUMES = 121;

let dir: string;
let model: string;
let volumeBytes: Uint8Array[];
let sourceData: Float32Array[];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'crash-resume-'));
  model = join(dir, 'model');
  const fitArgs = ['fit', '--mask', HAXBY_MASK, '--out', model, '--window-sec', '30'];
  for (const r of [1, 2]) fitArgs.push('--bids', haxbyRun(r).bold, '--events', haxbyRun(r).events);
  const fit = spawnSync(process.execPath, [CLI, ...fitArgs], { encoding: 'utf8', env: ENV });
  assert.equal(fit.status, 0, fit.stderr);
  // One int16 NIfTI per volume, as a scanner's real-time export writes them.
  const img = readNifti(RUN.bold);
  const n = img.header.shape[0] * img.header.shape[1] * img.header.shape[2];
  sourceData = [];
  volumeBytes = [];
  for (let t = 0; t < VOLUMES; t++) {
    const data = img.data.slice(t * n, (t + 1) * n);
    sourceData.push(data);
    volumeBytes.push(encodeNifti(data, { shape: img.header.shape, voxelSizeMm: img.header.voxelSizeMm, trSec: img.header.trSec, affine: img.header.affine, datatype: 'int16' }));
  }
});

const children: ChildProcess[] = [];

after(() => {
  // A failed assertion leaves its watch process running; end it before removing its folders.
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Child {
  process: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

function startWatch(exportDir: string, record: string, report: string): Child {
  // --include-existing: a file dropped before the watcher starts is taken too (the folder starts empty).
  const child = spawn(process.execPath, [CLI, 'watch', '--dir', exportDir, '--format', 'nifti', '--include-existing', '--expected-volumes', String(VOLUMES),
    '--events', RUN.events, '--model', model, '--window-sec', '30', '--motion', 'off', '--gap-timeout-ms', '60000',
    '--no-dashboard', '--report', report, '--record-to', record], { env: ENV });
  children.push(child);
  const result: Child = { process: child, stdout: '', stderr: '', exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
  child.stdout!.on('data', (d) => { result.stdout += d; });
  child.stderr!.on('data', (d) => { result.stderr += d; });
  return result;
}

async function waitFor(what: string, check: () => boolean, child: Child, timeoutMs = 30_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (child.process.exitCode !== null) assert.fail(`the watch process exited (${child.process.exitCode}) while waiting for ${what}: ${child.stderr}`);
    if (Date.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}: ${child.stderr}`);
    await new Promise((r) => setTimeout(r, 15));
  }
}

/** Volume indices with a volume line in events.jsonl. */
function recordedLines(record: string): number[] {
  return readJsonLines<{ type: string; volIdx: number }>(join(record, 'events.jsonl')).lines.filter((e) => e.type === 'volume').map((e) => e.volIdx);
}

function drop(exportDir: string, volIdx: number): void {
  writeFileSync(join(exportDir, `vol_${String(volIdx).padStart(4, '0')}.nii`), volumeBytes[volIdx]);
}

/** Drops volumes [from, to) one at a time, each once the session recorded the one before. */
async function feed(child: Child, exportDir: string, record: string, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    drop(exportDir, i);
    await waitFor(`volume ${i} in the record`, () => recordedLines(record).includes(i), child);
  }
}

async function kill(child: Child): Promise<void> {
  child.process.kill('SIGKILL');
  await child.exited;
}

/** Checks what a killed process left: every volume it logged or processed is on disk, as received. */
function checkNothingLost(record: string, killedAt: string): void {
  const contents = readRecord(record);
  const files = new Set(contents.volumes.map((v) => v.volIdx));
  for (const idx of recordedLines(record)) assert.ok(files.has(idx), `${killedAt}: volume ${idx} has a line but no file`);
  const processed = readJsonLines<{ type: string; volIdx: number }>(join(record, 'events.jsonl')).lines.filter((e) => e.type === 'masked-volume');
  for (const m of processed) assert.ok(files.has(m.volIdx), `${killedAt}: volume ${m.volIdx} was processed but is not in the record`);
  for (const v of contents.volumes) {
    const img = readNifti(join(record, v.file));
    assert.deepEqual(img.data, sourceData[v.volIdx], `${killedAt}: volume ${v.volIdx} is stored as received`);
  }
}

test('killed watch session resumes without loss', async () => {
  const exportDir = join(dir, 'export');
  mkdirSync(exportDir);
  const record = join(dir, 'record');
  const report = join(dir, 'report.json');

  // 1. Killed right after a volume file is dropped.
  let child = startWatch(exportDir, record, report);
  await feed(child, exportDir, record, 0, 30);
  drop(exportDir, 30);
  await kill(child);
  checkNothingLost(record, 'kill after a file was dropped');
  assert.ok(recordedLines(record).length >= 30, 'volumes 0-29 recorded before the first kill');

  // 2. Killed mid-trial (the trial at 122.5 s spans volumes 49-70 with --window-sec 30).
  child = startWatch(exportDir, record, report);
  await feed(child, exportDir, record, 31, 61);
  await kill(child);
  checkNothingLost(record, 'kill mid-trial');
  // Files that arrive while the session is down.
  for (let i = 61; i < 71; i++) drop(exportDir, i);

  // 3. Killed while a burst of volumes is being written and processed.
  child = startWatch(exportDir, record, report);
  await waitFor('the volumes that arrived while down', () => recordedLines(record).includes(70), child);
  for (let i = 71; i < 91; i++) drop(exportDir, i);
  await waitFor('volume 75 in the record', () => recordedLines(record).includes(75), child);
  await kill(child);
  checkNothingLost(record, 'kill during a burst');

  // 4. The last restart runs to the end of the run.
  const inRecord = readRecord(record).volumes.length;
  child = startWatch(exportDir, record, report);
  await feed(child, exportDir, record, 91, VOLUMES);
  assert.equal(await child.exited, 0, child.stderr);
  checkNothingLost(record, 'end');
  assert.match(child.stdout, /resuming the session recorded in/);
  assert.match(child.stdout, /resumed from .*: downtime [\d.]+ s, \d+ volumes from the record \(0-\d+\), volumes missed: none/);

  const lines = recordedLines(record);
  assert.deepEqual([...lines].sort((a, b) => a - b), Array.from({ length: VOLUMES }, (_, i) => i), 'every volume recorded exactly once');
  assert.deepEqual(lines, [...lines].sort((a, b) => a - b), 'volumes recorded in acquisition order');
  assert.equal(readRecord(record).volumes.length, VOLUMES);
  const events = readJsonLines<{ type: string; resumed?: boolean; code?: string }>(join(record, 'events.jsonl')).lines;
  assert.equal(events.filter((e) => e.type === 'record-start').length, 4, 'one record-start line per process');
  assert.equal(events.filter((e) => e.type === 'record-start' && e.resumed).length, 3);
  assert.equal(events.filter((e) => e.code === 'SESSION_RESUMED').length, 3, 'a resume warning per restart');

  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.deepEqual(JSON.parse(readFileSync(join(record, 'report.json'), 'utf8')).trials, rep.trials, 'the record keeps the report');
  assert.equal(rep.summary.volumesReceived, VOLUMES, 'the report counts volumes from the record and the live input');
  assert.equal(rep.summary.volumesProcessed, VOLUMES);
  assert.equal(rep.run.trialCount, 8);
  assert.deepEqual(rep.trials.map((t: { trialId: number }) => t.trialId), [0, 1, 2, 3, 4, 5, 6, 7], 'the report covers every trial');
  for (const t of rep.trials) assert.ok(Number.isInteger(t.final.retrievalRank), `trial ${t.trialId} decoded`);
  assert.equal(rep.resume.volumesFromRecord, inRecord, 'the volumes recorded before the last kill came from the record');
  assert.deepEqual(rep.resume.recordVolumeRange, [0, inRecord - 1]);
  assert.equal(rep.resume.firstLiveVolIdx, inRecord);
  assert.deepEqual(rep.resume.volumesMissed, []);
  assert.equal(rep.resume.earlierResumes, 2);
  assert.ok(rep.resume.downtimeSec >= 0, 'downtime reported');
  assert.equal(rep.resume.liveDuplicatesDropped, 0, 'the watcher drops the files of recorded volumes before emitting them');

  // A restart on the finished record re-runs it and ends at once: every expected volume is there.
  const again = startWatch(exportDir, record, join(dir, 'report-again.json'));
  assert.equal(await again.exited, 0, again.stderr);
  const repAgain = JSON.parse(readFileSync(join(dir, 'report-again.json'), 'utf8'));
  assert.equal(repAgain.resume.volumesFromRecord, VOLUMES);
  assert.equal(repAgain.resume.firstLiveVolIdx, undefined);
  assert.equal(repAgain.trials.length, 8);
  assert.equal(recordedLines(record).length, VOLUMES, 'nothing recorded twice');

  const trials = readJsonLines<{ trialId: number; row: number }>(join(record, 'trials.jsonl')).lines;
  assert.deepEqual(trials.map((t) => t.trialId).sort(), [0, 1, 2, 3, 4, 5, 6, 7], 'one final estimate per trial');
  const voxels = readFileSync(join(record, 'betas_final.f32')).byteLength / 4 / trials.length;
  assert.ok(Number.isInteger(voxels), 'betas_final.f32 holds whole rows');

  // The record replays to the same final betas as the live session (including the resumes).
  const replayReport = join(dir, 'replay.json');
  const replayRecord = join(dir, 'replayed');
  const replay = spawnSync(process.execPath, [CLI, 'replay', '--record', record, '--speed', 'max', '--no-dashboard', '--report', replayReport,
    '--record-to', replayRecord], { encoding: 'utf8', env: ENV });
  assert.equal(replay.status, 0, replay.stderr);
  const liveBetas = new Float32Array(readFileSync(join(record, 'betas_final.f32')).buffer.slice(0));
  const replayBetas = new Float32Array(readFileSync(join(replayRecord, 'betas_final.f32')).buffer.slice(0));
  const replayTrials = readJsonLines<{ trialId: number; row: number }>(join(replayRecord, 'trials.jsonl')).lines;
  assert.equal(replayTrials.length, 8);
  for (const t of trials) {
    const other = replayTrials.find((r) => r.trialId === t.trialId)!;
    const a = liveBetas.subarray(t.row * voxels, (t.row + 1) * voxels);
    const b = replayBetas.subarray(other.row * voxels, (other.row + 1) * voxels);
    const scale = Math.max(...Array.from(a, Math.abs));
    const maxDiff = Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i])));
    assert.ok(maxDiff <= 1e-4 * scale, `trial ${t.trialId}: replayed betas differ by ${maxDiff} (largest beta ${scale})`);
  }
  const rep2 = JSON.parse(readFileSync(replayReport, 'utf8'));
  assert.deepEqual(rep2.trials.map((t: { final: { retrievalRank: number } }) => t.final.retrievalRank), rep.trials.map((t: { final: { retrievalRank: number } }) => t.final.retrievalRank));
});

test('killed serve session resumes from pushed volumes', async () => {
  const files = join(dir, 'push-files');
  mkdirSync(files);
  for (let i = 0; i < VOLUMES; i++) writeFileSync(join(files, `vol_${String(i).padStart(4, '0')}.nii`), volumeBytes[i]);
  const fileOf = (i: number) => join(files, `vol_${String(i).padStart(4, '0')}.nii`);
  const record = join(dir, 'serve-record');
  const report = join(dir, 'serve-report.json');
  const startServe = (): Child => {
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--token', 'test-token', '--events', RUN.events, '--model', model,
      '--window-sec', '30', '--motion', 'off', '--no-dashboard', '--report', report, '--record-to', record], { env: ENV });
    children.push(child);
    const result: Child = { process: child, stdout: '', stderr: '', exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
    child.stdout!.on('data', (d) => { result.stdout += d; });
    child.stderr!.on('data', (d) => { result.stderr += d; });
    return result;
  };
  const push = async (child: Child, indices: number[], end: boolean) => {
    await waitFor('the ingest address', () => /ingest at (ws:\/\/[^ ]+\/ingest)/.test(child.stdout), child);
    const url = /ingest at (ws:\/\/[^ ]+\/ingest)/.exec(child.stdout)![1];
    const r = spawnSync(process.execPath, [CLI, 'push', '--url', url, '--token', 'test-token', ...(end ? [] : ['--no-end']), ...indices.map(fileOf)],
      { encoding: 'utf8', env: ENV });
    assert.equal(r.status, 0, r.stderr);
  };

  let child = startServe();
  await push(child, Array.from({ length: 40 }, (_, i) => i), false);
  await waitFor('volume 39 in the record', () => recordedLines(record).includes(39), child);
  await kill(child);
  checkNothingLost(record, 'serve killed');

  // The sender starts over from volume 0 and skips 40-44, which were lost while the server was down.
  child = startServe();
  await push(child, [...Array.from({ length: 30 }, (_, i) => i), ...Array.from({ length: VOLUMES - 45 }, (_, i) => 45 + i)], true);
  assert.equal(await child.exited, 0, child.stderr);
  checkNothingLost(record, 'serve end');
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.resume.volumesFromRecord, 40);
  assert.equal(rep.resume.liveDuplicatesDropped, 30, 'volumes resent by the sender are not counted twice');
  assert.deepEqual(rep.resume.volumesMissed, [40, 41, 42, 43, 44], 'volumes lost while down are reported');
  assert.equal(rep.resume.firstLiveVolIdx, 45);
  assert.equal(rep.summary.volumesReceived, VOLUMES - 5);
  assert.equal(rep.trials.length, 8, 'the report covers every trial');
  assert.equal(rep.summary.queues.push.bound, DEFAULT_PUSH_QUEUE);
  assert.ok(rep.summary.queues.push.highWater >= 1, `push queue high-water ${rep.summary.queues.push.highWater}`);
  assert.ok(rep.summary.queues.push.highWater <= DEFAULT_PUSH_QUEUE + 1, `push queue high-water ${rep.summary.queues.push.highWater}`);
  const lines = recordedLines(record);
  assert.deepEqual(lines, [...new Set(lines)], 'no volume recorded twice');
  assert.equal(lines.length, VOLUMES - 5);
});

test('resume rejects input on another grid', () => {
  // A record of three Haxby volumes (40x20x1), then a folder whose next volumes are 64x64x30 EPI.
  const record = join(dir, 'grid-record');
  const recorder = new SessionRecorder(record, { command: 'watch' });
  const img = readNifti(RUN.bold);
  recorder.onEvent({ type: 'run-info', runId: 'r', trSec: 2.5, shape: img.header.shape, affine: img.header.affine, source: 'folder x (nifti, series 0)', motionCorrection: false });
  for (let i = 0; i < 3; i++) {
    recorder.writeVolume({ type: 'volume', runId: 'r', volIdx: i, acqTimeSec: i * 2.5, receivedAtMs: performance.now(), shape: img.header.shape, affine: img.header.affine, data: sourceData[i], sourceId: `x/${i}` });
  }
  recorder.close();
  const other = join(dir, 'other-grid');
  mkdirSync(other);
  const epi = readNifti(join(ROOT, 'data/epi/pyneal/testSeries.nii.gz'));
  const n = epi.header.shape[0] * epi.header.shape[1] * epi.header.shape[2];
  writeFileSync(join(other, 'vol_0003.nii'), encodeNifti(epi.data.subarray(0, n), { shape: epi.header.shape, voxelSizeMm: epi.header.voxelSizeMm, trSec: 1, affine: epi.header.affine, datatype: 'float32' }));
  const r = spawnSync(process.execPath, [CLI, 'watch', '--dir', other, '--format', 'nifti', '--mask', HAXBY_MASK, '--motion', 'off', '--no-dashboard',
    '--record-to', record], { encoding: 'utf8', env: ENV, timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /VOLUME_GRID_MISMATCH: The live input after the restart is on another grid than the session record/);
  assert.match(r.stderr, /value: "64x64x30 from folder/);
  assert.match(r.stderr, /expected: 40x20x1/);
  assert.equal(readRecord(record).volumes.length, 3, 'the record is unchanged');
});
