// `serve` as a user runs it: the printed ingest address with --port 0, startup failures that
// leave no record folder, the record lock against a second process, resume with other
// processing flags, Ctrl-C, and the help texts. Every server binds 127.0.0.1.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNifti, writeNifti } from '../../src/io/nifti.ts';
import { readJsonLines } from '../../src/session/record.ts';
import { defaultRecordDir } from '../../src/cli/live-flags.ts';
import { stoppingMessage } from '../../src/cli/live.ts';
import { ROOT } from '../helpers/data.ts';

const CLI = join(ROOT, 'bin/mindeye-rt.js');
const ENV = { ...process.env, MINDEYE_LOG_LEVEL: 'error' };
const TOKEN = 'serve-cli-token-0123';
const MASK = join(ROOT, 'data/epi/pyneal/testSeries_mask.nii.gz');
const dir = mkdtempSync(join(tmpdir(), 'serve-cli-'));

/**
 * Writes the first `count` volumes of the pyneal test series (64 x 64 x 30 uint16) on the mask's
 * grid: one 3D volume, or a 4D series. The name has no digits, because push reads a volume index
 * from the digits of a 3D file's name.
 */
function writeSeries(count: number, name: string): string {
  const img = readNifti(join(ROOT, 'data/epi/pyneal/testSeries.nii.gz'));
  const mask = readNifti(MASK);
  const n = img.header.shape[0] * img.header.shape[1] * img.header.shape[2];
  const file = join(dir, name);
  writeNifti(file, img.data.subarray(0, n * count), {
    shape: img.header.shape, volumes: count > 1 ? count : undefined, voxelSizeMm: mask.header.voxelSizeMm, trSec: 1, affine: mask.header.affine, datatype: 'uint16',
  });
  return file;
}
const ONE_VOLUME = writeSeries(1, 'single-volume.nii');
const THREE_VOLUMES = writeSeries(3, 'three-volumes.nii');

const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Serve {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function startServe(args: string[], cwd = ROOT): Serve {
  const child = spawn(process.execPath, [CLI, 'serve', '--token', TOKEN, ...args], { env: ENV, cwd });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

async function waitFor(what: string, check: () => boolean, serve: Serve, timeoutMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (serve.child.exitCode !== null) assert.fail(`serve exited (${serve.child.exitCode}) while waiting for ${what}:\n${serve.stdout()}\n${serve.stderr()}`);
    if (Date.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}:\n${serve.stdout()}\n${serve.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for the printed ingest line and returns its URL. */
async function ingestUrl(serve: Serve): Promise<URL> {
  const pattern = /serve: ingest at (ws:\/\/\S+\/ingest) \(token/;
  await waitFor('the ingest address', () => pattern.test(serve.stdout()), serve);
  return new URL(pattern.exec(serve.stdout())![1]);
}

function push(url: URL, file: string, extra: string[] = []) {
  return spawnSync(process.execPath, [CLI, 'push', '--url', url.href, '--token', TOKEN, ...extra, file], { encoding: 'utf8', env: ENV, timeout: 60_000 });
}

function volumeLines(record: string): number[] {
  return readJsonLines<{ type: string; volIdx: number }>(join(record, 'events.jsonl')).lines.filter((e) => e.type === 'volume').map((e) => e.volIdx);
}

test('port 0 prints the bound ingest port', async () => {
  for (const dashboard of [true, false]) {
    const record = join(dir, `port0-${dashboard ? 'dashboard' : 'headless'}`);
    const serve = startServe(['--port', '0', '--mask', MASK, '--expected-volumes', '1', '--record-to', record, ...(dashboard ? [] : ['--no-dashboard'])]);
    const url = await ingestUrl(serve);
    assert.equal(url.hostname, '127.0.0.1');
    assert.notEqual(url.port, '0', `the printed port is the bound one (dashboard ${dashboard})`);
    if (dashboard) {
      const dashboardUrl = new URL(/dashboard at (\S+)/.exec(serve.stdout())![1]);
      assert.equal(url.port, dashboardUrl.port, 'ingest shares the dashboard port');
    }
    const sent = push(url, ONE_VOLUME);
    assert.equal(sent.status, 0, sent.stderr);
    assert.equal(await serve.exited, 0, serve.stderr());
    assert.deepEqual(volumeLines(record), [0], 'the pushed volume is recorded');
  }
});

test('failed start leaves no record folder', async () => {
  // Default record folder: sessions/ under the working directory.
  const cwd = join(dir, 'cwd');
  mkdirSync(cwd);
  const shortToken = spawnSync(process.execPath, [CLI, 'serve', '--token', 'short', '--port', '0', '--mask', MASK], { encoding: 'utf8', env: ENV, cwd });
  assert.equal(shortToken.status, 1);
  assert.match(shortToken.stderr, /--token/);
  assert.match(shortToken.stderr, /at least 8 characters/);
  assert.deepEqual(readdirSync(cwd), [], 'no sessions/ folder');

  const badQueue = spawnSync(process.execPath, [CLI, 'serve', '--token', TOKEN, '--port', '0', '--mask', MASK, '--max-queue', '0'], { encoding: 'utf8', env: ENV, cwd });
  assert.equal(badQueue.status, 1);
  assert.match(badQueue.stderr, /Invalid value for --max-queue/);
  assert.deepEqual(readdirSync(cwd), [], 'no sessions/ folder');

  // No --mask and no --model: the session fails once the server listens.
  const record = join(dir, 'no-mask', 'record');
  for (const dashboard of [[], ['--no-dashboard']]) {
    const noMask = startServe(['--port', '0', '--record-to', record, ...dashboard], cwd);
    assert.equal(await noMask.exited, 1, noMask.stderr());
    assert.match(noMask.stderr(), /No mask/);
    assert.ok(!existsSync(join(dir, 'no-mask')), `the --record-to folder and its parent are removed (${dashboard.join(' ') || 'dashboard'})`);
  }
  assert.deepEqual(readdirSync(cwd), []);
});

test('second process on a record rejected', async () => {
  const record = join(dir, 'shared-record');
  const first = startServe(['--port', '0', '--no-dashboard', '--mask', MASK, '--expected-volumes', '3', '--record-to', record]);
  const url = await ingestUrl(first);
  await waitFor('the record lock', () => existsSync(join(record, 'lock')), first);

  const second = spawnSync(process.execPath, [CLI, 'serve', '--token', TOKEN, '--port', '0', '--no-dashboard', '--mask', MASK, '--record-to', record],
    { encoding: 'utf8', env: ENV, timeout: 60_000 });
  assert.equal(second.status, 1);
  assert.match(second.stderr, /Another process is writing this session record/);
  assert.ok(second.stderr.includes(join(record, 'lock')), second.stderr);
  assert.match(second.stderr, new RegExp(`pid ${first.child.pid}`));

  const sent = push(url, THREE_VOLUMES);
  assert.equal(sent.status, 0, sent.stderr);
  assert.equal(await first.exited, 0, first.stderr());
  assert.deepEqual(volumeLines(record), [0, 1, 2], 'each volume recorded once');
  assert.ok(!existsSync(join(record, 'lock')), 'the lock is removed at exit');
});

test('resume keeps recorded processing flags', async () => {
  // The record of the test before: default processing (lss, window 5 s, motion auto).
  const record = join(dir, 'shared-record');
  const runBefore = readFileSync(join(record, 'run.json'), 'utf8');
  const report = join(dir, 'resumed-report.json');
  const resumed = startServe(['--port', '0', '--no-dashboard', '--mask', MASK, '--expected-volumes', '3', '--record-to', record,
    '--window-sec', '30', '--glm', 'lsa', '--motion', 'off', '--model', join(dir, 'no-such-model'), '--report', report]);
  assert.equal(await resumed.exited, 0, resumed.stderr());
  const stderr = resumed.stderr();
  assert.match(stderr, /serve: warning: --window-sec 30 differs from the recorded 5 in .*\. The session resumes with the recorded value/);
  assert.match(stderr, /--glm lsa differs from the recorded lss/);
  assert.match(stderr, /--motion off differs from the recorded auto/);
  assert.match(stderr, /--model \S*no-such-model differs from the recorded none/, 'the record was made without a model, so none is loaded');
  assert.doesNotMatch(stderr, /--mask .* differs/, 'the same mask is no difference');
  assert.equal(readFileSync(join(record, 'run.json'), 'utf8'), runBefore, 'run.json is unchanged');
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  assert.equal(rep.resume.volumesFromRecord, 3);
});

test('ctrl-c names the record folder', async () => {
  const record = join(dir, 'interrupted');
  const serve = startServe(['--port', '0', '--no-dashboard', '--mask', MASK, '--record-to', record]);
  const url = await ingestUrl(serve);
  const sent = push(url, THREE_VOLUMES, ['--no-end']);
  assert.equal(sent.status, 0, sent.stderr);
  await waitFor('volume 2 in the record', () => volumeLines(record).includes(2), serve);
  serve.child.kill('SIGINT');
  assert.equal(await serve.exited, 0, serve.stderr());
  assert.match(serve.stderr(), /stopping the run now: the report covers the volumes received so far/);
  assert.ok(serve.stderr().includes(`Writing the record and its report.json to ${record}.`), serve.stderr());
  assert.doesNotMatch(serve.stderr(), /finishing the run/);
  assert.ok(existsSync(join(record, 'report.json')), 'the report is written to the record');
});

test('stopping message without outputs', () => {
  assert.match(stoppingMessage({}), /Only the summary is printed/);
  assert.match(stoppingMessage({ reportFile: 'r.json' }), /Writing the report to r\.json\.$/);
});

test('default record folder unique', () => {
  const root = join(dir, 'sessions');
  const now = new Date('2026-01-02T03:04:05.678Z');
  const first = defaultRecordDir(now, root);
  assert.equal(first, join(root, '2026-01-02T03-04-05.678'), 'the name has milliseconds');
  mkdirSync(first, { recursive: true });
  const second = defaultRecordDir(now, root);
  assert.equal(second, `${first}-2`);
  mkdirSync(second);
  assert.equal(defaultRecordDir(now, root), `${first}-3`);
});

test('live help texts match the flags', () => {
  const help = (command: string) => spawnSync(process.execPath, [CLI, command, '--help'], { encoding: 'utf8', env: ENV }).stdout;
  const serveHelp = help('serve');
  assert.match(serveHelp, /--max-queue N/);
  assert.doesNotMatch(serveHelp, /--speed/);
  assert.doesNotMatch(help('watch'), /--speed/);
  const speed = spawnSync(process.execPath, [CLI, 'serve', '--speed', 'max', '--mask', MASK], { encoding: 'utf8', env: ENV });
  assert.equal(speed.status, 1, 'live input takes no --speed');
  assert.match(speed.stderr, /--speed/);
});
