/**
 * Outbound WebSocket channel with a bounded buffer, one per connected client.
 *
 * The pipeline never waits for a client: `send` returns at once. ws's `bufferedAmount` (bytes
 * queued in ws and the socket, not yet handed to the kernel) tells how far a client lags:
 * - above `highWaterBytes`, droppable messages (provisional previews, img2img steps, volume
 *   mosaics, latency samples, non-final estimates) are skipped and counted;
 * - essential messages (final results, run info, warnings) are always queued, in order;
 * - above `maxBufferedBytes` the client is closed (code 4008) so that its buffer cannot grow
 *   without bound. It can reconnect and receive the current state.
 */
import type { WebSocket } from 'ws';
import { logger } from '../src/log.ts';

export type Delivery = 'essential' | 'droppable';

export interface ChannelLimits {
  highWaterBytes: number;
  maxBufferedBytes: number;
}

export const DEFAULT_LIMITS: ChannelLimits = { highWaterBytes: 512 * 1024, maxBufferedBytes: 32 * 1024 * 1024 };

/** WebSocket close code for a client closed because it fell too far behind. */
export const CLOSE_TOO_SLOW = 4008;

export interface ChannelStats {
  id: number;
  path: string;
  remoteAddress: string;
  sentMessages: number;
  droppedMessages: number;
  bufferedBytes: number;
  maxBufferedBytesSeen: number;
}

let nextId = 1;

export class ClientChannel {
  readonly id = nextId++;
  sentMessages = 0;
  droppedMessages = 0;
  maxBufferedBytesSeen = 0;
  private closed = false;

  constructor(
    readonly socket: WebSocket,
    readonly path: string,
    readonly remoteAddress: string,
    private readonly limits: ChannelLimits = DEFAULT_LIMITS,
  ) {
    socket.on('close', () => { this.closed = true; });
  }

  get isOpen(): boolean {
    return !this.closed && this.socket.readyState === this.socket.OPEN;
  }

  /** Queues a message unless the client lags and the message may be dropped. Returns true when queued. */
  send(data: string | Buffer, delivery: Delivery): boolean {
    if (!this.isOpen) return false;
    const buffered = this.socket.bufferedAmount;
    if (buffered > this.maxBufferedBytesSeen) this.maxBufferedBytesSeen = buffered;
    if (buffered > this.limits.maxBufferedBytes) {
      this.closeTooSlow(buffered);
      return false;
    }
    if (delivery === 'droppable' && buffered > this.limits.highWaterBytes) {
      this.droppedMessages += 1;
      return false;
    }
    this.socket.send(data);
    this.sentMessages += 1;
    return true;
  }

  sendJson(message: unknown, delivery: Delivery): boolean {
    return this.send(JSON.stringify(message), delivery);
  }

  private closeTooSlow(buffered: number): void {
    this.closed = true;
    logger.warn(
      { client: this.id, path: this.path, remoteAddress: this.remoteAddress, bufferedBytes: buffered, limitBytes: this.limits.maxBufferedBytes },
      'dashboard client closed: it fell too far behind',
    );
    this.socket.close(CLOSE_TOO_SLOW, 'client too slow: reconnect to receive the current state');
    // A client that reads nothing never completes the closing handshake; drop the socket after a grace period.
    setTimeout(() => this.socket.terminate(), 2000).unref();
  }

  stats(): ChannelStats {
    return {
      id: this.id,
      path: this.path,
      remoteAddress: this.remoteAddress,
      sentMessages: this.sentMessages,
      droppedMessages: this.droppedMessages,
      bufferedBytes: this.socket.bufferedAmount,
      maxBufferedBytesSeen: this.maxBufferedBytesSeen,
    };
  }
}
