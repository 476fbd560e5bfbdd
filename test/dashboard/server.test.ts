import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import { isLoopbackAddress } from '../../dashboard/auth.ts';
import { chooseSlices, renderMosaic } from '../../dashboard/mosaic.ts';
import { decodeBinaryMessage, encodeBinaryMessage, type FrameHeader, type MosaicHeader } from '../../dashboard/protocol.ts';
import { isMindeyeError } from '../../src/errors.ts';
import type { TrialView } from '../../dashboard/state.ts';
import { TOKEN, TestSession, emitHaxbyVolumes, emitTrial, noiseJpeg, readHaxbyMask, readHaxbyTrials } from './fixtures.ts';
import { RecordingClient } from './ws-client.ts';

const RUN_ID = 'haxby-r1';
const LABELS = ['scissors', 'face', 'cat', 'shoe', 'house', 'scrambledpix', 'bottle', 'chair'];

function wsUrl(handle: DashboardHandle, path: string, token?: string): string {
  const url = new URL(handle.url);
  return `ws://${url.host}${path}${token === undefined ? '' : `?token=${encodeURIComponent(token)}`}`;
}

function httpBase(handle: DashboardHandle): string {
  const url = new URL(handle.url);
  return `http://${url.host}`;
}

describe('dashboard server', () => {
  let session: TestSession;
  let handle: DashboardHandle;
  let volumeCount = 0;
  const image = new Map<number, Uint8Array>();

  before(async () => {
    session = new TestSession();
    session.mask = readHaxbyMask();
    session.images.set('candidate/face', await noiseJpeg(1, 64));
    handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN, mosaicIntervalMs: 0 });
    volumeCount = await emitHaxbyVolumes(session, RUN_ID);
    for (let trialId = 0; trialId < 3; trialId++) {
      image.set(trialId, await noiseJpeg(10 + trialId));
      emitTrial(session, {
        runId: RUN_ID, trialId, stimulusId: LABELS[trialId], candidates: LABELS, trueRank: trialId + 1,
        previewSteps: 2, image: image.get(trialId)!, metrics: { pixCorr: 0.1 * (trialId + 1), ssim: 0.2 },
      });
    }
    session.emit({ type: 'gap', runId: RUN_ID, volIdx: 40, reason: 'volume 40 missing from the export folder' });
    session.emit({ type: 'warning', runId: RUN_ID, kind: 'skipped', trialId: 2, message: 'img2img skipped under load' });
  });

  after(async () => {
    await handle.close();
  });

  test('url carries the token and a loopback address', () => {
    const url = new URL(handle.url);
    assert.equal(url.hostname, '127.0.0.1');
    assert.equal(url.searchParams.get('token'), TOKEN);
    assert.ok(Number(url.port) > 0);
  });

  test('page and assets load from loopback without a token', async () => {
    const page = await fetch(`${httpBase(handle)}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /mindeye-rt dashboard/);
    for (const asset of ['app.js', 'chart.js', 'style.css']) {
      const response = await fetch(`${httpBase(handle)}/${asset}`);
      assert.equal(response.status, 200, asset);
    }
  });

  test('wrong token is rejected even on loopback', async () => {
    const response = await fetch(`${httpBase(handle)}/api/status?token=nope`);
    assert.equal(response.status, 403);
    const body = (await response.json()) as { message: string };
    assert.match(body.message, /token given is wrong/);
  });

  test('status reports state, speed and run id', async () => {
    const response = await fetch(`${httpBase(handle)}/api/status`);
    const body = (await response.json()) as Record<string, unknown>;
    assert.equal(body.state, 'idle');
    assert.equal(body.speed, 'realtime');
    assert.equal(body.runId, RUN_ID);
    assert.equal(body.simulated, false);
  });

  test('control without a token is rejected', async () => {
    const response = await fetch(`${httpBase(handle)}/api/control/pause`, { method: 'POST' });
    assert.equal(response.status, 401);
    const body = (await response.json()) as { message: string };
    assert.match(body.message, /needs the session token/);
    assert.ok(!session.actions.includes('pause'));
  });

  test('control with a wrong token is rejected', async () => {
    const response = await fetch(`${httpBase(handle)}/api/control/stop`, { method: 'POST', headers: { authorization: 'Bearer wrong-token-123' } });
    assert.equal(response.status, 403);
    assert.ok(!session.actions.includes('stop'));
  });

  test('control cookie alone does not authorize', async () => {
    const response = await fetch(`${httpBase(handle)}/api/control/stop`, { method: 'POST', headers: { cookie: `mindeye_token=${TOKEN}` } });
    assert.equal(response.status, 401);
  });

  test('control actions reach the session', async () => {
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    for (const action of ['start', 'pause', 'resume']) {
      const response = await fetch(`${httpBase(handle)}/api/control/${action}`, { method: 'POST', headers: auth, body: '{}' });
      assert.equal(response.status, 200, action);
    }
    const speed = await fetch(`${httpBase(handle)}/api/control/speed`, { method: 'POST', headers: auth, body: JSON.stringify({ speed: '20' }) });
    assert.equal(speed.status, 200);
    const body = (await speed.json()) as { state: string; speed: string };
    assert.equal(body.speed, '20x');
    assert.equal(body.state, 'running');
    assert.deepEqual(session.actions.slice(-4), ['start', 'pause', 'resume', 'speed 20x']);
  });

  test('invalid speed is rejected with the reason', async () => {
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const bad = await fetch(`${httpBase(handle)}/api/control/speed`, { method: 'POST', headers: auth, body: JSON.stringify({ speed: '-3' }) });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { message: string }).message, /invalid speed "-3"/);
    const missing = await fetch(`${httpBase(handle)}/api/control/speed`, { method: 'POST', headers: auth, body: '{}' });
    assert.equal(missing.status, 400);
    assert.match(((await missing.json()) as { message: string }).message, /missing field "speed"/);
  });

  test('unknown control action is rejected', async () => {
    const response = await fetch(`${httpBase(handle)}/api/control/rewind`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(response.status, 400);
  });

  test('image route serves session images', async () => {
    const found = await fetch(`${httpBase(handle)}/api/image/candidate/face`);
    assert.equal(found.status, 200);
    assert.equal(found.headers.get('content-type'), 'image/jpeg');
    const bytes = new Uint8Array(await found.arrayBuffer());
    assert.deepEqual(bytes, new Uint8Array(session.images.get('candidate/face')!));
    const missing = await fetch(`${httpBase(handle)}/api/image/stimulus/face`);
    assert.equal(missing.status, 404);
    const badKind = await fetch(`${httpBase(handle)}/api/image/mask/face`);
    assert.equal(badKind.status, 400);
    const failed = await fetch(`${httpBase(handle)}/api/image/stimulus/unreadable`);
    assert.equal(failed.status, 500);
    assert.match(((await failed.json()) as { message: string }).message, /reading stimulus image "unreadable" failed: HDF5 read failed/);
  });

  test('late client receives the state snapshot', async () => {
    const client = await RecordingClient.connect(wsUrl(handle, '/stream'));
    await client.waitFor(() => client.binaries('mosaic').length > 0, 'the volume mosaic');
    const snapshot = client.json('snapshot')[0] as unknown as { state: { motion: unknown[]; trials: TrialView[]; run: { runId: string }; metrics: Record<string, number>; latency: Record<string, unknown>; warningCounts: Record<string, number> } };
    assert.equal(client.messages[0].json?.type, 'snapshot');
    assert.equal(snapshot.state.run.runId, RUN_ID);
    assert.equal(snapshot.state.motion.length, volumeCount);
    assert.equal(snapshot.state.trials.length, 8);
    assert.deepEqual(snapshot.state.trials.filter((t) => t.decoded?.final).map((t) => t.decoded?.trueRank), [1, 2, 3]);
    assert.equal(snapshot.state.metrics.retrievalTop1, 1 / 3);
    assert.equal(snapshot.state.metrics.retrievalChance, 1 / 8);
    assert.ok(Math.abs(snapshot.state.metrics.pixCorrMean - 0.2) < 1e-12);
    assert.ok('preprocess' in snapshot.state.latency);
    assert.ok('betaToFirstFrame' in snapshot.state.latency);
    assert.equal(snapshot.state.warningCounts.gap, 1);
    assert.equal(snapshot.state.warningCounts.skipped, 1);

    const frames = client.binaries('frame').map((m) => m.binary!);
    assert.deepEqual(frames.map((f) => `${(f.header as FrameHeader).trialId}:${(f.header as FrameHeader).kind}`), [
      '0:low-level', '0:img2img-step', '0:final', '1:low-level', '1:img2img-step', '1:final', '2:low-level', '2:img2img-step', '2:final',
    ]);
    assert.ok(frames.every((f) => (f.header as FrameHeader).fromSnapshot === true));
    assert.deepEqual(new Uint8Array(frames[2].image), image.get(0));
    const mosaic = client.binaries('mosaic')[0].binary!;
    assert.equal((mosaic.header as MosaicHeader).volIdx, volumeCount - 1);
    assert.equal((mosaic.header as MosaicHeader).hasMaskOutline, true);
    const meta = await sharp(mosaic.image).metadata();
    assert.equal(meta.format, 'png');
    assert.equal(meta.width, (mosaic.header as MosaicHeader).width);
    client.close();
  });

  test('live client receives trials and frames in order', async () => {
    const client = await RecordingClient.connect(wsUrl(handle, '/stream'));
    await client.waitFor(() => client.json('snapshot').length === 1, 'the snapshot');
    const start = client.messages.length;
    const jpeg = await noiseJpeg(99);
    emitTrial(session, { runId: RUN_ID, trialId: 3, stimulusId: 'shoe', candidates: LABELS, trueRank: 1, previewSteps: 3, image: jpeg });
    await client.waitFor(() => client.binaries('frame').some((m) => (m.binary!.header as FrameHeader).trialId === 3 && (m.binary!.header as FrameHeader).kind === 'final'), 'the final frame of trial 3');
    const live = client.messages.slice(start);
    const kinds = live.filter((m) => m.binary?.header.type === 'frame' && (m.binary.header as FrameHeader).fromSnapshot !== true).map((m) => `${(m.binary!.header as FrameHeader).kind}:${(m.binary!.header as FrameHeader).step}`);
    assert.deepEqual(kinds, ['low-level:0', 'img2img-step:1', 'img2img-step:2', 'img2img-step:3', 'final:3']);
    const trialUpdates = live.flatMap((m) => (m.json?.type === 'trial' ? [m.json.trial as TrialView] : []));
    assert.ok(trialUpdates.some((t) => t.trialId === 3 && t.decoded?.final === true && t.decoded.trueRank === 1));
    await client.waitFor(() => client.json('summary').some((s) => (s.metrics as { decodedTrials: number }).decodedTrials === 4), 'a summary with 4 decoded trials');
    client.close();
  });

  test('warnings reach live clients', async () => {
    const client = await RecordingClient.connect(wsUrl(handle, '/stream'));
    await client.waitFor(() => client.json('snapshot').length === 1, 'the snapshot');
    session.emit({ type: 'warning', runId: RUN_ID, kind: 'corrupt', volIdx: 77, message: 'volume 77 is truncated; skipped' });
    await client.waitFor(() => client.json('warning').length > 0, 'the warning');
    const warning = client.json('warning')[0].warning as { kind: string; volIdx: number; message: string };
    assert.equal(warning.kind, 'corrupt');
    assert.equal(warning.volIdx, 77);
    client.close();
  });

  test('new run sends a fresh snapshot', async () => {
    const other = new TestSession();
    const otherHandle = await startDashboard(other, { host: '127.0.0.1', port: 0, token: TOKEN });
    try {
      await emitHaxbyVolumes(other, 'first-run', { maxVolumes: 5 });
      const client = await RecordingClient.connect(wsUrl(otherHandle, '/stream'));
      await client.waitFor(() => client.json('snapshot').length === 1, 'the first snapshot');
      await emitHaxbyVolumes(other, 'second-run', { maxVolumes: 3 });
      await client.waitFor(() => client.json('snapshot').length === 2, 'the snapshot of the new run');
      const second = client.json('snapshot')[1].state as { run: { runId: string }; motion: unknown[] };
      assert.equal(second.run.runId, 'second-run');
      await client.waitFor(() => client.json('motion').length >= 3, 'the new run\'s motion points');
      const motion = client.json('motion').map((m) => (m.point as { volIdx: number }).volIdx);
      assert.deepEqual(motion.slice(-3), [0, 1, 2]);
      client.close();
    } finally {
      await otherHandle.close();
    }
  });

  test('status change is broadcast', async () => {
    const client = await RecordingClient.connect(wsUrl(handle, '/stream'));
    await client.waitFor(() => client.json('snapshot').length === 1, 'the snapshot');
    session.state = 'ended';
    await client.waitFor(() => client.json('status').some((s) => s.state === 'ended'), 'a status message with state ended', 5000);
    client.close();
  });
});

describe('dashboard viewing token', () => {
  let handle: DashboardHandle;

  before(async () => {
    handle = await startDashboard(new TestSession(), { host: '127.0.0.1', port: 0, token: TOKEN, requireTokenForViewing: true });
  });

  after(async () => {
    await handle.close();
  });

  test('page without a token is rejected with the reason', async () => {
    const response = await fetch(`${httpBase(handle)}/`);
    assert.equal(response.status, 401);
    assert.match(((await response.json()) as { message: string }).message, /needs the session token.*\?token=/);
  });

  test('page URL with the token sets a cookie for the assets', async () => {
    const response = await fetch(handle.url);
    assert.equal(response.status, 200);
    const cookie = response.headers.get('set-cookie') ?? '';
    assert.match(cookie, /^mindeye_token=/);
    assert.match(cookie, /HttpOnly/);
    const asset = await fetch(`${httpBase(handle)}/app.js`, { headers: { cookie: cookie.split(';')[0] } });
    assert.equal(asset.status, 200);
  });

  test('stream without a token is rejected', async () => {
    const rejected = await RecordingClient.expectRejected(wsUrl(handle, '/stream'));
    assert.equal(rejected.status, 401);
    const accepted = await RecordingClient.connect(wsUrl(handle, '/stream', TOKEN));
    await accepted.waitFor(() => accepted.json('snapshot').length === 1, 'the snapshot');
    accepted.close();
  });
});

describe('dashboard options', () => {
  test('short token is rejected', async () => {
    await assert.rejects(startDashboard(new TestSession(), { host: '127.0.0.1', port: 0, token: 'abc' }), (err: unknown) => {
      assert.ok(isMindeyeError(err));
      assert.match(err.message, /--token/);
      return true;
    });
  });

  test('invalid port is rejected', async () => {
    await assert.rejects(startDashboard(new TestSession(), { host: '127.0.0.1', port: 70000, token: TOKEN }), /Dashboard port is invalid/);
  });

  test('port in use is reported', async () => {
    const first = await startDashboard(new TestSession(), { host: '127.0.0.1', port: 0, token: TOKEN });
    try {
      const port = Number(new URL(first.url).port);
      await assert.rejects(startDashboard(new TestSession(), { host: '127.0.0.1', port, token: TOKEN }), /EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});

describe('dashboard helpers', () => {
  test('loopback addresses are recognised', () => {
    for (const address of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackAddress(address), true, address);
    for (const address of ['10.0.0.1', '192.168.1.5', '::ffff:10.0.0.1', 'fe80::1', '', undefined]) assert.equal(isLoopbackAddress(address), false, String(address));
  });

  test('binary message round-trips header and image', () => {
    const header: FrameHeader = { type: 'frame', runId: 'r', trialId: 4, volIdx: 9, kind: 'final', provisional: false, step: 2, stepCount: 2, mime: 'image/jpeg', width: 8, height: 8, sentAtMs: 1.5 };
    const image = Uint8Array.from([0xff, 0xd8, 1, 2, 3]);
    const decoded = decodeBinaryMessage(encodeBinaryMessage(header, image));
    assert.deepEqual(decoded.header, header);
    assert.deepEqual(new Uint8Array(decoded.image), image);
  });

  test('truncated binary message is rejected', () => {
    const message = encodeBinaryMessage({ type: 'mosaic', runId: 'r', volIdx: 0, mime: 'image/png', width: 1, height: 1, slices: [0], hasMaskOutline: false, flags: [] }, new Uint8Array(2));
    assert.throws(() => decodeBinaryMessage(message.subarray(0, 10)), /exceeds the message size/);
    assert.throws(() => decodeBinaryMessage(new Uint8Array(2)), /shorter than its 4-byte length prefix/);
  });

  test('mosaic tiles slices and outlines the mask', async () => {
    const shape: [number, number, number] = [10, 8, 20];
    const data = Float32Array.from({ length: 10 * 8 * 20 }, (_, n) => n % 7);
    const mask = new Uint8Array(data.length);
    for (let k = 0; k < 20; k++) for (let j = 2; j < 6; j++) for (let i = 3; i < 8; i++) mask[i + 10 * (j + 8 * k)] = 1;
    const mosaic = await renderMosaic(data, shape, mask);
    assert.deepEqual(mosaic.slices, chooseSlices(20));
    assert.equal(mosaic.slices.length, 16);
    const { data: rgb, info } = await sharp(mosaic.png).raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, mosaic.width);
    let orange = 0;
    for (let p = 0; p < rgb.length; p += info.channels) if (rgb[p] === 255 && rgb[p + 1] === 140 && rgb[p + 2] === 0) orange += 1;
    assert.ok(orange > 0, 'mask outline pixels are drawn');
    const plain = await renderMosaic(data, shape);
    assert.equal(plain.hasMaskOutline, false);
  });

  test('mosaic rejects a shape that does not match the data', async () => {
    await assert.rejects(renderMosaic(new Float32Array(10), [2, 2, 2]), /needs 8/);
  });

  test('trial list from the events file has all eight trials', () => {
    assert.deepEqual(readHaxbyTrials().map((t) => t.stimulusId), LABELS);
  });
});
