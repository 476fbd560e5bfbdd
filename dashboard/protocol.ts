/**
 * Wire format shared by the dashboard page (`/stream`) and the feedback API (`/feedback`).
 *
 * Text messages are JSON objects with a `type` field. Images travel as binary messages:
 *
 *   [ u32 little-endian: header length N ][ N bytes: UTF-8 JSON header ][ image bytes ]
 *
 * The header is a `BinaryHeader` (`frame` for a trial image, `mosaic` for the current volume)
 * and names the image's MIME type, so the page can build a Blob without sniffing.
 * The feedback API sends frames as JSON with base64 image data instead, because stimulus
 * programs (PsychoPy, Psychtoolbox) handle text messages more easily than binary ones.
 */
import type { FrameKind, QualityFlag } from '../src/events.ts';

export interface FrameHeader {
  type: 'frame';
  runId: string;
  trialId: number;
  volIdx: number;
  kind: FrameKind;
  provisional: boolean;
  step: number;
  stepCount: number;
  mime: string;
  width: number;
  height: number;
  /** Server monotonic clock (ms) when the frame event reached the dashboard. */
  sentAtMs: number;
  /** True when the frame is replayed from the state snapshot of a connecting client. */
  fromSnapshot?: boolean;
}

export interface MosaicHeader {
  type: 'mosaic';
  runId: string;
  volIdx: number;
  mime: string;
  width: number;
  height: number;
  /** Axial slice indices (k) shown, in tile order (row-major from the top left). */
  slices: number[];
  hasMaskOutline: boolean;
  flags: QualityFlag[];
}

export type BinaryHeader = FrameHeader | MosaicHeader;

export function encodeBinaryMessage(header: BinaryHeader, image: Uint8Array): Buffer {
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(4 + headerBytes.length + image.byteLength);
  out.writeUInt32LE(headerBytes.length, 0);
  headerBytes.copy(out, 4);
  out.set(image, 4 + headerBytes.length);
  return out;
}

export function decodeBinaryMessage(message: Uint8Array): { header: BinaryHeader; image: Uint8Array } {
  if (message.byteLength < 4) throw new RangeError(`binary message of ${message.byteLength} bytes is shorter than its 4-byte length prefix`);
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const headerLength = view.getUint32(0, true);
  if (4 + headerLength > message.byteLength) {
    throw new RangeError(`binary message header length ${headerLength} exceeds the message size ${message.byteLength}`);
  }
  const headerText = new TextDecoder().decode(message.subarray(4, 4 + headerLength));
  return { header: JSON.parse(headerText) as BinaryHeader, image: message.subarray(4 + headerLength) };
}
