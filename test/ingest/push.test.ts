import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import type { RunInfo, Volume } from '../../src/events.ts';
import { pushVolumes } from '../../src/cli/push.ts';
import { listFiles, readSeries } from '../../src/ingest/dicom/series.ts';
import { encodePushMessage, pushIngest, type PushAck, type PushHeader, type PushIngest } from '../../src/ingest/push.ts';
import { affineError, EventLog, fixture, sleep } from './helpers.ts';

const TOKEN = 'test-token-5f2a';
const XA = readSeries(listFiles(fixture('siemens-xa-enhanced/6_REST1_w_SMS_PF7-8')), { format: 'auto' }).volumes;

interface Server {
  app: FastifyInstance;
  ingest: PushIngest;
  url: string;
}

async function startServer(maxQueue = 4): Promise<Server> {
  const app = Fastify();
  const ingest = pushIngest({ token: TOKEN, maxQueue });
  await app.register(ingest.plugin);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address !== null);
  assert.ok(typeof address === 'object');
  return { app, ingest, url: `ws://127.0.0.1:${address.port}/ingest` };
}

function header(index: number, overrides: Partial<PushHeader> = {}): PushHeader {
  const v = XA[0];
  return { index, shape: v.shape, dtype: 'int16', affine: Array.from(v.affine), trSec: 0.5, ...overrides };
}

/** Opens a raw client and collects its acknowledgements. */
async function rawClient(url: string, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }): Promise<{ socket: WebSocket; acks: PushAck[] }> {
  const socket = new WebSocket(url, { headers });
  const acks: PushAck[] = [];
  socket.on('message', (raw) => acks.push(JSON.parse(raw.toString()) as PushAck));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { socket, acks };
}

/** Closes a client and waits until the server has seen the close, so that the next sender is not a second one. */
async function closeClient(socket: WebSocket): Promise<void> {
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.close();
  await closed;
  await sleep(50);
}

/** Returns the HTTP status and body of a refused WebSocket upgrade. */
function refusedUpgrade(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('open', () => reject(new Error('the upgrade was accepted')));
    socket.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => { body += chunk.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    socket.once('error', () => undefined);
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('push ingest', () => {
  let server: Server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.app.close();
  });

  it('delivers a real series sent by the push client', async () => {
    const log = new EventLog(server.ingest.source);
    const summary = await pushVolumes(XA, { url: server.url, token: TOKEN, window: 2 });
    await log.waitForEnd();
    log.close();
    assert.deepEqual({ sent: summary.sent, accepted: summary.accepted, rejected: summary.rejected }, { sent: 6, accepted: 6, rejected: 0 });
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'volume 1', 'volume 2', 'volume 3', 'volume 4', 'volume 5']);
    const info = log.events[0] as RunInfo;
    assert.deepEqual(info.shape, [64, 64, 6]);
    assert.equal(info.trSec, 0.5);
    assert.match(info.source, /^network push from 127\.0\.0\.1/);
    for (const e of log.events.slice(1) as Volume[]) {
      assert.deepEqual(e.data, XA[e.volIdx].data);
      assert.ok(affineError(e.affine, XA[e.volIdx].affine) < 1e-9);
      assert.equal(e.runId, 'test-run');
    }
  });
});

describe('push ingest guards', () => {
  let server: Server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.app.close();
  });

  it('rejects an invalid queue length or empty token', () => {
    assert.throws(() => pushIngest({ token: TOKEN, maxQueue: Number('abc') }), /Invalid push queue length\.[\s\S]*value: NaN[\s\S]*expected: an integer >= 1/);
    assert.throws(() => pushIngest({ token: TOKEN, maxQueue: 0 }), /Invalid push queue length/);
    assert.throws(() => pushIngest({ token: '' }), /The push ingest needs a session token/);
  });

  it('rejects a missing token with 401', async () => {
    const { status, body } = await refusedUpgrade(server.url);
    assert.equal(status, 401);
    assert.match(body, /"error":"token".*needs the session token/);
  });

  it('rejects a wrong token in the header or the query', async () => {
    const byHeader = await refusedUpgrade(server.url, { authorization: 'Bearer nope' });
    assert.equal(byHeader.status, 403);
    assert.match(byHeader.body, /"error":"token".*the session token given is wrong/);
    const byQuery = await refusedUpgrade(`${server.url}?token=nope`);
    assert.equal(byQuery.status, 403);
    await assert.rejects(pushVolumes(XA, { url: server.url, token: 'nope' }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'INGEST_AUTH');
      assert.match(err.message, /rejected the session token \(HTTP 403, wrong token\)[\s\S]*field: --token/);
      return true;
    });
  });

  it('accepts the token in the query', async () => {
    const { socket } = await rawClient(`${server.url}?token=${TOKEN}`, {});
    await closeClient(socket);
  });

  it('answers a bad data length with a clear error and goes on', async () => {
    const log = new EventLog(server.ingest.source);
    const { socket, acks } = await rawClient(server.url);
    const good = encodePushMessage(header(0), XA[0].data);
    socket.send(good.subarray(0, good.length - 10));
    socket.send(good);
    socket.send(Buffer.from([1, 2]));
    socket.send(Buffer.concat([Buffer.from([5, 0, 0, 0]), Buffer.from('{nope')]));
    socket.send(JSON.stringify({ hello: 'world' }));
    const wrongGrid = encodePushMessage(header(1, { shape: [64, 64, 5] }), new Float32Array(64 * 64 * 5));
    socket.send(wrongGrid);
    socket.send(encodePushMessage(header(0), XA[0].data));
    await until(() => acks.length === 7, '7 acknowledgements');
    await closeClient(socket);
    log.close();
    assert.deepEqual(acks.map((a) => [a.ok, a.index]), [[false, 0], [true, 0], [false, null], [false, null], [false, null], [false, 1], [false, 0]]);
    assert.match(acks[0].error!, /Invalid push message\. file: push message; field: data length; value: "49142 bytes"; expected: 49152 bytes \(64 x 64 x 6 x 2 for int16\)/);
    assert.match(acks[2].error!, /field: message length; value: 2/);
    assert.match(acks[3].error!, /field: header; value: .*JSON/);
    assert.match(acks[4].error!, /text messages other than \{"type":"end"\} are not accepted/);
    assert.match(acks[5].error!, /volume 1 has grid 64x64x5, the run has 64x64x6; rejected/);
    assert.match(acks[6].error!, /volume 0 was already received \(next expected 2\); dropped/);
    assert.deepEqual(log.labels(), ['warning invalid 0', 'run-info', 'volume 0', 'warning invalid', 'warning invalid', 'gap 1', 'warning invalid 1', 'warning duplicate 0']);
  });

  it('turns skipped indices into gaps', async () => {
    const fresh = await startServer();
    const log = new EventLog(fresh.ingest.source);
    const { socket, acks } = await rawClient(fresh.url);
    socket.send(encodePushMessage(header(0), XA[0].data));
    socket.send(encodePushMessage(header(3), XA[3].data));
    socket.send(JSON.stringify({ type: 'end' }));
    await log.waitForEnd();
    socket.close();
    await fresh.app.close();
    assert.deepEqual(acks.map((a) => a.ok), [true, true]);
    assert.deepEqual(log.labels(), ['run-info', 'volume 0', 'gap 1', 'gap 2', 'volume 3']);
  });

  it('closes a second sender with code 1013', async () => {
    const first = await rawClient(server.url);
    const second = await rawClient(server.url);
    const [code, reason] = await new Promise<[number, string]>((resolve) => second.socket.once('close', (c, r) => resolve([c, r.toString()])));
    await closeClient(first.socket);
    assert.equal(code, 1013);
    assert.equal(reason, 'another sender is connected; try again later');
  });
});

describe('push backpressure', () => {
  it('holds a fast sender to the queue bound until the pipeline takes volumes', async () => {
    const maxQueue = 3;
    const server = await startServer(maxQueue);
    const count = 40;
    const { socket, acks } = await rawClient(server.url);
    // A sender that ignores acknowledgements: every volume at once, about 2 MB.
    for (let i = 0; i < count; i++) socket.send(encodePushMessage(header(i), XA[i % XA.length].data));
    await until(() => server.ingest.stats().pauses > 0, 'the server to pause reading');
    await sleep(300);
    const paused = server.ingest.stats();
    assert.ok(paused.maxQueued <= maxQueue + 1, `queued ${paused.maxQueued} volumes with maxQueue ${maxQueue}`);
    assert.ok(paused.received < count, `the server read ${paused.received} of ${count} volumes without a pipeline`);
    assert.equal(acks.length, 0, 'nothing is acknowledged before the pipeline takes it');

    const log = new EventLog(server.ingest.source);
    await until(() => acks.length === count, 'every acknowledgement');
    socket.send(JSON.stringify({ type: 'end' }));
    await log.waitForEnd();
    socket.close();
    await server.app.close();
    const stats = server.ingest.stats();
    assert.equal(stats.delivered, count);
    assert.ok(stats.maxQueued <= maxQueue + 1, `queued ${stats.maxQueued} volumes at most`);
    assert.deepEqual(log.labels().slice(1), [...Array(count).keys()].map((i) => `volume ${i}`));
    assert.deepEqual(acks.map((a) => a.index), [...Array(count).keys()]);
    assert.ok(acks.every((a) => a.ok));
  });
});
