// Guards of the push endpoint (/ingest): tokens, message and volume size caps, and that a
// header claiming a huge volume costs no memory. Every server here listens on 127.0.0.1.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify, { type FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import { encodePushMessage, pushIngest, type PushAck, type PushHeader, type PushIngest } from '../../src/ingest/push.ts';
import { TOKEN, TestSession } from '../dashboard/fixtures.ts';

const AFFINE = [2, 0, 0, -60, 0, 2, 0, -80, 0, 0, 2, -40, 0, 0, 0, 1];

function header(index: number, shape: [number, number, number]): PushHeader {
  return { index, shape, dtype: 'int16', affine: AFFINE, trSec: 2 };
}

/** Opens a sender and collects its acknowledgements and close code. */
async function connect(url: string, headers: Record<string, string>): Promise<{ socket: WebSocket; acks: PushAck[]; closed: Promise<number> }> {
  const socket = new WebSocket(url, { headers });
  const acks: PushAck[] = [];
  socket.on('message', (raw) => acks.push(JSON.parse(raw.toString()) as PushAck));
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { socket, acks, closed };
}

/** Returns the HTTP status and body of a rejected upgrade. */
function rejectedUpgrade(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('open', () => reject(new Error('the upgrade was accepted')));
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => { body += chunk.toString(); });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    socket.once('error', () => {});
  });
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), `timed out waiting for ${what}`);
}

/** Builds a message whose header claims `shape` but that carries only `dataBytes` bytes of voxels. */
function lyingMessage(index: number, shape: [number, number, number], dataBytes: number): Buffer {
  const json = Buffer.from(JSON.stringify(header(index, shape)));
  const out = Buffer.alloc(4 + json.length + dataBytes);
  out.writeUInt32LE(json.length, 0);
  json.copy(out, 4);
  return out;
}

describe('push endpoint on its own server', () => {
  let app: FastifyInstance;
  let ingest: PushIngest;
  let url: string;

  before(async () => {
    app = Fastify();
    ingest = pushIngest({ token: TOKEN, maxMessageBytes: 1024 * 1024 });
    await app.register(ingest.plugin);
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    assert.ok(address !== null && typeof address === 'object');
    url = `ws://127.0.0.1:${address.port}/ingest`;
  });
  after(() => app.close());

  test('missing token gets 401', async () => {
    const r = await rejectedUpgrade(url, {});
    assert.equal(r.status, 401);
    const body = JSON.parse(r.body) as { error: string; message: string };
    assert.deepEqual(Object.keys(body).sort(), ['error', 'message']);
    assert.equal(body.error, 'token');
    assert.match(body.message, /^pushing volumes to \/ingest needs the session token, and none was given/);
    const empty = await rejectedUpgrade(`${url}?token=`, {});
    assert.equal(empty.status, 401);
  });

  test('wrong token gets 403', async () => {
    const r = await rejectedUpgrade(url, { authorization: `Bearer ${TOKEN}x` });
    assert.equal(r.status, 403);
    const body = JSON.parse(r.body) as { error: string; message: string };
    assert.deepEqual(Object.keys(body).sort(), ['error', 'message']);
    assert.equal(body.error, 'token');
    assert.match(body.message, /^pushing volumes to \/ingest: the session token given is wrong/);
    assert.ok(!r.body.includes(`${TOKEN}x`), 'the body does not echo the token');
    const query = await rejectedUpgrade(`${url}?token=nope`, {});
    assert.equal(query.status, 403);
  });

  test('header claiming 2^31 voxels is rejected without allocating', async () => {
    const sender = await connect(url, { authorization: `Bearer ${TOKEN}` });
    // 2048 x 1024 x 1024 = 2^31 voxels: 4 GiB as int16, 8 GiB as float32.
    const shape: [number, number, number] = [2048, 1024, 1024];
    global.gc?.();
    const before = process.memoryUsage();
    for (let i = 0; i < 5; i++) sender.socket.send(lyingMessage(i, shape, 1024));
    await waitFor(() => sender.acks.length === 5, '5 acknowledgements');
    const afterUse = process.memoryUsage();
    for (const ack of sender.acks) {
      assert.equal(ack.ok, false);
      assert.equal(ack.code, 'INGEST_INVALID');
      assert.match(ack.error ?? '', /larger than the size limit/);
      assert.match(ack.error ?? '', /2048 x 1024 x 1024 = 2147483648 voxels \(8\.00 GiB as float32\)/);
    }
    const arrayBufferGrowthMb = (afterUse.arrayBuffers - before.arrayBuffers) / 2 ** 20;
    const rssGrowthMb = (afterUse.rss - before.rss) / 2 ** 20;
    process.stdout.write(`# 5 claims of 2^31 voxels: arrayBuffers +${arrayBufferGrowthMb.toFixed(1)} MiB, rss +${rssGrowthMb.toFixed(1)} MiB\n`);
    // A single allocation of the claimed size would add 4096 MiB or more.
    assert.ok(arrayBufferGrowthMb < 256, `arrayBuffers grew by ${arrayBufferGrowthMb.toFixed(1)} MiB`);
    assert.ok(rssGrowthMb < 512, `rss grew by ${rssGrowthMb.toFixed(1)} MiB`);
    assert.equal(ingest.stats().received, 0, 'no volume was accepted');
    sender.socket.close();
    await sender.closed;
  });

  test('absurd expectedVolumes and header length are rejected', async () => {
    const sender = await connect(url, { authorization: `Bearer ${TOKEN}` });
    const data = new Int16Array(4 * 4 * 4);
    sender.socket.send(encodePushMessage({ ...header(0, [4, 4, 4]), expectedVolumes: 2 ** 31 }, data));
    const longHeader = Buffer.alloc(4 + 70 * 1024, 0x20);
    longHeader.writeUInt32LE(70 * 1024, 0);
    sender.socket.send(longHeader);
    await waitFor(() => sender.acks.length === 2, '2 acknowledgements');
    const [volumes, length] = sender.acks;
    assert.equal(volumes.ok, false);
    assert.match(volumes.error ?? '', /field: expectedVolumes; value: 2147483648; expected: an integer from 1 to 10000/);
    assert.equal(length.ok, false);
    assert.match(length.error ?? '', /field: header length; value: 71680/);
    sender.socket.close();
    await sender.closed;
  });

  test('message over maxPayload closes with 1009', async () => {
    await new Promise((r) => setTimeout(r, 50));
    const sender = await connect(url, { authorization: `Bearer ${TOKEN}` });
    sender.socket.send(Buffer.alloc(1024 * 1024 + 1));
    assert.equal(await sender.closed, 1009, 'ws closes with "message too big"');
  });
});

describe('push endpoint behind the dashboard (serve)', () => {
  let handle: DashboardHandle;
  let ingest: PushIngest;
  let base: string;

  before(async () => {
    ingest = pushIngest({ token: TOKEN });
    handle = await startDashboard(new TestSession(), { host: '127.0.0.1', port: 0, token: TOKEN, plugins: [ingest.plugin] });
    base = handle.url.replace(/^http/, 'ws').replace(/\/\?token=.*$/, '');
  });
  after(() => handle.close());

  test('ingest token errors name /ingest', async () => {
    const wrong = await rejectedUpgrade(`${base}/ingest`, { authorization: `Bearer ${TOKEN}x` });
    assert.equal(wrong.status, 403);
    assert.match(wrong.body, /pushing volumes to \/ingest: the session token given is wrong/);
    assert.doesNotMatch(wrong.body, /dashboard/);
    // From loopback the dashboard lets viewing through without a token, but /ingest needs one.
    const missing = await rejectedUpgrade(`${base}/ingest`, {});
    assert.equal(missing.status, 401);
    assert.match(missing.body, /pushing volumes to \/ingest needs the session token/);
    const viewing = await rejectedUpgrade(`${base}/stream?token=nope`, {});
    assert.equal(viewing.status, 403, 'other routes keep the viewing rule');
    assert.match(viewing.body, /viewing this dashboard/);
  });

  test('accepts a volume larger than the page sockets limit', async () => {
    // 64 x 64 x 36 int16 = 288 KiB: over the 64 KiB that /stream and /feedback accept.
    const shape: [number, number, number] = [64, 64, 36];
    const data = new Int16Array(64 * 64 * 36).map((_, i) => i % 1000);
    const sender = await connect(`${base}/ingest`, { authorization: `Bearer ${TOKEN}` });
    sender.socket.send(encodePushMessage(header(0, shape), data));
    await waitFor(() => ingest.stats().received === 1 || sender.socket.readyState !== WebSocket.OPEN, 'the volume or a close');
    assert.equal(ingest.stats().received, 1, 'the volume arrived');
    sender.socket.close();
    await sender.closed;
  });

  test('page stream still rejects a message over 64 KiB', async () => {
    const viewer = await connect(`${base}/stream`, {});
    viewer.socket.send(Buffer.alloc(64 * 1024 + 1));
    assert.equal(await viewer.closed, 1009);
  });

  test('page stream closes a 4 MiB message early', async () => {
    const viewer = await connect(`${base}/stream`, {});
    viewer.socket.send(Buffer.alloc(4 * 1024 * 1024));
    assert.equal(await viewer.closed, 1009);
  });

  test('many small messages in a burst are accepted', async () => {
    const client = await connect(`${base}/feedback?token=${TOKEN}`, {});
    // 2000 messages of about 60 bytes: 120 KiB in a few TCP reads, each message far under 64 KiB.
    for (let i = 0; i < 2000; i++) client.socket.send(JSON.stringify({ type: 'trigger', id: `burst-${i}` }));
    await waitFor(() => client.acks.length >= 100, 'replies to the burst');
    assert.equal(client.socket.readyState, WebSocket.OPEN, 'the burst did not close the socket');
    client.socket.close();
    await client.closed;
  });

  test('feedback socket rejects a message over 64 KiB', async () => {
    const client = await connect(`${base}/feedback?token=${TOKEN}`, {});
    client.socket.send(Buffer.alloc(64 * 1024 + 1));
    assert.equal(await client.closed, 1009);
  });
});
