/**
 * The live dashboard server: serves the page (dashboard/public), streams the session's state to
 * any number of browsers on `/stream`, runs the closed-loop feedback API on `/feedback` and
 * takes control actions (start, pause, resume, stop, speed) on `/api/control/:action`.
 *
 * Routes:
 *   GET  /                        page (index.html) and its assets
 *   WS   /stream                  page stream: a snapshot of the state, then live updates
 *   WS   /feedback                feedback API (feedback.ts, docs/feedback-api.md)
 *   GET  /api/status              { state, speed, simulated, runId }
 *   GET  /api/stats               per-client send statistics and server memory
 *   GET  /api/image/:kind/:id     JPEG of a stimulus or retrieval candidate
 *   POST /api/control/:action     start | pause | resume | stop | speed ({ "speed": "20" })
 *
 * Tokens (auth.ts): viewing from loopback needs none, viewing from elsewhere needs it, and
 * control and feedback input always need it.
 *
 * `/stream` messages: JSON text messages (snapshot, run-info, trial, motion, latency, warning,
 * summary, status, run-end) and binary messages for images (protocol.ts). A client that lags
 * misses droppable messages (clients.ts) but receives every final result in order.
 */
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import type { Observable, Subscription as RxSubscription } from 'rxjs';
import type { WebSocket } from 'ws';
import { MindeyeError } from '../src/errors.ts';
import { nowMs, type Frame, type PipelineEvent, type Volume } from '../src/events.ts';
import { formatSpeed, parseSpeed, type Speed } from '../src/ingest/source.ts';
import { logger } from '../src/log.ts';
import { TOKEN_COOKIE, checkToken, isLoopbackAddress, tokenSources } from './auth.ts';
import { ClientChannel, DEFAULT_LIMITS, type ChannelLimits, type Delivery } from './clients.ts';
import { FeedbackHub, type FeedbackInput } from './feedback.ts';
import { renderMosaic } from './mosaic.ts';
import { encodeBinaryMessage, type FrameHeader, type MosaicHeader } from './protocol.ts';
import { DashboardState, type StoredFrame } from './state.ts';

export type { FeedbackInput, StimulusOnsetInput, TriggerInput } from './feedback.ts';

export type SessionState = 'idle' | 'running' | 'paused' | 'stopped' | 'ended';

export interface DashboardSession {
  /** Hot stream of every event of the session (src/events.ts PipelineEvent), from run-info on. */
  events$: Observable<PipelineEvent>;
  control: {
    start(): void;
    pause(): void;
    resume(): void;
    stop(): void;
    setSpeed(speed: Speed): void;
    status(): { state: SessionState; speed: string };
  };
  /** Trigger pulses and stimulus onsets from the stimulus program (feedback input channel). */
  onFeedbackInput(msg: FeedbackInput): void;
  /** JPEG bytes of a ground-truth stimulus or a retrieval candidate, or undefined. */
  image(kind: 'stimulus' | 'candidate', id: string): Promise<Uint8Array | undefined>;
  /** Label everything "simulated subject" when true. */
  simulated: boolean;
  /** Analysis mask on the volume grid (NIfTI order, nonzero = inside); drawn as an outline on the volume mosaic. */
  mask?: Uint8Array;
}

export interface DashboardOptions {
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  token: string;
  plugins?: FastifyPluginAsync[];
  /** Ask for the token even from loopback (shared machines). Default false. */
  requireTokenForViewing?: boolean;
  /** FD threshold in mm drawn on the motion plot. Default 0.5 mm (Power et al. 2012 censoring). */
  fdThresholdMm?: number;
  /** Minimum time between two volume mosaics in ms. Default 200. */
  mosaicIntervalMs?: number;
  /** Per-client outbound buffer limits (bytes). */
  clientLimits?: ChannelLimits;
}

export interface DashboardHandle {
  /** Page URL with ?token=..., as printed for the user. */
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));
const SUMMARY_INTERVAL_MS = 250;
const STATUS_POLL_MS = 1000;
const CONTROL_ACTIONS = ['start', 'pause', 'resume', 'stop', 'speed'] as const;
type ControlAction = (typeof CONTROL_ACTIONS)[number];

export async function startDashboard(session: DashboardSession, opts: DashboardOptions): Promise<DashboardHandle> {
  validateOptions(opts);
  const log = logger.child({ stage: 'dashboard' });
  const limits = opts.clientLimits ?? DEFAULT_LIMITS;
  // Replaced when a new run starts (a replay started again from the page).
  let state = new DashboardState();
  const viewers = new Set<ClientChannel>();
  const feedback = new FeedbackHub({ onInput: (input) => session.onFeedbackInput(input), isSimulated: () => session.simulated || state.run?.simulated === true, limits });
  const mosaics = new MosaicScheduler(session.mask, opts.mosaicIntervalMs ?? 200, (message) => broadcast(message, 'droppable'));

  // Per-request logs are off because asset and image requests would flood the log. The hooks
  // below log rejected requests and control actions.
  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 64 * 1024,
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });

  // Viewing rule for everything but control, which checks its own (stricter) rule.
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith('/api/control/')) return;
    const check = checkToken(tokenSources(request.raw, true), opts.token, needsViewingToken(request), 'viewing this dashboard');
    if (!check.ok) {
      log.warn({ remoteAddress: request.ip, url: request.url.replace(/token=[^&]*/, 'token=***'), status: check.status }, 'dashboard request rejected');
      return reply.code(check.status).send({ error: 'token', message: check.reason });
    }
    if (check.tokenPresent && new URL(request.url, 'http://localhost').searchParams.has('token')) {
      reply.header('set-cookie', `${TOKEN_COOKIE}=${encodeURIComponent(opts.token)}; Path=/; HttpOnly; SameSite=Strict`);
    }
  });

  await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/', index: 'index.html', cacheControl: false });

  app.get('/stream', { websocket: true }, (socket: WebSocket, request: FastifyRequest) => {
    const channel = new ClientChannel(socket, '/stream', request.ip, limits);
    sendViewerSnapshot(channel);
    viewers.add(channel);
    log.info({ client: channel.id, remoteAddress: request.ip, viewers: viewers.size }, 'dashboard viewer connected');
    socket.on('close', () => {
      viewers.delete(channel);
      log.info({ client: channel.id, viewers: viewers.size }, 'dashboard viewer disconnected');
    });
    // The page sends nothing on this socket; control goes through /api/control.
    socket.on('message', () => undefined);
  });

  app.get('/feedback', { websocket: true }, (socket: WebSocket, request: FastifyRequest) => {
    const sources = tokenSources(request.raw, false);
    const canSend = sources.query !== undefined || sources.bearer !== undefined;
    feedback.add(socket, request.ip, canSend);
  });

  app.get('/api/status', async () => statusBody());

  app.get('/api/stats', async () => ({
    clients: [...viewers, ...feedback.channels].map((c) => c.stats()),
    rssBytes: process.memoryUsage().rss,
    heapUsedBytes: process.memoryUsage().heapUsed,
    volumesReceived: state.volumesReceived,
  }));

  app.get<{ Params: { kind: string; id: string } }>('/api/image/:kind/:id', {
    schema: { params: { type: 'object', properties: { kind: { enum: ['stimulus', 'candidate'] }, id: { type: 'string', minLength: 1, maxLength: 256 } }, required: ['kind', 'id'] } },
  }, async (request, reply) => {
    const { kind, id } = request.params;
    let bytes: Uint8Array | undefined;
    try {
      bytes = await session.image(kind as 'stimulus' | 'candidate', id);
    } catch (err) {
      log.error({ err, kind, id }, 'session failed to read an image');
      return reply.code(500).send({ error: 'image-failed', message: `reading ${kind} image "${id}" failed: ${(err as Error).message}` });
    }
    if (bytes === undefined) return reply.code(404).send({ error: 'not-found', message: `no ${kind} image with id "${id}" in this session` });
    return reply.type('image/jpeg').header('cache-control', 'private, max-age=3600').send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  });

  app.post<{ Params: { action: string }; Body: { speed?: string } | undefined }>('/api/control/:action', {
    schema: {
      params: { type: 'object', properties: { action: { enum: [...CONTROL_ACTIONS] } }, required: ['action'] },
      body: { type: ['object', 'null'], properties: { speed: { type: 'string', minLength: 1, maxLength: 32 } }, additionalProperties: false },
    },
  }, async (request, reply) => {
    const check = checkToken(tokenSources(request.raw, false), opts.token, true, `control action "${request.params.action}"`);
    if (!check.ok) {
      log.warn({ remoteAddress: request.ip, action: request.params.action, status: check.status }, 'control request rejected');
      return reply.code(check.status).send({ error: 'token', message: check.reason });
    }
    const action = request.params.action as ControlAction;
    if (action === 'speed') {
      const text = request.body?.speed;
      let speed: Speed;
      try {
        if (text === undefined) throw new RangeError('missing field "speed": send {"speed": "realtime" | "max" | a positive factor such as "20"}');
        speed = parseSpeed(text);
      } catch (err) {
        return reply.code(400).send({ error: 'invalid-speed', message: (err as Error).message });
      }
      session.control.setSpeed(speed);
      log.info({ action, speed: formatSpeed(speed) }, 'control action');
    } else {
      session.control[action]();
      log.info({ action }, 'control action');
    }
    const body = statusBody();
    broadcast({ type: 'status', ...body }, 'essential');
    return { ok: true, ...body };
  });

  for (const plugin of opts.plugins ?? []) await app.register(plugin);

  function needsViewingToken(request: FastifyRequest): boolean {
    return opts.requireTokenForViewing === true || !isLoopbackAddress(request.socket.remoteAddress);
  }

  function statusBody(): { state: SessionState; speed: string; simulated: boolean; runId?: string; fdThresholdMm: number } {
    const status = session.control.status();
    return { state: status.state, speed: status.speed, simulated: session.simulated || state.run?.simulated === true, runId: state.run?.runId, fdThresholdMm: opts.fdThresholdMm ?? 0.5 };
  }

  function broadcast(message: object | Buffer, delivery: Delivery): void {
    const data = Buffer.isBuffer(message) ? message : JSON.stringify(message);
    for (const channel of viewers) channel.send(data, delivery);
  }

  function sendViewerSnapshot(channel: ClientChannel): void {
    channel.sendJson({ type: 'snapshot', clientId: channel.id, status: statusBody(), state: state.snapshot() }, 'essential');
    // Send the newest trials' images that fit in half the client's buffer limit, so that the
    // snapshot alone never gets a client closed as too slow.
    const frames = state.snapshotFrames();
    let budgetBytes = limits.maxBufferedBytes / 2;
    let first = frames.length;
    while (first > 0 && frames[first - 1].image.byteLength + 512 <= budgetBytes) {
      first -= 1;
      budgetBytes -= frames[first].image.byteLength + 512;
    }
    for (const frame of frames.slice(first)) channel.send(frameMessage(frame, true), 'essential');
    const mosaic = mosaics.latest;
    if (mosaic !== undefined) channel.send(mosaic, 'essential');
  }

  // Event handling: update the state, then forward to viewers and feedback clients.
  let lastSummaryMs = 0;
  let summaryTimer: NodeJS.Timeout | undefined;
  const sendSummary = (delivery: Delivery): void => {
    lastSummaryMs = nowMs();
    broadcast({
      type: 'summary',
      volumesReceived: state.volumesReceived,
      lastVolIdx: state.lastVolIdx,
      latency: state.latencySummary(),
      metrics: state.metrics(),
      warningCounts: state.warningCounts,
    }, delivery);
  };
  const scheduleSummary = (): void => {
    if (summaryTimer !== undefined) return;
    const waitMs = Math.max(0, SUMMARY_INTERVAL_MS - (nowMs() - lastSummaryMs));
    summaryTimer = setTimeout(() => {
      summaryTimer = undefined;
      sendSummary('droppable');
    }, waitMs);
  };

  const onEvent = (event: PipelineEvent): void => {
    const newRun = event.type === 'run-info' && state.run !== undefined && state.run.runId !== event.runId;
    if (newRun) state = new DashboardState();
    const warningsBefore = state.warningTotal;
    state.apply(event);
    if (newRun) {
      log.info({ runId: event.runId }, 'new run: viewers get a fresh snapshot');
      for (const channel of viewers) sendViewerSnapshot(channel);
    } else {
      forwardToViewers(event);
    }
    for (const warning of state.warningsSince(warningsBefore)) broadcast({ type: 'warning', warning }, 'essential');
    feedback.publish(event);
    scheduleSummary();
  };

  const forwardToViewers = (event: PipelineEvent): void => {
    switch (event.type) {
      case 'run-info':
        broadcast({ type: 'run-info', run: state.run, trials: state.snapshot().trials }, 'essential');
        break;
      case 'volume':
        mosaics.offer(event, state);
        break;
      case 'masked-volume':
        broadcast({ type: 'motion', point: state.motion[state.motion.length - 1] }, 'essential');
        break;
      case 'trial-estimate':
      case 'decoded': {
        const trial = state.trials.get(event.trialId);
        broadcast({ type: 'trial', trial, current: state.currentTrialId === event.trialId }, event.final ? 'essential' : 'droppable');
        break;
      }
      case 'frame':
        forwardFrame(event);
        break;
      case 'stage-timing':
        broadcast({ type: 'latency', stage: event.stage, key: event.volIdx ?? event.trialId ?? -1, durationMs: event.endMs - event.startMs }, 'droppable');
        break;
      case 'run-end':
        sendSummary('essential');
        broadcast({ type: 'run-end', volumesReceived: event.volumesReceived, error: event.error }, 'essential');
        break;
      default:
        break;
    }
  };

  const forwardFrame = (event: Frame): void => {
    const isResult = !event.provisional && event.kind !== 'img2img-step';
    const delivery: Delivery = isResult ? 'essential' : 'droppable';
    const header: FrameHeader = {
      type: 'frame', runId: event.runId, trialId: event.trialId, volIdx: event.volIdx, kind: event.kind, provisional: event.provisional,
      step: event.step, stepCount: event.stepCount, mime: event.mime, width: event.width, height: event.height, sentAtMs: event.sentAtMs,
    };
    broadcast(encodeBinaryMessage(header, event.image), delivery);
    const trial = state.trials.get(event.trialId);
    broadcast({ type: 'trial', trial, current: true }, delivery);
  };

  const subscription: RxSubscription = session.events$.subscribe({
    next: (event) => {
      try {
        onEvent(event);
      } catch (err) {
        // A display bug must not end the session's event stream.
        log.error({ err, eventType: event.type }, 'dashboard failed to handle an event');
      }
    },
    error: (err: unknown) => {
      log.error({ err }, 'session event stream failed');
      broadcast({ type: 'status', ...statusBody(), error: String((err as Error)?.message ?? err) }, 'essential');
    },
    complete: () => log.info('session event stream completed'),
  });

  let lastStatus = JSON.stringify(statusBody());
  const statusTimer = setInterval(() => {
    const body = statusBody();
    const text = JSON.stringify(body);
    if (text !== lastStatus) {
      lastStatus = text;
      broadcast({ type: 'status', ...body }, 'essential');
    }
  }, STATUS_POLL_MS);
  statusTimer.unref();

  await app.listen({ host: opts.host, port: opts.port });
  const address = app.server.address() as AddressInfo;
  const hostForUrl = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${hostForUrl}:${address.port}/?token=${encodeURIComponent(opts.token)}`;
  log.info({ host: address.address, port: address.port }, 'dashboard listening');

  let closed = false;
  return {
    url,
    app,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      subscription.unsubscribe();
      clearInterval(statusTimer);
      if (summaryTimer !== undefined) clearTimeout(summaryTimer);
      for (const channel of viewers) channel.socket.close(1001, 'dashboard server shutting down');
      feedback.closeAll();
      await app.close();
      log.info('dashboard stopped');
    },
  };
}

function frameMessage(frame: StoredFrame, fromSnapshot: boolean): Buffer {
  const header: FrameHeader = { type: 'frame', ...frame.header, ...(fromSnapshot ? { fromSnapshot: true } : {}) };
  return encodeBinaryMessage(header, frame.image);
}

function validateOptions(opts: DashboardOptions): void {
  if (typeof opts.host !== 'string' || opts.host === '') {
    throw new MindeyeError('CLI_USAGE', 'Dashboard host is missing.', { field: '--host', value: opts.host, expected: 'an address such as 127.0.0.1', fix: 'pass --host 127.0.0.1 (or 0.0.0.0 to serve other machines)' });
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new MindeyeError('CLI_USAGE', 'Dashboard port is invalid.', { field: '--port', value: opts.port, expected: 'an integer from 0 to 65535 (0 picks a free port)', fix: 'pass --port 8080' });
  }
  if (typeof opts.token !== 'string' || opts.token.length < 8) {
    throw new MindeyeError('CLI_USAGE', 'Dashboard token is too short.', { field: '--token', value: `${String(opts.token?.length ?? 0)} characters`, expected: 'at least 8 characters', fix: 'omit --token for a random one, or pass a longer one' });
  }
}

/** Renders the newest volume as a mosaic, at most one every `intervalMs`, never queuing more than one. */
class MosaicScheduler {
  latest?: Buffer;
  private pending?: Volume;
  private busy = false;
  private lastStartMs = -Infinity;
  private state?: DashboardState;

  constructor(private readonly mask: Uint8Array | undefined, private readonly intervalMs: number, private readonly publish: (message: Buffer) => void) {}

  offer(volume: Volume, state: DashboardState): void {
    this.pending = volume;
    this.state = state;
    if (!this.busy) void this.run();
  }

  private async run(): Promise<void> {
    this.busy = true;
    try {
      while (this.pending !== undefined) {
        const waitMs = this.lastStartMs + this.intervalMs - nowMs();
        if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
        const volume = this.pending;
        this.pending = undefined;
        if (volume === undefined) break;
        this.lastStartMs = nowMs();
        await this.render(volume);
      }
    } finally {
      this.busy = false;
    }
  }

  private async render(volume: Volume): Promise<void> {
    try {
      const mosaic = await renderMosaic(volume.data, volume.shape, this.mask);
      const motion = this.state?.motion ?? [];
      let flags: MosaicHeader['flags'] = [];
      for (let n = motion.length - 1; n >= 0; n--) {
        if (motion[n].volIdx === volume.volIdx) {
          flags = motion[n].flags;
          break;
        }
      }
      const header: MosaicHeader = {
        type: 'mosaic',
        runId: volume.runId,
        volIdx: volume.volIdx,
        mime: 'image/png',
        width: mosaic.width,
        height: mosaic.height,
        slices: mosaic.slices,
        hasMaskOutline: mosaic.hasMaskOutline,
        flags,
      };
      this.latest = encodeBinaryMessage(header, mosaic.png);
      this.publish(this.latest);
    } catch (err) {
      logger.warn({ err, stage: 'dashboard', volIdx: volume.volIdx }, 'volume mosaic failed; the panel keeps the previous volume');
    }
  }
}
