import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import type { ChannelStats } from '../../dashboard/clients.ts';
import type { FrameHeader } from '../../dashboard/protocol.ts';
import { TOKEN, TestSession, emitTrial, noiseJpeg } from './fixtures.ts';
import { RecordingClient } from './ws-client.ts';

const LABELS = ['scissors', 'face', 'cat', 'shoe', 'house', 'scrambledpix', 'bottle', 'chair'];
/** img2img steps per trial: droppable previews between the essential low-level and final frames. */
const PREVIEW_STEPS = 8;

function streamUrl(handle: DashboardHandle): string {
  return `ws://${new URL(handle.url).host}/stream`;
}

async function stats(handle: DashboardHandle): Promise<{ clients: ChannelStats[]; rssBytes: number }> {
  const response = await fetch(`http://${new URL(handle.url).host}/api/stats`);
  return (await response.json()) as { clients: ChannelStats[]; rssBytes: number };
}

/** Stops reading the socket, so the server's sends pile up in the kernel and then in ws. */
function pauseReading(client: RecordingClient): Socket {
  const socket = (client.socket as unknown as { _socket: Socket })._socket;
  socket.pause();
  return socket;
}

/** Emits `count` trials, one every `intervalMs`, each with 1 low-level, PREVIEW_STEPS previews and 1 final frame. */
async function produceTrials(session: TestSession, runId: string, firstTrialId: number, count: number, intervalMs: number, images: Uint8Array[]): Promise<void> {
  for (let n = 0; n < count; n++) {
    const trialId = firstTrialId + n;
    emitTrial(session, {
      runId, trialId, stimulusId: LABELS[trialId % LABELS.length], candidates: LABELS, trueRank: 1 + (trialId % 3),
      previewSteps: PREVIEW_STEPS, image: images[trialId % images.length], volIdx: trialId,
    });
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function finalFrames(client: RecordingClient, runId: string): { trialId: number; delayMs: number }[] {
  return client.binaries('frame').flatMap((m) => {
    const header = m.binary!.header as FrameHeader;
    if (header.kind !== 'final' || header.runId !== runId || header.fromSnapshot === true) return [];
    return [{ trialId: header.trialId, delayMs: m.atMs - header.sentAtMs }];
  });
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function describeDelays(label: string, values: number[]): string {
  return `${label}: n ${values.length}, p50 ${quantile(values, 0.5).toFixed(2)} ms, p95 ${quantile(values, 0.95).toFixed(2)} ms, max ${Math.max(...values).toFixed(2)} ms`;
}

describe('slow dashboard client', () => {
  test('paused client does not delay a fast one', async (t: TestContext) => {
    const session = new TestSession();
    const handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
    const images = await Promise.all([1, 2, 3, 4].map((seed) => noiseJpeg(seed)));
    const trialCount = 200;
    const intervalMs = 50;
    try {
      // Baseline: the fast client alone, after 30 warm-up trials so that JIT compilation does
      // not count against the baseline.
      const alone = await RecordingClient.connect(streamUrl(handle), {}, false);
      await produceTrials(session, 'warm-up', 0, 30, intervalMs, images);
      await produceTrials(session, 'baseline', 0, 60, intervalMs, images);
      await alone.waitFor(() => finalFrames(alone, 'baseline').length === 60, 'the 60 baseline final frames');
      const baselineDelays = finalFrames(alone, 'baseline').map((f) => f.delayMs);
      alone.close();

      // The slow client reads nothing for 10 s while trials keep coming, then reads again.
      const fast = await RecordingClient.connect(streamUrl(handle), {}, false);
      const slow = await RecordingClient.connect(streamUrl(handle), {}, false);
      await slow.waitFor(() => slow.json('snapshot').length === 1, 'the snapshot');
      const rssBeforeBytes = (await stats(handle)).rssBytes;
      const slowSocket = pauseReading(slow);
      const production = produceTrials(session, 'loaded', 0, trialCount, intervalMs, images);
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      const duringPause = await stats(handle);
      slowSocket.resume();
      await production;

      await fast.waitFor(() => finalFrames(fast, 'loaded').length === trialCount, `all ${trialCount} final frames on the fast client`);
      const fastFinals = finalFrames(fast, 'loaded');
      assert.deepEqual(fastFinals.map((f) => f.trialId), Array.from({ length: trialCount }, (_, n) => n), 'fast client gets every final frame in order');

      await slow.waitFor(() => finalFrames(slow, 'loaded').length === trialCount, `all ${trialCount} final frames on the slow client`, 30_000);
      assert.deepEqual(finalFrames(slow, 'loaded').map((f) => f.trialId), Array.from({ length: trialCount }, (_, n) => n), 'slow client still gets every final frame in order');
      const slowPreviews = slow.binaries('frame').filter((m) => (m.binary!.header as FrameHeader).kind === 'img2img-step' && (m.binary!.header as FrameHeader).runId === 'loaded').length;
      const fastPreviews = fast.binaries('frame').filter((m) => (m.binary!.header as FrameHeader).kind === 'img2img-step' && (m.binary!.header as FrameHeader).runId === 'loaded').length;
      assert.equal(fastPreviews, trialCount * PREVIEW_STEPS, 'fast client misses no preview');
      assert.ok(slowPreviews < trialCount * PREVIEW_STEPS, 'slow client misses previews');

      const slowId = slow.json('snapshot')[0].clientId;
      const slowStats = (await stats(handle)).clients.find((c) => c.id === slowId);
      assert.ok(slowStats !== undefined, `stats list the slow client ${String(slowId)}`);
      assert.ok(slowStats.droppedMessages > 0, 'server dropped messages for the slow client');
      assert.ok(slowStats.maxBufferedBytesSeen <= 32 * 1024 * 1024 + 1024 * 1024, `slow client buffer stays bounded (max ${slowStats.maxBufferedBytesSeen} bytes)`);
      const rssGrowthMb = (duringPause.rssBytes - rssBeforeBytes) / 2 ** 20;
      assert.ok(rssGrowthMb < 200, `server RSS grew ${rssGrowthMb.toFixed(1)} MB during the pause`);

      const loadedDelays = fastFinals.map((f) => f.delayMs);
      t.diagnostic(describeDelays('fast client alone', baselineDelays));
      t.diagnostic(describeDelays('fast client beside a paused one', loadedDelays));
      t.diagnostic(`extra delay: p50 ${(quantile(loadedDelays, 0.5) - quantile(baselineDelays, 0.5)).toFixed(2)} ms, p95 ${(quantile(loadedDelays, 0.95) - quantile(baselineDelays, 0.95)).toFixed(2)} ms`);
      t.diagnostic(`slow client: ${slowPreviews} of ${trialCount * PREVIEW_STEPS} previews received, ${slowStats.droppedMessages} messages dropped, buffer max ${(slowStats.maxBufferedBytesSeen / 2 ** 20).toFixed(1)} MiB; server RSS +${rssGrowthMb.toFixed(1)} MB`);
      fast.close();
      slow.close();
    } finally {
      await handle.close();
    }
  });

  test('client over the buffer limit is closed', async () => {
    const session = new TestSession();
    const handle = await startDashboard(session, {
      host: '127.0.0.1', port: 0, token: TOKEN, clientLimits: { highWaterBytes: 64 * 1024, maxBufferedBytes: 1024 * 1024 },
    });
    const images = await Promise.all([5, 6].map((seed) => noiseJpeg(seed)));
    try {
      const fast = await RecordingClient.connect(streamUrl(handle), {}, false);
      const slow = await RecordingClient.connect(streamUrl(handle), {}, false);
      await slow.waitFor(() => slow.json('snapshot').length === 1, 'the snapshot');
      const slowSocket = pauseReading(slow);
      await produceTrials(session, 'burst', 0, 150, 5, images);
      await fast.waitFor(() => finalFrames(fast, 'burst').length === 150, 'all final frames on the fast client');
      // The server closes the slow client, then drops its socket after a grace period.
      const deadline = Date.now() + 15_000;
      while ((await stats(handle)).clients.length > 1) {
        assert.ok(Date.now() < deadline, 'the server dropped the slow client within 15 s');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      slowSocket.resume();
      await slow.waitFor(() => slow.closeCode !== undefined, 'the slow client to see the close', 15_000);
      assert.ok(slow.closeCode === 4008 || slow.closeCode === 1006, `close code ${slow.closeCode}`);
      assert.equal(finalFrames(slow, 'burst').length < 150, true, 'the slow client was closed before it got every frame');

      const again = await RecordingClient.connect(streamUrl(handle), {}, false);
      const lastFrameArrived = (): boolean => again.binaries('frame').some((m) => (m.binary!.header as FrameHeader).trialId === 149 && (m.binary!.header as FrameHeader).kind === 'final');
      await again.waitFor(() => again.json('snapshot').length === 1 && lastFrameArrived(), 'the snapshot and its newest frame after reconnecting');
      const snapshot = again.json('snapshot')[0].state as { trials: { trialId: number }[] };
      assert.equal(snapshot.trials.length, 150);
      // The snapshot's images are cut to fit the buffer limit, newest trials kept.
      const snapshotFrames = again.binaries('frame').map((m) => m.binary!.header as FrameHeader);
      assert.ok(snapshotFrames.length < 150 * 3);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(again.closeCode, undefined, 'the reconnected client stays connected');
      assert.equal((await stats(handle)).clients.length, 2);
      again.close();
      fast.close();
    } finally {
      await handle.close();
    }
  });
});
