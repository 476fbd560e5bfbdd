/**
 * The page stream (`/stream`): keeps the session's state (state.ts) and sends it to every
 * connected browser.
 *
 * A connecting client gets a `snapshot` JSON message, the images of the newest trials and the
 * newest volume mosaic, then live messages: run-info, trial, motion, latency, warning, summary,
 * status and run-end as JSON, frames and mosaics as binary messages (protocol.ts). A client that
 * lags misses droppable messages (clients.ts) but receives every final result in order.
 */
import type { WebSocket } from 'ws';
import { nowMs, type Frame, type PipelineEvent, type QualityFlag } from '../src/events.ts';
import { logger } from '../src/log.ts';
import { ClientChannel, type ChannelLimits, type Delivery } from './clients.ts';
import { MosaicScheduler } from './mosaic.ts';
import { encodeBinaryMessage, type FrameHeader } from './protocol.ts';
import { DashboardState, type StoredFrame } from './state.ts';

/** Minimum time between two `summary` messages (latency percentiles, metrics). */
const SUMMARY_INTERVAL_MS = 250;
/** Bytes counted per snapshot image for its binary header. */
const FRAME_HEADER_BYTES = 512;

export interface ViewerHubOptions {
  limits: ChannelLimits;
  mask?: Uint8Array;
  mosaicIntervalMs: number;
  /** Returns the control status sent in snapshots. */
  status(): object;
}

export class ViewerHub {
  private readonly viewers = new Set<ClientChannel>();
  /** Replaced when a new run starts (a replay started again from the page). */
  private state = new DashboardState();
  private readonly mosaics: MosaicScheduler;
  private lastSummaryMs = 0;
  private summaryTimer?: NodeJS.Timeout;
  private readonly log = logger.child({ stage: 'dashboard' });

  constructor(private readonly options: ViewerHubOptions) {
    this.mosaics = new MosaicScheduler(options.mask, options.mosaicIntervalMs, (volIdx) => this.flagsOf(volIdx), (message) => this.broadcast(message, 'droppable'));
  }

  get current(): DashboardState {
    return this.state;
  }

  get channels(): ClientChannel[] {
    return [...this.viewers];
  }

  add(socket: WebSocket, remoteAddress: string): void {
    const channel = new ClientChannel(socket, '/stream', remoteAddress, this.options.limits);
    this.sendSnapshot(channel);
    this.viewers.add(channel);
    this.log.info({ client: channel.id, remoteAddress, viewers: this.viewers.size }, 'dashboard viewer connected');
    socket.on('close', () => {
      this.viewers.delete(channel);
      this.log.info({ client: channel.id, viewers: this.viewers.size }, 'dashboard viewer disconnected');
    });
    // The page sends nothing on this socket; control goes through /api/control.
    socket.on('message', () => undefined);
  }

  /** Updates the state with one session event and forwards it to the viewers. */
  apply(event: PipelineEvent): void {
    const newRun = event.type === 'run-info' && this.state.run !== undefined && this.state.run.runId !== event.runId;
    if (newRun) this.state = new DashboardState();
    const warningsBefore = this.state.warningTotal;
    this.state.apply(event);

    if (newRun) {
      this.log.info({ runId: event.runId }, 'new run: viewers get a fresh snapshot');
      for (const channel of this.viewers) this.sendSnapshot(channel);
    } else {
      this.forward(event);
    }
    for (const warning of this.state.warningsSince(warningsBefore)) this.broadcast({ type: 'warning', warning }, 'essential');
    this.scheduleSummary();
  }

  broadcast(message: object | Buffer, delivery: Delivery): void {
    const data = Buffer.isBuffer(message) ? message : JSON.stringify(message);
    for (const channel of this.viewers) channel.send(data, delivery);
  }

  closeAll(): void {
    if (this.summaryTimer !== undefined) clearTimeout(this.summaryTimer);
    for (const channel of this.viewers) channel.socket.close(1001, 'dashboard server shutting down');
  }

  private sendSnapshot(channel: ClientChannel): void {
    channel.sendJson({ type: 'snapshot', clientId: channel.id, status: this.options.status(), state: this.state.snapshot() }, 'essential');

    // Send the newest trials' images that fit in half the client's buffer limit, so that the
    // snapshot alone never gets a client closed as too slow.
    const frames = this.state.snapshotFrames();
    let budgetBytes = this.options.limits.maxBufferedBytes / 2;
    let first = frames.length;
    while (first > 0 && frames[first - 1].image.byteLength + FRAME_HEADER_BYTES <= budgetBytes) {
      first -= 1;
      budgetBytes -= frames[first].image.byteLength + FRAME_HEADER_BYTES;
    }
    for (const frame of frames.slice(first)) channel.send(snapshotFrameMessage(frame), 'essential');

    const mosaic = this.mosaics.latest;
    if (mosaic !== undefined) channel.send(mosaic, 'essential');
  }

  private forward(event: PipelineEvent): void {
    const state = this.state;
    switch (event.type) {
      case 'run-info':
        this.broadcast({ type: 'run-info', run: state.run, trials: state.snapshot().trials }, 'essential');
        break;
      case 'volume':
        this.mosaics.offer(event);
        break;
      case 'masked-volume':
        this.broadcast({ type: 'motion', point: state.motion[state.motion.length - 1] }, 'essential');
        break;
      case 'trial-estimate':
      case 'decoded': {
        const trial = state.trials.get(event.trialId);
        this.broadcast({ type: 'trial', trial, current: state.currentTrialId === event.trialId }, event.final ? 'essential' : 'droppable');
        break;
      }
      case 'frame':
        this.forwardFrame(event);
        break;
      case 'stage-timing':
        this.broadcast({ type: 'latency', stage: event.stage, key: event.volIdx ?? event.trialId ?? -1, durationMs: event.endMs - event.startMs }, 'droppable');
        break;
      case 'run-end':
        this.sendSummary('essential');
        this.broadcast({ type: 'run-end', volumesReceived: event.volumesReceived, error: event.error }, 'essential');
        break;
      default:
        break;
    }
  }

  private forwardFrame(event: Frame): void {
    const isResult = !event.provisional && event.kind !== 'img2img-step';
    const delivery: Delivery = isResult ? 'essential' : 'droppable';
    const header: FrameHeader = {
      type: 'frame', runId: event.runId, trialId: event.trialId, volIdx: event.volIdx, kind: event.kind, provisional: event.provisional,
      step: event.step, stepCount: event.stepCount, mime: event.mime, width: event.width, height: event.height, sentAtMs: event.sentAtMs,
    };
    this.broadcast(encodeBinaryMessage(header, event.image), delivery);
    const trial = this.state.trials.get(event.trialId);
    this.broadcast({ type: 'trial', trial, current: true }, delivery);
  }

  private sendSummary(delivery: Delivery): void {
    const state = this.state;
    this.lastSummaryMs = nowMs();
    this.broadcast({
      type: 'summary',
      volumesReceived: state.volumesReceived,
      lastVolIdx: state.lastVolIdx,
      latency: state.latencySummary(),
      metrics: state.metrics(),
      warningCounts: state.warningCounts,
    }, delivery);
  }

  private scheduleSummary(): void {
    if (this.summaryTimer !== undefined) return;
    const waitMs = Math.max(0, SUMMARY_INTERVAL_MS - (nowMs() - this.lastSummaryMs));
    this.summaryTimer = setTimeout(() => {
      this.summaryTimer = undefined;
      this.sendSummary('droppable');
    }, waitMs);
  }

  private flagsOf(volIdx: number): QualityFlag[] {
    const motion = this.state.motion;
    for (let n = motion.length - 1; n >= 0; n--) {
      if (motion[n].volIdx === volIdx) return motion[n].flags;
    }
    return [];
  }
}

function snapshotFrameMessage(frame: StoredFrame): Buffer {
  const header: FrameHeader = { type: 'frame', ...frame.header, fromSnapshot: true };
  return encodeBinaryMessage(header, frame.image);
}
