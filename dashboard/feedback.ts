/**
 * The closed-loop feedback API on the `/feedback` WebSocket.
 *
 * A stimulus program connects, receives `hello`, then per-trial `decoded` results and `frame`
 * images with timing, and may send scanner `trigger` pulses and `stimulus-onset` messages.
 * Input needs a connection opened with the session token (`?token=` or a Bearer header).
 * Input on a connection without it gets a FEEDBACK_AUTH error reply and is not forwarded.
 * Both directions are JSON text messages, described by the JSON Schema files in
 * dashboard/schema/ (feedback-input and feedback-output) and by docs/feedback-api.md.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { WebSocket } from 'ws';
import type { Decoded, Frame, PipelineEvent, RunInfo } from '../src/events.ts';
import { nowMs } from '../src/events.ts';
import { logger } from '../src/log.ts';
import { ClientChannel, type ChannelLimits, type Delivery } from './clients.ts';

/** Input from the stimulus program, as handed to DashboardSession.onFeedbackInput. */
export type FeedbackInput = TriggerInput | StimulusOnsetInput;

export interface TriggerInput {
  type: 'trigger';
  /** Server monotonic clock (nowMs) when the message arrived: the pulse time to use. */
  receivedAtMs: number;
  /** 0-based pulse count since the run started, when the client counts pulses. */
  pulseIndex?: number;
  /** The client's own clock in ms when it sent the message (any epoch). */
  clientTimeMs?: number;
  /** Feedback connection the input came from (the `clientId` of its hello message). */
  clientId: number;
}

export interface StimulusOnsetInput {
  type: 'stimulus-onset';
  receivedAtMs: number;
  /** Image id (NSD 73k id, 1-based, as a string) or category label. */
  stimulusId: string;
  trialId?: number;
  /** Onset in seconds from the run's first trigger; absent: use receivedAtMs. */
  onsetSec?: number;
  durationSec?: number;
  clientTimeMs?: number;
  clientId: number;
}

export type SubscriptionLevel = 'final' | 'all' | 'none';

export interface Subscription {
  decoded: SubscriptionLevel;
  frames: SubscriptionLevel;
  images: 'base64' | 'none';
}

export const DEFAULT_SUBSCRIPTION: Subscription = { decoded: 'final', frames: 'final', images: 'base64' };

const schemaUrl = new URL('./schema/feedback-input.schema.json', import.meta.url);
const inputSchema = JSON.parse(readFileSync(schemaUrl, 'utf8')) as { $id: string };
const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
ajv.addSchema(inputSchema);

function validatorFor(definition: string): ValidateFunction {
  const validate = ajv.getSchema(`${inputSchema.$id}#/definitions/${definition}`);
  if (validate === undefined) throw new Error(`feedback input schema has no definition "${definition}"`);
  return validate;
}

const VALIDATORS: Record<string, ValidateFunction> = {
  subscribe: validatorFor('subscribe'),
  trigger: validatorFor('trigger'),
  'stimulus-onset': validatorFor('stimulusOnset'),
};

/** Invalid input messages logged per client before logging only every 100th. */
const LOGGED_INVALID_PER_CLIENT = 5;

export interface FeedbackHubOptions {
  onInput(input: FeedbackInput): void;
  /** Read on each use: a session learns it from run-info. */
  isSimulated(): boolean;
  limits?: ChannelLimits;
}

class FeedbackClient {
  subscription: Subscription = { ...DEFAULT_SUBSCRIPTION };
  private nextSeq = 1;
  invalidCount = 0;

  constructor(readonly channel: ClientChannel, readonly canSend: boolean) {}

  /** Sends a message with its sequence number and timestamps; a skipped droppable message takes no number. */
  send(body: Record<string, unknown>, delivery: Delivery): boolean {
    const message = { ...body, seq: this.nextSeq, serverTimeMs: nowMs(), wallTimeMs: Date.now() };
    const sent = this.channel.sendJson(message, delivery);
    if (sent) this.nextSeq += 1;
    return sent;
  }
}

export class FeedbackHub {
  private readonly clients = new Set<FeedbackClient>();
  private runInfo?: RunInfo;

  constructor(private readonly options: FeedbackHubOptions) {}

  get channels(): ClientChannel[] {
    return [...this.clients].map((c) => c.channel);
  }

  /** Registers a connected socket; `canSend` is true when it presented the session token. */
  add(socket: WebSocket, remoteAddress: string, canSend: boolean): void {
    const channel = new ClientChannel(socket, '/feedback', remoteAddress, this.options.limits);
    const client = new FeedbackClient(channel, canSend);
    this.clients.add(client);
    logger.info({ client: channel.id, remoteAddress, canSend }, 'feedback client connected');
    socket.on('close', (code: number) => {
      this.clients.delete(client);
      logger.info({ client: channel.id, code }, 'feedback client disconnected');
    });
    socket.on('message', (data: Buffer, isBinary: boolean) => this.receive(client, data, isBinary));

    client.send({
      type: 'hello',
      protocol: 'mindeye-rt-feedback',
      version: 1,
      clientId: channel.id,
      canSend,
      simulated: this.options.isSimulated(),
      subscription: client.subscription,
    }, 'essential');
    if (this.runInfo !== undefined) client.send(runInfoMessage(this.runInfo, this.options.isSimulated()), 'essential');
  }

  publish(event: PipelineEvent): void {
    switch (event.type) {
      case 'run-info':
        this.runInfo = event;
        for (const client of this.clients) client.send(runInfoMessage(event, this.options.isSimulated()), 'essential');
        break;
      case 'decoded':
        for (const client of this.clients) this.sendDecoded(client, event);
        break;
      case 'frame':
        for (const client of this.clients) this.sendFrame(client, event);
        break;
      case 'run-end':
        for (const client of this.clients) {
          client.send({ type: 'run-end', runId: event.runId, volumesReceived: event.volumesReceived, ...(event.error !== undefined ? { error: event.error } : {}) }, 'essential');
        }
        break;
      default:
        break;
    }
  }

  closeAll(): void {
    for (const client of this.clients) client.channel.socket.close(1001, 'dashboard server shutting down');
  }

  private sendDecoded(client: FeedbackClient, event: Decoded): void {
    const level = client.subscription.decoded;
    if (level === 'none' || (level === 'final' && !event.final)) return;
    const now = nowMs();
    client.send({
      type: 'decoded',
      runId: event.runId,
      trialId: event.trialId,
      stimulusId: event.stimulusId,
      final: event.final,
      volIdx: event.volIdx,
      topK: event.topK,
      ...(event.trueRank !== undefined ? { trueRank: event.trueRank } : {}),
      ...(event.candidateCount !== undefined ? { candidateCount: event.candidateCount } : {}),
      timing: {
        volumeReceivedAtMs: event.receivedAtMs,
        estimatedAtMs: event.estimatedAtMs,
        decodedAtMs: event.decodedAtMs,
        volumeToDecodeMs: event.decodedAtMs - event.receivedAtMs,
        volumeToSendMs: now - event.receivedAtMs,
      },
    }, event.final ? 'essential' : 'droppable');
  }

  private sendFrame(client: FeedbackClient, event: Frame): void {
    const level = client.subscription.frames;
    const isResult = !event.provisional && event.kind !== 'img2img-step';
    if (level === 'none' || (level === 'final' && !isResult)) return;
    client.send({
      type: 'frame',
      runId: event.runId,
      trialId: event.trialId,
      volIdx: event.volIdx,
      kind: event.kind,
      provisional: event.provisional,
      step: event.step,
      stepCount: event.stepCount,
      mime: event.mime,
      width: event.width,
      height: event.height,
      ...(client.subscription.images === 'base64' ? { imageBase64: Buffer.from(event.image.buffer, event.image.byteOffset, event.image.byteLength).toString('base64') } : {}),
      timing: {
        volumeReceivedAtMs: event.receivedAtMs,
        frameSentAtMs: event.sentAtMs,
        volumeToSendMs: nowMs() - event.receivedAtMs,
      },
    }, isResult ? 'essential' : 'droppable');
  }

  private receive(client: FeedbackClient, data: Buffer, isBinary: boolean): void {
    const receivedAtMs = nowMs();

    // Parse and validate against the input schema.
    if (isBinary) {
      this.reject(client, 'FEEDBACK_INVALID', 'binary messages are not accepted on /feedback: send JSON text messages (see docs/feedback-api.md)');
      return;
    }
    let message: unknown;
    try {
      message = JSON.parse(data.toString('utf8'));
    } catch (err) {
      this.reject(client, 'FEEDBACK_INVALID', `message is not valid JSON (${(err as Error).message}): send one JSON object per text message`);
      return;
    }
    const record = (typeof message === 'object' && message !== null && !Array.isArray(message) ? message : {}) as Record<string, unknown>;
    const type = record.type;
    const id = typeof record.id === 'string' || typeof record.id === 'number' ? record.id : undefined;
    const validate = typeof type === 'string' ? VALIDATORS[type] : undefined;
    if (validate === undefined) {
      this.reject(client, 'FEEDBACK_INVALID', `field "type" is ${JSON.stringify(type)}: expected one of ${Object.keys(VALIDATORS).map((t) => `"${t}"`).join(', ')}`, undefined, id);
      return;
    }
    if (!validate(message)) {
      this.reject(client, 'FEEDBACK_INVALID', describeSchemaError(type as string, validate.errors ?? [], record), type as string, id);
      return;
    }

    if (type === 'subscribe') {
      this.applySubscription(client, record);
      client.send({ type: 'ack', inputType: 'subscribe', receivedAtMs, ...(id !== undefined ? { id } : {}), subscription: client.subscription }, 'essential');
      return;
    }

    // Input: needs the token, then goes to the session.
    if (!client.canSend) {
      this.reject(client, 'FEEDBACK_AUTH', `"${type}" is input and needs the session token: reconnect to /feedback?token=TOKEN or send "Authorization: Bearer TOKEN" (the token is in the URL that mindeye-rt prints at start)`, type as string, id);
      return;
    }
    const input = toInput(record, receivedAtMs, client.channel.id);
    try {
      this.options.onInput(input);
    } catch (err) {
      logger.error({ err, client: client.channel.id, inputType: type }, 'session failed to handle feedback input');
      this.reject(client, 'FEEDBACK_FAILED', `the session could not use this ${type}: ${(err as Error).message}`, type as string, id);
      return;
    }
    client.send({ type: 'ack', inputType: type, receivedAtMs, ...(id !== undefined ? { id } : {}) }, 'essential');
  }

  private applySubscription(client: FeedbackClient, record: Record<string, unknown>): void {
    const next = { ...client.subscription };
    if (record.decoded !== undefined) next.decoded = record.decoded as SubscriptionLevel;
    if (record.frames !== undefined) next.frames = record.frames as SubscriptionLevel;
    if (record.images !== undefined) next.images = record.images as Subscription['images'];
    client.subscription = next;
  }

  private reject(client: FeedbackClient, code: 'FEEDBACK_AUTH' | 'FEEDBACK_INVALID' | 'FEEDBACK_FAILED', message: string, inputType?: string, id?: string | number): void {
    client.invalidCount += 1;
    if (client.invalidCount <= LOGGED_INVALID_PER_CLIENT || client.invalidCount % 100 === 0) {
      logger.warn({ client: client.channel.id, code, inputType, rejectedCount: client.invalidCount }, `feedback input rejected: ${message}`);
    }
    client.send({ type: 'error', code, message, ...(inputType !== undefined ? { inputType } : {}), ...(id !== undefined ? { id } : {}) }, 'essential');
  }
}

function runInfoMessage(event: RunInfo, simulated: boolean): Record<string, unknown> {
  return {
    type: 'run-info',
    runId: event.runId,
    trSec: event.trSec,
    ...(event.expectedVolumes !== undefined ? { expectedVolumes: event.expectedVolumes } : {}),
    simulated: simulated || event.simulated === true,
    trials: event.trials ?? [],
  };
}

function toInput(record: Record<string, unknown>, receivedAtMs: number, clientId: number): FeedbackInput {
  const clientTimeMs = record.clientTimeMs as number | undefined;
  if (record.type === 'trigger') {
    return { type: 'trigger', receivedAtMs, clientId, pulseIndex: record.pulseIndex as number | undefined, clientTimeMs };
  }
  return {
    type: 'stimulus-onset',
    receivedAtMs,
    clientId,
    stimulusId: record.stimulusId as string,
    trialId: record.trialId as number | undefined,
    onsetSec: record.onsetSec as number | undefined,
    durationSec: record.durationSec as number | undefined,
    clientTimeMs,
  };
}

/** Turns the first ajv error into a sentence naming the field, the value and the expectation. */
export function describeSchemaError(type: string, errors: ErrorObject[], record: Record<string, unknown>): string {
  const error = errors[0];
  if (error === undefined) return `"${type}" message is invalid`;
  if (error.keyword === 'additionalProperties') {
    const extra = (error.params as { additionalProperty: string }).additionalProperty;
    return `"${type}" message has an unknown field "${extra}": remove it (see dashboard/schema/feedback-input.schema.json for the fields)`;
  }
  if (error.keyword === 'required') {
    const missing = (error.params as { missingProperty: string }).missingProperty;
    return `"${type}" message is missing the required field "${missing}"`;
  }
  const field = error.instancePath.replace(/^\//, '');
  const value = field === '' ? record : record[field.split('/')[0]];
  return `"${type}" message field "${field}" is ${JSON.stringify(value)}: expected a value that ${error.message ?? 'matches the schema'}`;
}
