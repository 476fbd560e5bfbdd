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
 * The page stream lives in viewers.ts, the feedback API in feedback.ts.
 */
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync, type FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import type { Observable, Subscription as RxSubscription } from 'rxjs';
import type { WebSocket } from 'ws';
import { MindeyeError } from '../src/errors.ts';
import { nowMs, type PipelineEvent, type StageTiming } from '../src/events.ts';
import { formatSpeed, parseSpeed, type Speed } from '../src/ingest/source.ts';
import { logger } from '../src/log.ts';
import { TOKEN_COOKIE, checkToken, isLoopbackAddress, tokenSources, tokensEqual } from './auth.ts';
import { DEFAULT_LIMITS, type ChannelLimits } from './clients.ts';
import { FeedbackHub, type FeedbackInput } from './feedback.ts';
import { ViewerHub } from './viewers.ts';
import { limitMessageBytes } from './ws-limit.ts';

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
  /** Receives a 'send' timing for every frame forwarded to the viewers and feedback clients. */
  onTiming?(timing: StageTiming): void;
}

export interface DashboardHandle {
  /** Page URL with ?token=..., as printed for the user. */
  url: string;
  app: FastifyInstance;
  close(): Promise<void>;
}

const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));
/** Largest message accepted on /stream and /feedback, and largest request body. */
const PAGE_MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * Stimulus and candidate ids as the image route accepts them. A session may turn an id into a
 * file name (a bank's thumbs/<id>.jpg), so an id cannot hold a path separator, a control
 * character or a leading dot ("..", hidden files). The route rejects any other id with 400.
 */
const IMAGE_ID_PATTERN = '^(?!\\.)[^/\\\\\\u0000-\\u001f\\u007f]+$';

/**
 * A plugin that serves a WebSocket route with larger messages states their maximum here. A
 * plugin that checks the session token on its own route names that route in
 * `tokenCheckedPath`, so that the viewing rule leaves its requests to it.
 */
export type WebSocketPlugin = FastifyPluginAsync & { maxMessageBytes?: number; tokenCheckedPath?: string };
const STATUS_POLL_MS = 1000;
const CONTROL_ACTIONS = ['start', 'pause', 'resume', 'stop', 'speed'] as const;
type ControlAction = (typeof CONTROL_ACTIONS)[number];

export async function startDashboard(session: DashboardSession, opts: DashboardOptions): Promise<DashboardHandle> {
  validateOptions(opts);
  const log = logger.child({ stage: 'dashboard' });
  const limits = opts.clientLimits ?? DEFAULT_LIMITS;
  const viewers = new ViewerHub({ limits, mask: session.mask, mosaicIntervalMs: opts.mosaicIntervalMs ?? 200, status: () => statusBody() });
  const isSimulated = (): boolean => session.simulated || viewers.current.run?.simulated === true;
  const feedback = new FeedbackHub({ onInput: (input) => session.onFeedbackInput(input), isSimulated, limits });

  // Per-request logs are off because asset and image requests would flood the log. The hooks
  // below log rejected requests and control actions.
  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: PAGE_MAX_MESSAGE_BYTES,
  });
  // One ws server serves every WebSocket route, so its maxPayload is the largest that any route
  // needs (a push plugin's volumes). The page stream and feedback sockets keep 64 KiB each.
  const pluginMaxPayload = Math.max(0, ...(opts.plugins ?? []).map((p) => (p as WebSocketPlugin).maxMessageBytes ?? 0));
  await app.register(fastifyWebsocket, { options: { maxPayload: Math.max(PAGE_MAX_MESSAGE_BYTES, pluginMaxPayload) } });
  const limitPageSocket = (socket: WebSocket, request: FastifyRequest) => {
    if (pluginMaxPayload <= PAGE_MAX_MESSAGE_BYTES) return;
    limitMessageBytes(socket, request.socket, PAGE_MAX_MESSAGE_BYTES, (bytes) => {
      log.warn({ remoteAddress: request.ip, url: request.url.replace(/token=[^&]*/, 'token=***'), bytes }, 'WebSocket message over 64 KiB; connection closed');
    });
  };

  // Viewing rule for everything but control and plugin routes such as /ingest, which check their own (stricter) rule.
  const tokenCheckedPaths = new Set((opts.plugins ?? []).flatMap((p) => (p as WebSocketPlugin).tokenCheckedPath ?? []));
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith('/api/control/')) return;
    if (tokenCheckedPaths.has(new URL(request.url, 'http://localhost').pathname)) return;
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
    limitPageSocket(socket, request);
    viewers.add(socket, request.ip);
  });

  app.get('/feedback', { websocket: true }, (socket: WebSocket, request: FastifyRequest) => {
    limitPageSocket(socket, request);
    // Input needs the token itself in the query or header: the onRequest hook lets an empty
    // token through on loopback (viewing needs none there), and the cookie is for viewing only.
    const sources = tokenSources(request.raw, false);
    const canSend = [sources.query, sources.bearer].some((given) => given !== undefined && given !== '' && tokensEqual(given, opts.token));
    feedback.add(socket, request.ip, canSend);
  });

  app.get('/api/status', async () => statusBody());

  app.get('/api/stats', async () => ({
    clients: [...viewers.channels, ...feedback.channels].map((c) => c.stats()),
    rssBytes: process.memoryUsage().rss,
    heapUsedBytes: process.memoryUsage().heapUsed,
    volumesReceived: viewers.current.volumesReceived,
  }));

  app.get<{ Params: { kind: string; id: string } }>('/api/image/:kind/:id', {
    schema: { params: { type: 'object', properties: { kind: { enum: ['stimulus', 'candidate'] }, id: { type: 'string', minLength: 1, maxLength: 256, pattern: IMAGE_ID_PATTERN } }, required: ['kind', 'id'] } },
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
    viewers.broadcast({ type: 'status', ...body }, 'essential');
    return { ok: true, ...body };
  });

  for (const plugin of opts.plugins ?? []) await app.register(plugin);

  function needsViewingToken(request: FastifyRequest): boolean {
    return opts.requireTokenForViewing === true || !isLoopbackAddress(request.socket.remoteAddress);
  }

  function statusBody(): { state: SessionState; speed: string; simulated: boolean; runId?: string; fdThresholdMm: number } {
    const status = session.control.status();
    return { state: status.state, speed: status.speed, simulated: isSimulated(), runId: viewers.current.run?.runId, fdThresholdMm: opts.fdThresholdMm ?? 0.5 };
  }

  const subscription: RxSubscription = session.events$.subscribe({
    next: (event) => {
      try {
        const startMs = nowMs();
        viewers.apply(event);
        feedback.publish(event);
        // 'send' covers updating the page state, framing the message and handing it to every
        // client's socket; ws writes to the network after this returns.
        if (event.type === 'frame') {
          opts.onTiming?.({ type: 'stage-timing', runId: event.runId, stage: 'send', trialId: event.trialId, volIdx: event.volIdx, startMs, endMs: nowMs() });
        }
      } catch (err) {
        // A display bug must not end the session's event stream.
        log.error({ err, eventType: event.type }, 'dashboard failed to handle an event');
      }
    },
    error: (err: unknown) => {
      log.error({ err }, 'session event stream failed');
      viewers.broadcast({ type: 'status', ...statusBody(), error: String((err as Error)?.message ?? err) }, 'essential');
    },
    complete: () => log.info('session event stream completed'),
  });

  let lastStatus = JSON.stringify(statusBody());
  const statusTimer = setInterval(() => {
    const body = statusBody();
    const text = JSON.stringify(body);
    if (text !== lastStatus) {
      lastStatus = text;
      viewers.broadcast({ type: 'status', ...body }, 'essential');
    }
  }, STATUS_POLL_MS);
  statusTimer.unref();

  try {
    await app.listen({ host: opts.host, port: opts.port });
  } catch (err) {
    subscription.unsubscribe();
    clearInterval(statusTimer);
    await app.close();
    throw err;
  }
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
      viewers.closeAll();
      feedback.closeAll();
      await app.close();
      log.info('dashboard stopped');
    },
  };
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
