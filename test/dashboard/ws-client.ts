/** A WebSocket test client that records every message with its arrival time. */
import WebSocket from 'ws';
import { decodeBinaryMessage, type BinaryHeader } from '../../dashboard/protocol.ts';
import { nowMs } from '../../src/events.ts';

export interface Received {
  atMs: number;
  json?: Record<string, unknown> & { type: string };
  binary?: { header: BinaryHeader; image: Uint8Array };
}

export class RecordingClient {
  readonly messages: Received[] = [];
  closeCode?: number;
  closeReason?: string;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: WebSocket, keepImages: boolean) {
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      const atMs = nowMs();
      if (isBinary) {
        const binary = decodeBinaryMessage(new Uint8Array(data));
        this.messages.push({ atMs, binary: keepImages ? binary : { header: binary.header, image: new Uint8Array(0) } });
      }
      else this.messages.push({ atMs, json: JSON.parse(data.toString('utf8')) });
      this.notify();
    });
    socket.on('close', (code: number, reason: Buffer) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.notify();
    });
  }

  /** `keepImages` false stores binary headers only, so that recording does not inflate the process memory. */
  static async connect(url: string, headers: Record<string, string> = {}, keepImages = true): Promise<RecordingClient> {
    const socket = new WebSocket(url, { headers });
    const client = new RecordingClient(socket, keepImages);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  /** Opens a connection that the server is expected to reject; returns the HTTP status and body. */
  static async expectRejected(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    const socket = new WebSocket(url, { headers });
    return new Promise((resolve, reject) => {
      socket.once('open', () => reject(new Error(`connection to ${url} was accepted`)));
      socket.once('unexpected-response', (_request, response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => { body += chunk.toString(); });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      socket.once('error', (err) => reject(err));
    });
  }

  json(type?: string): (Record<string, unknown> & { type: string })[] {
    return this.messages.flatMap((m) => (m.json !== undefined && (type === undefined || m.json.type === type) ? [m.json] : []));
  }

  binaries(type?: string): Received[] {
    return this.messages.filter((m) => m.binary !== undefined && (type === undefined || m.binary.header.type === type));
  }

  send(message: unknown): void {
    this.socket.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  async waitFor(predicate: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  close(): void {
    this.socket.close();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
