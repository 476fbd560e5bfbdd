import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { benchIngest } from '../../src/bench/ingest.ts';
import { pushIngest, type PushIngest } from '../../src/ingest/push.ts';
import { EventLog, fixture, hasDcm2niix, runCli } from './helpers.ts';

function push(args: string[]): ReturnType<typeof runCli> {
  return runCli(['push', ...args]);
}

/** Asserts that `push ARGS` exits with a non-zero status and an error on stderr matching `pattern`. */
async function assertFails(args: string[], pattern: RegExp): Promise<void> {
  const result = await push(args);
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, pattern);
}

describe('push command', () => {
  let app: FastifyInstance;
  let ingest: PushIngest;
  let url: string;
  before(async () => {
    app = Fastify();
    ingest = pushIngest({ token: 'cli-token', maxQueue: 2 });
    await app.register(ingest.plugin);
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    assert.ok(address !== null);
    assert.ok(typeof address === 'object');
    url = `ws://127.0.0.1:${address.port}/ingest`;
  });
  after(async () => {
    await app.close();
  });

  it('sends GE slice files as volumes and prints a summary', async () => {
    const log = new EventLog(ingest.source);
    const result = await push(['--url', url, '--token', 'cli-token', '--window', '1', fixture('ge-realtime-slices/2_epiRT_ascending')]);
    await log.waitForEnd();
    log.close();
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^Sent 3 volumes \([\d.]+ MB\) to ws:\/\/127\.0\.0\.1:\d+\/ingest in [\d.]+ s \([\d.]+ volumes\/s\): 3 accepted, 0 rejected\n$/);
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'volume 1', 'volume 2']);
    assert.equal(result.stderr, '');
  });

  it('rejects missing arguments', async () => {
    await assertFails(['--url', url], /push needs --url, --token and at least one file/);
    await assertFails(['--url', url, '--token', 'x', '--window', '0', fixture('rtcloud-sample')], /Invalid --window/);
    await assertFails(['--url', url, '--token', 'x', '/no/such/file.dcm'], /Input file not found/);
  });

  it('reports an unreachable server', async () => {
    await assertFails(['--url', 'ws://127.0.0.1:1/ingest', '--token', 'x', fixture('rtcloud-sample')], /Could not connect to the ingest server/);
  });
});

describe('ingest benchmark', () => {
  it('returns per-volume figures for both decoders', { skip: hasDcm2niix() ? false : 'dcm2niix is not installed' }, async () => {
    const result = await benchIngest(1);
    assert.equal(result.files, 7);
    const ours = result.mindeyePerVolumeMs as { decodeMs: number; decodeAndWriteMs: number };
    const theirs = result.dcm2niixPerVolumeMs as { wallMs: number; reportedMs: number };
    assert.ok(ours.decodeMs > 0);
    assert.ok(ours.decodeAndWriteMs >= ours.decodeMs);
    assert.ok(theirs.wallMs > 0);
    assert.equal(typeof result.ratioDcm2niixWallToOurDecodeAndWrite, 'number');
    assert.match(String(result.dcm2niixVersion), /^v1\.0\.\d{8}$/);
  });
});
