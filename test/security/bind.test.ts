// Every server of the command line binds 127.0.0.1 unless --host sets another address: serve with and
// without the dashboard, and a replay's dashboard (which also carries the feedback socket). The
// serve run also takes full-size volumes from the push client through the dashboard's server.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readNifti, writeNifti } from '../../src/io/nifti.ts';
import { HAXBY_MASK, ROOT, haxbyRun } from '../helpers/data.ts';

const CLI = join(ROOT, 'bin/mindeye-rt.js');
const TOKEN = 'bind-test-token-0123';
const MASK = join(ROOT, 'data/epi/pyneal/testSeries_mask.nii.gz');

/**
 * Writes the pyneal test series (64 x 64 x 30 uint16 volumes: 240 KiB each, over the page
 * sockets' 64 KiB) with its mask's scanner affine, as a scanner would send it.
 */
function writeSeries(): string {
  const img = readNifti(join(ROOT, 'data/epi/pyneal/testSeries.nii.gz'));
  const mask = readNifti(MASK);
  const file = join(mkdtempSync(join(tmpdir(), 'bind-series-')), 'series.nii');
  writeNifti(file, img.data, { shape: img.header.shape, volumes: img.header.volumes, voxelSizeMm: mask.header.voxelSizeMm, trSec: 1, affine: mask.header.affine, datatype: 'uint16' });
  return file;
}
const SERIES = writeSeries();

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await new Promise((resolve) => server.close(resolve));
  return address.port;
}

const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
});

/** Starts the command and resolves with the first stdout line that matches `pattern`. */
function startUntil(args: string[], pattern: RegExp): { child: ChildProcess; line: Promise<RegExpMatchArray>; exited: Promise<number | null>; output: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  children.push(child);
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = new Promise<RegExpMatchArray>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = pattern.exec(stdout);
      if (match) resolve(match);
    });
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    void exited.then((code) => reject(new Error(`exited ${code} before printing ${pattern}: ${stdout}\n${stderr}`)));
  });
  return { child, line, exited, output: () => `${stdout}\n${stderr}` };
}

test('serve without dashboard binds loopback', async () => {
  const port = await freePort();
  const serve = startUntil(['serve', '--no-dashboard', '--port', String(port), '--token', TOKEN, '--expected-volumes', '3', '--mask', MASK,
    '--record-to', mkdtempSync(join(tmpdir(), 'bind-rec-'))], /ingest at (ws:\/\/[^/]+)\/ingest/);
  const [, base] = await serve.line;
  assert.equal(base, `ws://127.0.0.1:${port}`);
  const push = spawnSync(process.execPath, [CLI, 'push', '--url', `${base}/ingest`, '--token', TOKEN, SERIES], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(push.status, 0, push.stderr);
  assert.equal(await serve.exited, 0, serve.output());
});

test('serve with dashboard binds loopback and takes full volumes', async () => {
  const port = await freePort();
  const report = join(mkdtempSync(join(tmpdir(), 'bind-report-')), 'report.json');
  const serve = startUntil(['serve', '--port', String(port), '--token', TOKEN, '--expected-volumes', '3', '--mask', MASK, '--report', report,
    '--record-to', mkdtempSync(join(tmpdir(), 'bind-rec-'))], /dashboard at (http:\/\/[^/]+)\//);
  const [, base] = await serve.line;
  assert.equal(base, `http://127.0.0.1:${port}`);
  const wrong = spawnSync(process.execPath, [CLI, 'push', '--url', `ws://127.0.0.1:${port}/ingest`, '--token', 'not-the-token', SERIES], { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(wrong.status, 0, 'a wrong token fails');
  assert.match(wrong.stderr, /error INGEST_AUTH: The server rejected the session token \(HTTP 403, wrong token\)/);
  assert.match(wrong.stderr, /value: "pushing volumes to \/ingest: the session token given is wrong/);
  assert.match(wrong.stderr, /fix: pass --token with the token that `mindeye-rt serve` printed/);
  assert.doesNotMatch(wrong.stderr, /--url ends in \/ingest/);
  assert.doesNotMatch(wrong.stderr, /not-the-token/, 'the token is not printed');
  const push = spawnSync(process.execPath, [CLI, 'push', '--url', `ws://127.0.0.1:${port}/ingest`, '--token', TOKEN, SERIES], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(push.status, 0, push.stderr);
  assert.equal(await serve.exited, 0, serve.output());
  assert.equal(JSON.parse(readFileSync(report, 'utf8')).summary.volumesProcessed, 3, 'three 240 KiB volumes processed');
});

test('replay dashboard binds loopback', async () => {
  const port = await freePort();
  const run = haxbyRun(1);
  const replay = startUntil(['replay', '--bids', run.bold, '--events', run.events, '--mask', HAXBY_MASK, '--speed', 'max', '--port', String(port)], /dashboard at (http:\/\/[^/]+)\/\?token=(\S+)/);
  const [, base, token] = await replay.line;
  assert.equal(base, `http://127.0.0.1:${port}`);
  assert.ok(token.length >= 16, 'a random token is printed with the URL');
  const feedback = await fetch(`${base}/api/control/pause`, { method: 'POST' });
  assert.equal(feedback.status, 401, 'control needs the token');
  replay.child.kill('SIGINT');
  await replay.exited;
});
