/**
 * Per-route message size limit for WebSocket routes that share one server.
 *
 * @fastify/websocket runs one `ws` server per fastify instance, and its `maxPayload` applies to
 * every route. The push endpoint (/ingest) needs messages of a whole volume (256 MiB by default)
 * while the page stream and the feedback socket need 64 KiB. The shared server is therefore set
 * to the largest limit, and `limitMessageBytes` enforces a smaller limit on one route. It
 * counts the bytes that arrive on the TCP socket since the last complete message (or ping or
 * pong) and closes the connection with 1009 ("message too big", RFC 6455) once they exceed it.
 *
 * The count runs after ws has parsed each TCP read. ws 8 emits 'message' while it parses
 * (allowSynchronousEvents, the default since ws 8.17), so a read in which a message ended
 * restarts the count. A message that arrived whole within one read is checked by its length.
 * A client can therefore make the server buffer at most the limit plus one TCP read (64 KiB in
 * Node.js) before it is disconnected.
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

/** Largest frame header (RFC 6455: 2 bytes, 8 of extended length, 4 of mask key). */
const FRAME_HEADER_BYTES = 14;

/** Closes `socket` with 1009 when a message on it exceeds `maxBytes`; call right after the upgrade. */
export function limitMessageBytes(socket: WebSocket, tcp: Socket, maxBytes: number, onExceeded?: (bytes: number) => void): void {
  let pending = 0;
  let boundary = false;
  let closing = false;
  const reject = (bytes: number) => {
    if (closing) return;
    closing = true;
    tcp.off('data', onData);
    onExceeded?.(bytes);
    socket.close(1009, `message over ${maxBytes} bytes`);
    // A client that keeps sending after the close frame is cut off.
    setTimeout(() => socket.terminate(), 1000).unref();
  };
  const onData = (chunk: Buffer) => {
    if (boundary) {
      boundary = false;
      pending = 0;
      return;
    }
    pending += chunk.length;
    if (pending > maxBytes + FRAME_HEADER_BYTES) reject(pending);
  };
  const onMessage = (data: Buffer | ArrayBuffer | Buffer[]) => {
    boundary = true;
    const bytes = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
    if (bytes > maxBytes) reject(bytes);
  };
  const markBoundary = () => { boundary = true; };
  // Registered after ws's own 'data' listener (added during the upgrade), so it runs on each read
  // after ws has parsed it. Prepended, the 'message' listener runs before the route's handler.
  tcp.on('data', onData);
  socket.prependListener('message', onMessage);
  socket.on('ping', markBoundary);
  socket.on('pong', markBoundary);
  socket.once('close', () => tcp.off('data', onData));
}
