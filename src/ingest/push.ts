/**
 * Network push ingest: a fastify plugin that accepts volumes over a WebSocket at `/ingest`, and
 * the Source that emits them.
 *
 * Wire contract (version 1). Each volume is one binary WebSocket message:
 *
 *   bytes 0-3        uint32 little-endian N: byte length of the JSON header
 *   bytes 4..4+N     UTF-8 JSON header (PUSH_HEADER_SCHEMA below):
 *                      { "index": 0, "shape": [64, 64, 36], "dtype": "int16",
 *                        "affine": [16 numbers, row-major voxel-to-RAS+ mm], "trSec": 2.0,
 *                        "expectedVolumes": 200 (optional), "acqTimeSec": 0 (optional) }
 *   bytes 4+N..end   voxel data, little-endian, NIfTI order (x fastest): exactly
 *                    shape[0] x shape[1] x shape[2] x bytes per dtype bytes
 *
 * A text message `{"type": "end"}` ends the run: the source completes after the queued volumes.
 *
 * Replies are text messages with a JSON acknowledgement, one per binary message:
 *   { "ok": true,  "index": 3, "ready": true, "queued": 0 }       volume 3 was taken by the pipeline
 *   { "ok": false, "index": 3, "ready": true, "error": "...", "code": "INGEST_INVALID" }   rejected at once
 * An accepted volume is acknowledged only when the pipeline has taken it (the Source's
 * subscriber returned from next()), so a sender that keeps at most W volumes unacknowledged
 * limits server memory to W volumes. `ready` is false while the queue is full. A sender that
 * ignores the acknowledgements is throttled by TCP: at `maxQueue` queued volumes the server stops
 * reading the socket until the pipeline catches up. Volumes already read in the same socket chunk
 * are still queued, so the queue can exceed `maxQueue` by one for volumes over 64 KiB.
 *
 * Authentication: the session token in `Authorization: Bearer T` or the query `?token=T`.
 * The upgrade is rejected with HTTP 401 when no token is given and with HTTP 403 when it is
 * wrong. Both bodies are `{ "error": "token", "message": ... }`, as on the dashboard. One sender at a time: a second connection is closed with code 1013 ("try again later").
 *
 * Index rules: indices increase. A lower or repeated index is acknowledged with ok false and
 * reported (warning `duplicate`). A skipped index becomes a `gap` at once, because a single
 * ordered connection cannot deliver it later. A volume whose grid differs from the first one is
 * rejected (warning `invalid`) and its index becomes a gap.
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket, RawData } from 'ws';
import { Observable, type Subscriber } from 'rxjs';
import { MindeyeError, isMindeyeError, oneLineMessage } from '../errors.ts';
import { nowMs, type RunInfo, type Shape3, type Volume } from '../events.ts';
import { stageLogger } from '../log.ts';
import { checkVolumeSize } from '../io/limits.ts';
import type { Source, SourceContext, SourceEvent } from './source.ts';

/** Largest JSON header, bytes: a header with a 16-number affine takes about 300. */
export const MAX_HEADER_BYTES = 64 * 1024;
/** Largest `expectedVolumes`: 10000 volumes are 2.8 hours at a TR of 1 s. */
export const MAX_EXPECTED_VOLUMES = 10_000;

export const PUSH_DTYPES = { uint8: 1, int8: 1, int16: 2, uint16: 2, int32: 4, uint32: 4, float32: 4, float64: 8 } as const;
export type PushDtype = keyof typeof PUSH_DTYPES;

export interface PushHeader {
  index: number;
  shape: Shape3;
  dtype: PushDtype;
  affine: number[];
  trSec: number;
  expectedVolumes?: number;
  acqTimeSec?: number;
}

/** JSON Schema (draft 2020-12) of the header; `validatePushHeader` enforces the same rules. */
export const PUSH_HEADER_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://mindeye-rt/ingest/push-header.json',
  title: 'mindeye-rt push volume header',
  type: 'object',
  required: ['index', 'shape', 'dtype', 'affine', 'trSec'],
  additionalProperties: true,
  properties: {
    index: { type: 'integer', minimum: 0, description: '0-based acquisition index' },
    shape: { type: 'array', items: { type: 'integer', minimum: 1 }, minItems: 3, maxItems: 3, description: 'x, y, z voxels' },
    dtype: { enum: Object.keys(PUSH_DTYPES), description: 'voxel type of the data that follows, little-endian' },
    affine: { type: 'array', items: { type: 'number' }, minItems: 16, maxItems: 16, description: 'row-major voxel-to-RAS+ mm' },
    trSec: { type: 'number', exclusiveMinimum: 0, description: 'repetition time, seconds' },
    expectedVolumes: { type: 'integer', minimum: 1, maximum: 10_000 },
    acqTimeSec: { type: 'number', minimum: 0, description: 'acquisition time from the run start; default index x trSec' },
  },
} as const;

export const PUSH_ACK_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://mindeye-rt/ingest/push-ack.json',
  title: 'mindeye-rt push acknowledgement',
  type: 'object',
  required: ['ok', 'index', 'ready'],
  properties: {
    ok: { type: 'boolean' },
    index: { type: ['integer', 'null'] },
    ready: { type: 'boolean', description: 'the server has room for another volume now' },
    queued: { type: 'integer', minimum: 0 },
    error: { type: 'string' },
    code: { type: 'string' },
  },
} as const;

export interface PushAck {
  ok: boolean;
  index: number | null;
  ready: boolean;
  queued?: number;
  error?: string;
  code?: string;
}

function invalid(field: string, value: unknown, expected: string): MindeyeError {
  return new MindeyeError('INGEST_INVALID', 'Invalid push message.', {
    file: 'push message', field, value, expected, fix: 'send the framing documented in src/ingest/push.ts (docs/ingest.md)',
  });
}

/** Validates a parsed header; `limitBytes` caps one volume as float32 (default `maxVolumeBytes()`). */
export function validatePushHeader(h: unknown, limitBytes?: number): PushHeader {
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw invalid('header', typeof h, 'a JSON object');
  const o = h as Record<string, unknown>;
  if (!Number.isInteger(o.index) || (o.index as number) < 0) throw invalid('index', o.index, 'an integer >= 0');
  const shape = o.shape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((n) => Number.isInteger(n) && n >= 1)) {
    throw invalid('shape', shape, '3 positive integers [x, y, z]');
  }
  checkVolumeSize({
    code: 'INGEST_INVALID', file: 'push message', field: 'shape', voxels: shape[0] * shape[1] * shape[2], dimensions: shape.join(' x '), limitBytes,
  });
  if (typeof o.dtype !== 'string' || !(o.dtype in PUSH_DTYPES)) throw invalid('dtype', o.dtype, Object.keys(PUSH_DTYPES).join(', '));
  const affine = o.affine;
  if (!Array.isArray(affine) || affine.length !== 16 || !affine.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw invalid('affine', Array.isArray(affine) ? `${affine.length} values` : affine, '16 finite numbers, row-major');
  }
  if (typeof o.trSec !== 'number' || !(o.trSec > 0)) throw invalid('trSec', o.trSec, 'a positive number of seconds');
  // The run length sizes the GLM's drift regressors, so an absurd count would take memory.
  if (o.expectedVolumes !== undefined && !(Number.isInteger(o.expectedVolumes) && (o.expectedVolumes as number) >= 1
    && (o.expectedVolumes as number) <= MAX_EXPECTED_VOLUMES)) {
    throw invalid('expectedVolumes', o.expectedVolumes, `an integer from 1 to ${MAX_EXPECTED_VOLUMES}`);
  }
  if (o.acqTimeSec !== undefined && !(typeof o.acqTimeSec === 'number' && o.acqTimeSec >= 0)) {
    throw invalid('acqTimeSec', o.acqTimeSec, 'a number >= 0');
  }
  return o as unknown as PushHeader;
}

/** Encodes one volume as a push message (the sender side of the contract). */
export function encodePushMessage(header: PushHeader, data: ArrayLike<number>): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const bytesPer = PUSH_DTYPES[header.dtype];
  const count = header.shape[0] * header.shape[1] * header.shape[2];
  if (data.length !== count) throw new RangeError(`encodePushMessage: ${data.length} values for shape ${header.shape.join('x')}`);
  const out = Buffer.alloc(4 + json.length + count * bytesPer);
  out.writeUInt32LE(json.length, 0);
  json.copy(out, 4);
  const view = new DataView(out.buffer, out.byteOffset + 4 + json.length, count * bytesPer);
  for (let i = 0; i < count; i++) {
    const x = data[i];
    switch (header.dtype) {
      case 'uint8': view.setUint8(i, x); break;
      case 'int8': view.setInt8(i, x); break;
      case 'int16': view.setInt16(i * 2, x, true); break;
      case 'uint16': view.setUint16(i * 2, x, true); break;
      case 'int32': view.setInt32(i * 4, x, true); break;
      case 'uint32': view.setUint32(i * 4, x, true); break;
      case 'float32': view.setFloat32(i * 4, x, true); break;
      case 'float64': view.setFloat64(i * 8, x, true); break;
    }
  }
  return out;
}

/**
 * Decodes one push message into its header and float32 voxels; throws INGEST_INVALID on any
 * mismatch. The header's size is checked against `limitBytes` and against the bytes the message
 * contains before the voxel array is allocated.
 */
export function decodePushMessage(message: Buffer, limitBytes?: number): { header: PushHeader; data: Float32Array } {
  if (message.length < 4) throw invalid('message length', message.length, 'at least 4 bytes (header length)');

  const headerLength = message.readUInt32LE(0);
  if (headerLength === 0 || 4 + headerLength > message.length || headerLength > MAX_HEADER_BYTES) {
    throw invalid('header length', headerLength, `1 to ${Math.min(message.length - 4, MAX_HEADER_BYTES)} bytes (the message has ${message.length})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(message.subarray(4, 4 + headerLength).toString('utf8'));
  } catch (err) {
    throw invalid('header', (err as Error).message, 'UTF-8 JSON');
  }

  const header = validatePushHeader(parsed, limitBytes);
  const count = header.shape[0] * header.shape[1] * header.shape[2];
  const bytesPer = PUSH_DTYPES[header.dtype];
  const dataLength = message.length - 4 - headerLength;
  if (dataLength !== count * bytesPer) {
    throw invalid('data length', `${dataLength} bytes`, `${count * bytesPer} bytes (${header.shape.join(' x ')} x ${bytesPer} for ${header.dtype})`);
  }

  const offset = message.byteOffset + 4 + headerLength;
  const view = new DataView(message.buffer, offset, dataLength);
  const data = new Float32Array(count);
  switch (header.dtype) {
    case 'uint8': for (let i = 0; i < count; i++) data[i] = view.getUint8(i); break;
    case 'int8': for (let i = 0; i < count; i++) data[i] = view.getInt8(i); break;
    case 'int16': for (let i = 0; i < count; i++) data[i] = view.getInt16(i * 2, true); break;
    case 'uint16': for (let i = 0; i < count; i++) data[i] = view.getUint16(i * 2, true); break;
    case 'int32': for (let i = 0; i < count; i++) data[i] = view.getInt32(i * 4, true); break;
    case 'uint32': for (let i = 0; i < count; i++) data[i] = view.getUint32(i * 4, true); break;
    case 'float32': for (let i = 0; i < count; i++) data[i] = view.getFloat32(i * 4, true); break;
    case 'float64': for (let i = 0; i < count; i++) data[i] = view.getFloat64(i * 8, true); break;
  }
  return { header, data };
}

export interface PushIngestOptions {
  /** Session token the sender must present. */
  token: string;
  /** Volumes held for the pipeline before the server stops reading (default 4). */
  maxQueue?: number;
  /** Largest accepted message, bytes (default 256 MiB): the WebSocket maxPayload of /ingest. */
  maxMessageBytes?: number;
  /** Largest volume, bytes as float32 (default `maxVolumeBytes()`, 1 GiB). */
  maxVolumeBytes?: number;
  /** Route path (default /ingest). */
  path?: string;
}

/** Volumes that may wait for the pipeline before senders are paused (`serve --max-queue`). */
export const DEFAULT_PUSH_QUEUE = 4;

export interface PushStats {
  received: number;
  delivered: number;
  rejected: number;
  queued: number;
  /** Largest queue length seen (maxQueue, or one more when a socket chunk held two volumes). */
  maxQueued: number;
  /** Times the socket was paused because the queue was full. */
  pauses: number;
  /** Warnings and gaps only logged because too many were waiting for a subscriber. */
  noticesDropped: number;
}

export interface PushIngest {
  /**
   * The /ingest route. `maxMessageBytes` is the WebSocket maxPayload it needs on a shared server,
   * and `tokenCheckedPath` the route whose token the plugin checks itself.
   */
  plugin: FastifyPluginAsync & { maxMessageBytes: number; tokenCheckedPath: string };
  source: Source;
  stats(): PushStats;
}

/** A source event waiting for the subscriber; volumes carry the socket to acknowledge on delivery. */
interface Queued {
  event: SourceEvent;
  socket?: WebSocket;
}

/** Warnings and gaps held while no pipeline is subscribed, beyond which they are only logged. */
const MAX_QUEUED_NOTICES = 1000;

function tokenMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function pushIngest(opts: PushIngestOptions): PushIngest {
  if (typeof opts.token !== 'string' || opts.token.length === 0) {
    throw new MindeyeError('INGEST_AUTH', 'The push ingest needs a session token.', {
      field: 'token', value: opts.token, expected: 'a non-empty string', fix: 'pass --token T or let the session generate one',
    });
  }
  const maxQueue = opts.maxQueue ?? DEFAULT_PUSH_QUEUE;
  if (!Number.isInteger(maxQueue) || maxQueue < 1) {
    throw new MindeyeError('INGEST_INVALID', 'Invalid push queue length.', {
      field: 'maxQueue (--max-queue)', value: opts.maxQueue, expected: 'an integer >= 1', fix: 'pass --max-queue 4, or leave it out',
    });
  }
  const log = stageLogger('ingest-push');
  const queue: Queued[] = [];
  const stats: PushStats = { received: 0, delivered: 0, rejected: 0, queued: 0, maxQueued: 0, pauses: 0, noticesDropped: 0 };
  let subscriber: Subscriber<SourceEvent> | undefined;
  let runId = 'push';
  let runInfo: RunInfo | undefined;
  let queuedVolumes = 0;
  let queuedNotices = 0;
  let nextIdx = 0;
  let ended = false;
  let sender: WebSocket | undefined;
  let paused = false;

  const send = (socket: WebSocket, ack: PushAck): void => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(ack));
  };
  // Every event goes through the queue, so gaps and warnings keep their place among volumes.
  const emit = (event: SourceEvent): void => {
    if (queuedNotices >= MAX_QUEUED_NOTICES) {
      stats.noticesDropped++;
      log.warn({ event }, 'push notice not queued: too many are waiting for a subscriber');
      return;
    }
    queuedNotices++;
    queue.push({ event });
    drain();
  };

  // Delivers queued volumes to the subscriber, acknowledging each one as it is taken.
  const drain = (): void => {
    while (subscriber !== undefined && queue.length > 0) {
      const item = queue.shift()!;
      const event = { ...item.event, runId };
      if (event.type === 'volume') {
        queuedVolumes--;
        stats.queued = queuedVolumes;
        subscriber.next(event);
        stats.delivered++;
        if (item.socket !== undefined) send(item.socket, { ok: true, index: event.volIdx, ready: queuedVolumes < maxQueue, queued: queuedVolumes });
      } else {
        if (event.type !== 'run-info') queuedNotices--;
        subscriber.next(event);
      }
    }
    if (paused && queuedVolumes < maxQueue && sender !== undefined) {
      paused = false;
      sender.resume();
    }
    if (ended && queue.length === 0 && subscriber !== undefined) {
      ended = false;
      log.info({ delivered: stats.delivered }, 'push run ended by the sender');
      subscriber.complete();
    }
  };

  // A text message either ends the run or is rejected.
  const onText = (socket: WebSocket, message: Buffer): void => {
    let parsed: { type?: unknown } | undefined;
    try {
      parsed = JSON.parse(message.toString('utf8')) as { type?: unknown };
    } catch {
      parsed = undefined;
    }
    if (parsed?.type === 'end') {
      ended = true;
      drain();
      return;
    }
    stats.rejected++;
    send(socket, { ok: false, index: null, ready: queuedVolumes < maxQueue, code: 'INGEST_INVALID', error: 'text messages other than {"type":"end"} are not accepted; send volumes as binary messages' });
  };

  // A binary message that does not decode is reported with its index when the header shows one.
  const onUndecodable = (socket: WebSocket, message: Buffer, err: MindeyeError, remote: string): void => {
    stats.rejected++;
    let index: number | null = null;
    try {
      const headerLength = message.readUInt32LE(0);
      const header = JSON.parse(message.subarray(4, 4 + headerLength).toString('utf8')) as { index?: unknown };
      if (Number.isInteger(header.index)) index = header.index as number;
    } catch {
      index = null;
    }
    const text = oneLineMessage(err.message);
    log.warn({ remote, index }, text);
    emit({ type: 'warning', runId, kind: 'invalid', volIdx: index ?? undefined, message: `push message rejected: ${text}` });
    send(socket, { ok: false, index, ready: queuedVolumes < maxQueue, code: err.code, error: text });
  };

  // Rejects a message with an index or grid that does not fit the run; accepts the rest.
  const onVolume = (socket: WebSocket, header: PushHeader, data: Float32Array, remote: string): void => {
    const receivedAtMs = nowMs();
    stats.received++;
    if (header.index < nextIdx) {
      stats.rejected++;
      const text = `volume ${header.index} was already received (next expected ${nextIdx}); dropped`;
      emit({ type: 'warning', runId, kind: 'duplicate', volIdx: header.index, message: text });
      send(socket, { ok: false, index: header.index, ready: queuedVolumes < maxQueue, code: 'INGEST_INVALID', error: text });
      return;
    }

    const affine = Float64Array.from(header.affine);
    if (runInfo === undefined) {
      runInfo = {
        type: 'run-info', runId, trSec: header.trSec, shape: [...header.shape] as Shape3, affine,
        expectedVolumes: header.expectedVolumes, source: `network push from ${remote}`, motionCorrection: false, trials: undefined,
      };
      queue.push({ event: runInfo });
    } else if (runInfo.shape.some((n, i) => n !== header.shape[i])) {
      stats.rejected++;
      const text = `volume ${header.index} has grid ${header.shape.join('x')}, the run has ${runInfo.shape.join('x')}; rejected`;
      for (; nextIdx <= header.index; nextIdx++) {
        emit({ type: 'gap', runId, volIdx: nextIdx, reason: nextIdx === header.index ? text : `volume ${nextIdx} was skipped by the sender` });
      }
      emit({ type: 'warning', runId, kind: 'invalid', volIdx: header.index, message: text });
      send(socket, { ok: false, index: header.index, ready: queuedVolumes < maxQueue, code: 'INGEST_INVALID', error: text });
      return;
    }

    for (; nextIdx < header.index; nextIdx++) {
      emit({ type: 'gap', runId, volIdx: nextIdx, reason: `volume ${nextIdx} was skipped by the sender (next received: ${header.index})` });
    }
    nextIdx = header.index + 1;
    queue.push({
      socket,
      event: {
        type: 'volume', runId, volIdx: header.index, acqTimeSec: header.acqTimeSec ?? header.index * header.trSec,
        receivedAtMs, shape: [...header.shape] as Shape3, affine, data, sourceId: `push:${remote}#${header.index}`,
      },
    });
    queuedVolumes++;
    stats.queued = queuedVolumes;
    stats.maxQueued = Math.max(stats.maxQueued, queuedVolumes);
    if (queuedVolumes >= maxQueue && !paused) {
      paused = true;
      stats.pauses++;
      socket.pause();
    }
    drain();
  };

  const onMessage = (socket: WebSocket, raw: RawData, isBinary: boolean, remote: string): void => {
    const message = Buffer.isBuffer(raw) ? raw : Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw);
    if (!isBinary) {
      onText(socket, message);
      return;
    }
    let decoded: ReturnType<typeof decodePushMessage>;
    try {
      decoded = decodePushMessage(message, opts.maxVolumeBytes);
    } catch (err) {
      if (!isMindeyeError(err)) throw err;
      onUndecodable(socket, message, err, remote);
      return;
    }
    onVolume(socket, decoded.header, decoded.data, remote);
  };

  const authenticate = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization;
    const bearer = typeof header === 'string' && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, '') : undefined;
    const query = (request.query as Record<string, unknown> | undefined)?.token;
    const presented = bearer ?? (typeof query === 'string' ? query : undefined);
    const route = opts.path ?? '/ingest';
    let status: 401 | 403 | undefined;
    let message = '';
    if (presented === undefined || presented === '') {
      status = 401;
      message = `pushing volumes to ${route} needs the session token, and none was given: send "Authorization: Bearer TOKEN" or add ?token=TOKEN (the token that mindeye-rt serve printed at start, or the one passed with --token)`;
    } else if (!tokenMatches(opts.token, presented)) {
      status = 403;
      message = `pushing volumes to ${route}: the session token given is wrong: use the token that mindeye-rt serve printed at start of this session (tokens change each session unless --token sets one)`;
    }
    if (status === undefined) return;
    // One line per rejection, never with the token itself.
    log.warn({ remote: request.ip, route, status }, 'push connection rejected');
    await reply.code(status).send({ error: 'token', message });
  };

  const maxMessageBytes = opts.maxMessageBytes ?? 256 * 1024 * 1024;
  const routes: FastifyPluginAsync = async (fastify: FastifyInstance) => {
    if (!fastify.hasDecorator('websocketServer')) {
      await fastify.register(websocket, { options: { maxPayload: maxMessageBytes } });
    } else {
      // A server registered elsewhere (the dashboard) sets maxPayload for every route.
      const shared = (fastify.websocketServer as { options?: { maxPayload?: number } }).options?.maxPayload ?? 0;
      if (shared > 0 && shared < maxMessageBytes) {
        log.warn({ maxPayload: shared, needed: maxMessageBytes }, 'the shared WebSocket server accepts smaller messages than /ingest needs; larger volumes will be closed with 1009');
      }
    }
    fastify.get(opts.path ?? '/ingest', { websocket: true, preValidation: authenticate }, (socket: WebSocket, request: FastifyRequest) => {
      const remote = `${request.ip}:${request.socket.remotePort ?? ''}`;
      if (sender !== undefined) {
        log.warn({ remote }, 'second push sender rejected');
        socket.close(1013, 'another sender is connected; try again later');
        return;
      }
      sender = socket;
      log.info({ remote }, 'push sender connected');
      socket.on('message', (raw: RawData, isBinary: boolean) => {
        try {
          onMessage(socket, raw, isBinary, remote);
        } catch (err) {
          log.error({ err, remote }, 'push message handling failed');
          socket.close(1011, 'internal error');
        }
      });
      socket.on('close', (code: number) => {
        log.info({ remote, code, received: stats.received }, 'push sender disconnected');
        if (sender === socket) {
          sender = undefined;
          paused = false;
        }
      });
    });
  };

  const source: Source = (ctx: SourceContext) =>
    new Observable<SourceEvent>((sub) => {
      if (subscriber !== undefined) {
        sub.error(new MindeyeError('INGEST_INVALID', 'The push source already has a subscriber.', {
          field: 'subscribe', value: 'second subscription', fix: 'create one pushIngest per run',
        }));
        return undefined;
      }
      runId = ctx.runId;
      subscriber = sub;
      drain();
      return () => {
        if (subscriber === sub) subscriber = undefined;
      };
    });

  const plugin = Object.assign(routes, { maxMessageBytes, tokenCheckedPath: opts.path ?? '/ingest' });
  return { plugin, source, stats: () => ({ ...stats }) };
}
