/**
 * NIfTI-1/2 reading and writing.
 *
 * An image is a voxel array, a voxel-to-world affine and a header. The affine maps (i, j, k)
 * voxel indices to RAS+ millimetres; it is the sform when sform_code > 0, else the qform
 * (as nibabel and nifti-reader-js choose), and is kept in a Float64Array(16), row-major, so that
 * the caller's copy is isolated and no precision is lost to float32.
 *
 * `streamNiftiVolumes` reads a 4D file one volume at a time from a gunzip stream: the first
 * volume is available after its bytes are decompressed, without reading the rest of the run.
 * Gzip is detected by its magic bytes (1f 8b), not by the file name.
 */
import { createReadStream, readFileSync, writeFileSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { constants, createGunzip, gunzipSync, gzipSync } from 'node:zlib';
import * as niftiReader from 'nifti-reader-js';
import { MindeyeError } from '../errors.ts';
import type { Shape3 } from '../events.ts';
import { checkVolumeSize } from './limits.ts';

export interface NiftiHeader {
  /** Spatial shape (x, y, z); missing dimensions are 1. */
  shape: Shape3;
  /** Number of volumes (dim[4], at least 1). */
  volumes: number;
  /** Voxel sizes in mm. */
  voxelSizeMm: [number, number, number];
  /** Repetition time in seconds from pixdim[4] and xyzt_units (ms and us are converted). */
  trSec: number;
  datatypeCode: number;
  bitsPerVoxel: number;
  littleEndian: boolean;
  voxOffset: number;
  sclSlope: number;
  sclInter: number;
  affine: Float64Array;
  qformCode: number;
  sformCode: number;
  /** Slice timing fields as stored (slice_code, slice_duration in s, slice_start/end). */
  sliceCode: number;
  sliceDurationSec: number;
  description: string;
}

export interface NiftiImage {
  header: NiftiHeader;
  /** All voxels as float32 with scl_slope/scl_inter applied, NIfTI order (x fastest, then volumes). */
  data: Float32Array;
}

const DTYPE_BYTES: Record<number, number> = { 2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4 };
const DTYPE_NAMES: Record<number, string> = {
  2: 'uint8', 4: 'int16', 8: 'int32', 16: 'float32', 64: 'float64', 256: 'int8', 512: 'uint16', 768: 'uint32',
};
export const NIFTI_DTYPE = { uint8: 2, int16: 4, int32: 8, float32: 16, float64: 64, int8: 256, uint16: 512 } as const;

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Parses a NIfTI header from the first bytes of an uncompressed file (at least 348 or 540 bytes). */
export function parseNiftiHeader(bytes: Uint8Array, file: string): NiftiHeader {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  if (bytes.byteLength < 348 || !niftiReader.isNIFTI(buffer)) {
    throw new MindeyeError('NIFTI_HEADER_INVALID', 'Not a NIfTI-1 or NIfTI-2 file.', {
      file, field: 'magic', value: `${bytes.byteLength} bytes without a NIfTI magic string`,
      expected: '"n+1", "ni1", "n+2" or "ni2" in a header of at least 348 bytes',
      fix: 'check that the path points to a .nii or .nii.gz file',
    });
  }
  const h = niftiReader.readHeader(buffer);
  if (h === null) {
    throw new MindeyeError('NIFTI_HEADER_INVALID', 'Could not parse the NIfTI header.', { file, field: 'header' });
  }
  const dims = h.dims;
  const ndim = dims[0];
  if (!(ndim >= 1 && ndim <= 7)) {
    throw new MindeyeError('NIFTI_HEADER_INVALID', 'Invalid dimension count in the NIfTI header.', {
      file, field: 'dim[0]', value: ndim, expected: '1 to 7', fix: 'rewrite the file with a NIfTI converter (nibabel, dcm2niix)',
    });
  }
  for (let i = 1; i <= ndim; i++) {
    if (!(Number.isInteger(dims[i]) && dims[i] >= 1)) {
      throw new MindeyeError('NIFTI_HEADER_INVALID', 'A NIfTI dimension is zero or negative.', {
        file, field: `dim[${i}]`, value: dims[i], expected: `an integer >= 1 for every dim[1..${ndim}] (dim[0] = ${ndim})`,
        fix: 'the header is damaged or the image is empty: export or convert it again',
      });
    }
  }
  // dim[5..7] are vector or tensor components per voxel (NIfTI-1 intent codes). An fMRI run
  // has one value per voxel and time point, so those dimensions must be 1.
  for (let i = 5; i <= ndim; i++) {
    if (dims[i] !== 1) {
      throw new MindeyeError('NIFTI_HEADER_INVALID', 'The NIfTI image has more than 4 dimensions.', {
        file, field: `dim[${i}]`, value: `${dims[i]} (dim = [${dims.slice(0, ndim + 1).join(', ')}])`,
        expected: '1: a 3D volume or a 4D run of volumes',
        fix: 'split the components into separate 3D or 4D files (for example with nibabel or fslsplit)',
      });
    }
  }
  const dim = (i: number) => (i <= ndim ? dims[i] : 1);
  const shape: Shape3 = [dim(1), dim(2), dim(3)];
  const volumes = dim(4);
  checkVolumeSize({
    code: 'NIFTI_HEADER_INVALID', file, field: 'dim[1..3]', voxels: shape[0] * shape[1] * shape[2], dimensions: shape.join(' x '),
  });
  if (!(h.datatypeCode in DTYPE_BYTES)) {
    throw new MindeyeError('NIFTI_DTYPE_UNSUPPORTED', 'Unsupported NIfTI data type.', {
      file, field: 'datatype', value: h.datatypeCode,
      expected: Object.entries(DTYPE_NAMES).map(([c, n]) => `${c} (${n})`).join(', '),
      fix: 'convert the image to int16 or float32',
    });
  }
  const timeUnits = h.xyzt_units & 0x38;
  let trSec = h.pixDims[4] ?? 0;
  if (timeUnits === 16) trSec /= 1000;
  else if (timeUnits === 24) trSec /= 1e6;
  trSec = snapFloat32Fraction(trSec);
  const affine = new Float64Array(16);
  for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) affine[r * 4 + c] = h.affine[r][c];
  const slope = h.scl_slope;
  return {
    shape,
    volumes,
    voxelSizeMm: [Math.abs(h.pixDims[1] ?? 1), Math.abs(h.pixDims[2] ?? 1), Math.abs(h.pixDims[3] ?? 1)],
    trSec,
    datatypeCode: h.datatypeCode,
    bitsPerVoxel: h.numBitsPerVoxel,
    littleEndian: h.littleEndian,
    voxOffset: h.vox_offset,
    // NIfTI-1: a slope of 0 (or NaN) means "no scaling".
    sclSlope: slope === 0 || !Number.isFinite(slope) ? 1 : slope,
    sclInter: slope === 0 || !Number.isFinite(h.scl_inter) ? 0 : h.scl_inter,
    affine,
    qformCode: h.qform_code,
    sformCode: h.sform_code,
    sliceCode: h.slice_code,
    sliceDurationSec: h.slice_duration,
    description: h.description,
  };
}

/**
 * Returns the fraction with a denominator up to 12 that a float32 header value was rounded from
 * (NSD's TR of 4/3 s is stored as 1.3333334), or the value itself when none is that close.
 */
export function snapFloat32Fraction(x: number): number {
  for (let den = 1; den <= 12; den++) {
    const num = Math.round(x * den);
    if (num !== 0 && Math.abs(x - num / den) <= Math.abs(x) * 1.2e-7) return num / den;
  }
  return x;
}

export function bytesPerVoxel(header: NiftiHeader): number {
  return DTYPE_BYTES[header.datatypeCode];
}

/** Converts raw voxel bytes of one or more volumes to float32, applying the header's scaling. */
export function decodeVoxels(header: NiftiHeader, raw: Uint8Array, out?: Float32Array): Float32Array {
  const bpv = bytesPerVoxel(header);
  const n = raw.byteLength / bpv;
  const result = out ?? new Float32Array(n);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const le = header.littleEndian;
  const s = header.sclSlope;
  const b = header.sclInter;
  switch (header.datatypeCode) {
    case 2: for (let i = 0; i < n; i++) result[i] = raw[i] * s + b; break;
    case 256: for (let i = 0; i < n; i++) result[i] = view.getInt8(i) * s + b; break;
    case 4: for (let i = 0; i < n; i++) result[i] = view.getInt16(i * 2, le) * s + b; break;
    case 512: for (let i = 0; i < n; i++) result[i] = view.getUint16(i * 2, le) * s + b; break;
    case 8: for (let i = 0; i < n; i++) result[i] = view.getInt32(i * 4, le) * s + b; break;
    case 768: for (let i = 0; i < n; i++) result[i] = view.getUint32(i * 4, le) * s + b; break;
    case 16: for (let i = 0; i < n; i++) result[i] = view.getFloat32(i * 4, le) * s + b; break;
    case 64: for (let i = 0; i < n; i++) result[i] = view.getFloat64(i * 8, le) * s + b; break;
  }
  return result;
}

function headerBytesNeeded(first: Uint8Array): number {
  // NIfTI-2 headers are 540 bytes; sizeof_hdr is 348 or 540 in either byte order.
  const view = new DataView(first.buffer, first.byteOffset, Math.min(first.byteLength, 4));
  const le = view.getInt32(0, true);
  const be = view.getInt32(0, false);
  return le === 540 || be === 540 ? 544 : 352;
}

/** Reads a whole NIfTI image (any size that fits in memory); use for masks, references and fixtures. */
export function readNifti(file: string): NiftiImage {
  let bytes: Uint8Array = readFileSync(file);
  if (isGzip(bytes)) bytes = gunzipNifti(bytes, file);
  const header = parseNiftiHeader(bytes.subarray(0, Math.min(bytes.byteLength, 1024)), file);
  const voxelCount = header.shape[0] * header.shape[1] * header.shape[2] * header.volumes;
  const need = header.voxOffset + voxelCount * bytesPerVoxel(header);
  if (bytes.byteLength < need) {
    throw new MindeyeError('NIFTI_TRUNCATED', 'The NIfTI file is shorter than its header requires (truncated).', {
      file, field: 'data size', value: `${bytes.byteLength} bytes`, expected: `${need} bytes (vox_offset + voxels x bytes per voxel)`,
      fix: 'the file is truncated or its header is wrong: copy or convert it again',
    });
  }
  const data = decodeVoxels(header, bytes.subarray(header.voxOffset, need));
  return { header, data };
}

/** Extra decompressed bytes accepted after the voxels a header states (padding some writers add). */
const GZIP_TRAILING_SLACK_BYTES = 1024 * 1024;

/** Decompresses the start of a gzip stream, enough for a NIfTI-1 or NIfTI-2 header. */
function gunzipHead(bytes: Uint8Array, file: string): Uint8Array {
  let head: Uint8Array;
  try {
    // A partial gzip member is enough for the header; finishFlush avoids an "unexpected end" error.
    head = gunzipSync(bytes.subarray(0, Math.min(bytes.byteLength, 4096)), { finishFlush: constants.Z_SYNC_FLUSH });
  } catch (err) {
    throw truncatedError(file, 0, (err as Error).message);
  }
  if (head.byteLength < 4 || head.byteLength < headerBytesNeeded(head)) {
    throw truncatedError(file, 0, `${head.byteLength} bytes decompressed, less than a NIfTI header`);
  }
  return head;
}

/**
 * Decompresses a whole gzip NIfTI file. The header is read first, so that decompression stops
 * 1 MiB past the size it states and a stream that inflates far beyond it (a "zip bomb") cannot
 * take memory. Throws NIFTI_TRUNCATED when the stream ends early, NIFTI_HEADER_INVALID when it
 * contains more than the header states.
 */
export function gunzipNifti(bytes: Uint8Array, file: string): Buffer {
  const claimed = parseNiftiHeader(gunzipHead(bytes, file), file);
  const claimedBytes = claimed.voxOffset + claimed.shape[0] * claimed.shape[1] * claimed.shape[2] * claimed.volumes * bytesPerVoxel(claimed);
  const limit = Math.min(bufferConstants.MAX_LENGTH, claimedBytes + GZIP_TRAILING_SLACK_BYTES);
  try {
    return gunzipSync(bytes, { maxOutputLength: limit });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new MindeyeError('NIFTI_HEADER_INVALID', 'The compressed NIfTI file contains more data than its header states.', {
        file, field: 'gzip stream', value: `more than ${limit} bytes decompressed`,
        expected: `${claimedBytes} bytes (vox_offset + voxels x bytes per voxel)`,
        fix: 'the header does not describe the data: convert the image again',
      });
    }
    throw truncatedError(file, 0, (err as Error).message);
  }
}

/** Reads only the header, decompressing no more than needed. */
export function readNiftiHeader(file: string): NiftiHeader {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(65536);
    const n = readSync(fd, head, 0, head.length, 0);
    let bytes: Uint8Array = head.subarray(0, n);
    if (isGzip(bytes)) {
      // A partial gzip member is enough for the header; finishFlush avoids an "unexpected end" error.
      bytes = gunzipSync(bytes, { finishFlush: 2 /* Z_SYNC_FLUSH */ });
    }
    return parseNiftiHeader(bytes.subarray(0, Math.min(bytes.byteLength, 1024)), file);
  } finally {
    closeSync(fd);
  }
}

function truncatedError(file: string, volumesComplete: number, cause: string): MindeyeError {
  return new MindeyeError('NIFTI_TRUNCATED', 'The compressed NIfTI stream ended early.', {
    file, field: 'gzip stream', value: `${cause}; ${volumesComplete} complete volumes read`,
    expected: 'a complete gzip stream holding every volume the header lists',
    fix: 'the file is truncated (an interrupted copy or download): copy it again; the complete volumes before the break were processed',
  });
}

/**
 * Throws when an uncompressed file is too short for even one volume, so that a header claiming
 * more than the file contains costs no allocation. A gzip file's size is known only after
 * decompression, so its volumes are checked against the cap alone.
 */
function checkFileHoldsOneVolume(file: string, header: NiftiHeader, volumeBytes: number): void {
  const size = statSync(file).size;
  if (size >= header.voxOffset + volumeBytes) return;
  throw new MindeyeError('NIFTI_TRUNCATED', 'The NIfTI file is shorter than one volume of its header.', {
    file, field: 'dim[1..3] and datatype', value: `${size} bytes in the file`,
    expected: `at least ${header.voxOffset + volumeBytes} bytes (vox_offset + ${header.shape.join(' x ')} voxels x ${bytesPerVoxel(header)} bytes)`,
    fix: 'the file is truncated or its header is wrong: copy or convert it again',
  });
}

export interface StreamedVolume {
  index: number;
  data: Float32Array;
  /** Compressed bytes read from disk when this volume became available. */
  fileBytesRead: number;
}

/**
 * Yields the volumes of a 4D NIfTI one at a time, decompressing as it goes. Memory stays at
 * about one volume plus the stream buffers. A truncated file yields its complete volumes, then
 * throws NIFTI_TRUNCATED.
 */
export async function* streamNiftiVolumes(
  file: string,
  onHeader?: (header: NiftiHeader) => void,
): AsyncGenerator<StreamedVolume, NiftiHeader | undefined> {
  const fileStream = createReadStream(file, { highWaterMark: 256 * 1024 });
  // Counted where chunks are consumed: a 'data' listener would switch the stream to flowing
  // mode and read the whole file ahead of the decompressor.
  let fileBytesRead = 0;

  let source: AsyncIterable<Buffer> = fileStream;
  let sniffed = false;
  let header: NiftiHeader | undefined;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let volumeBytes = 0;
  let index = 0;

  const take = (n: number): Buffer => {
    const all = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    pending = rest.length > 0 ? [rest] : [];
    pendingBytes = rest.length;
    return out;
  };

  // Sniff the first chunk for the gzip magic, then re-chain it in front of the decompressor.
  const iterator = fileStream[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) {
    throw new MindeyeError('NIFTI_HEADER_INVALID', 'The NIfTI file is empty.', { file, field: 'size', value: 0, fix: 'check the path' });
  }
  const firstChunk = first.value as Buffer;
  fileBytesRead += firstChunk.length;
  const rest: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        const r = await iterator.next();
        if (!r.done) fileBytesRead += (r.value as Buffer).length;
        return r as IteratorResult<Buffer>;
      },
    }),
  };
  const compressed = isGzip(firstChunk);
  if (compressed) {
    const gunzip = createGunzip();
    (async () => {
      try {
        if (!gunzip.write(firstChunk)) await new Promise((r) => gunzip.once('drain', r));
        for await (const chunk of rest) {
          if (!gunzip.write(chunk)) await new Promise((r) => gunzip.once('drain', r));
        }
        gunzip.end();
      } catch (err) {
        gunzip.destroy(err as Error);
      }
    })();
    source = gunzip;
  } else {
    source = (async function* () {
      yield firstChunk;
      yield* rest;
    })();
  }
  sniffed = true;

  try {
    // One reusable volume buffer: chunks are copied into it at an offset, so no chunk is
    // concatenated more than once (decodeVoxels copies the voxels out before it is refilled).
    let volumeBuffer: Buffer | undefined;
    let filled = 0;
    for await (const chunk of source) {
      let data: Buffer = chunk;
      if (header === undefined) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        const peek = Buffer.concat(pending, pendingBytes);
        pending = [peek];
        const need = headerBytesNeeded(peek);
        if (pendingBytes < need) continue;
        const parsed = parseNiftiHeader(peek.subarray(0, Math.min(peek.length, 1024)), file);
        if (pendingBytes < parsed.voxOffset) continue;
        header = parsed;
        onHeader?.(header);
        data = take(pendingBytes).subarray(header.voxOffset);
        volumeBytes = header.shape[0] * header.shape[1] * header.shape[2] * bytesPerVoxel(header);
        if (!compressed) checkFileHoldsOneVolume(file, header, volumeBytes);
        volumeBuffer = Buffer.allocUnsafe(volumeBytes);
      }
      let offset = 0;
      while (offset < data.length && index < header.volumes) {
        const n = Math.min(volumeBytes - filled, data.length - offset);
        data.copy(volumeBuffer!, filled, offset, offset + n);
        filled += n;
        offset += n;
        if (filled === volumeBytes) {
          yield { index, data: decodeVoxels(header, volumeBuffer!), fileBytesRead };
          index++;
          filled = 0;
        }
      }
      pendingBytes = filled;
      if (index >= header.volumes) break;
    }
  } catch (err) {
    if (err instanceof MindeyeError) throw err;
    throw truncatedError(file, index, (err as Error).message);
  } finally {
    fileStream.destroy();
  }
  if (!sniffed || header === undefined) {
    throw new MindeyeError('NIFTI_TRUNCATED', 'The NIfTI file ended inside its header.', {
      file, field: 'header', value: `${pendingBytes} bytes`, fix: 'copy the file again',
    });
  }
  if (index < header.volumes) {
    throw new MindeyeError('NIFTI_TRUNCATED', 'The NIfTI file ended before its last volume.', {
      file, field: 'dim[4]', value: `${index} complete volumes, ${pendingBytes} bytes of the next`,
      expected: `${header.volumes} volumes`,
      fix: 'the file is truncated: copy it again; the complete volumes before the break were processed',
    });
  }
  return header;
}

export interface NiftiWriteOptions {
  shape: Shape3;
  volumes?: number;
  voxelSizeMm: [number, number, number];
  trSec?: number;
  affine: Float64Array;
  datatype: keyof typeof NIFTI_DTYPE;
  sclSlope?: number;
  sclInter?: number;
  description?: string;
  /** NIfTI slice_code and slice_duration, written as given. */
  sliceCode?: number;
  sliceDurationSec?: number;
  /** Compress with gzip (default: true when the path ends in .gz). */
  gzip?: boolean;
  gzipLevel?: number;
}

/** Encodes the 352-byte NIfTI-1 header (348 bytes plus an empty extension flag) for `opts`. */
export function encodeNiftiHeader(opts: NiftiWriteOptions): Buffer {
  const code = NIFTI_DTYPE[opts.datatype];
  const bpv = DTYPE_BYTES[code];
  const volumes = opts.volumes ?? 1;
  const buf = Buffer.alloc(352);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setInt32(0, 348, true);
  const ndim = volumes > 1 ? 4 : 3;
  const dims = [ndim, opts.shape[0], opts.shape[1], opts.shape[2], volumes, 1, 1, 1];
  dims.forEach((d, i) => v.setInt16(40 + i * 2, d, true));
  v.setInt16(70, code, true);
  v.setInt16(72, bpv * 8, true);
  const a = opts.affine;
  const qfac = det3(a) < 0 ? -1 : 1;
  const pix = [qfac, opts.voxelSizeMm[0], opts.voxelSizeMm[1], opts.voxelSizeMm[2], opts.trSec ?? 0, 1, 1, 1];
  pix.forEach((p, i) => v.setFloat32(76 + i * 4, p, true));
  v.setFloat32(108, 352, true); // vox_offset
  v.setFloat32(112, opts.sclSlope ?? 1, true);
  v.setFloat32(116, opts.sclInter ?? 0, true);
  if (opts.sliceCode !== undefined) buf[122] = opts.sliceCode;
  v.setUint8(123, 2 | 8); // xyzt_units: mm and s
  if (opts.sliceDurationSec !== undefined) v.setFloat32(132, opts.sliceDurationSec, true);
  buf.write((opts.description ?? 'mindeye-rt').slice(0, 79), 148, 'latin1');
  // qform from the affine's rotation (nifti1.h method 2), sform as the full affine (method 3).
  const q = affineToQuaternion(a, opts.voxelSizeMm, qfac);
  v.setInt16(252, 1, true); // qform_code scanner
  v.setInt16(254, 1, true); // sform_code scanner
  v.setFloat32(256, q[0], true);
  v.setFloat32(260, q[1], true);
  v.setFloat32(264, q[2], true);
  v.setFloat32(268, a[3], true);
  v.setFloat32(272, a[7], true);
  v.setFloat32(276, a[11], true);
  for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) v.setFloat32(280 + (r * 4 + c) * 4, a[r * 4 + c], true);
  buf.write('n+1\0', 344, 'latin1');
  return buf;
}

/** Encodes a NIfTI-1 single file (.nii) image; values are rounded for integer types. */
export function encodeNifti(data: ArrayLike<number>, opts: NiftiWriteOptions): Uint8Array {
  const code = NIFTI_DTYPE[opts.datatype];
  const bpv = DTYPE_BYTES[code];
  const volumes = opts.volumes ?? 1;
  const n = opts.shape[0] * opts.shape[1] * opts.shape[2] * volumes;
  if (data.length !== n) {
    throw new RangeError(`encodeNifti: ${data.length} values for shape ${opts.shape.join('x')}x${volumes} (${n})`);
  }
  const buf = Buffer.alloc(352 + n * bpv);
  encodeNiftiHeader(opts).copy(buf, 0);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const off = 352;
  const isInt = opts.datatype !== 'float32' && opts.datatype !== 'float64';
  const slope = opts.sclSlope ?? 1;
  const inter = opts.sclInter ?? 0;
  for (let i = 0; i < n; i++) {
    const value = slope !== 1 || inter !== 0 ? (data[i] - inter) / slope : data[i];
    const x = isInt ? Math.round(value) : value;
    switch (opts.datatype) {
      case 'uint8': v.setUint8(off + i, clamp(x, 0, 255)); break;
      case 'int8': v.setInt8(off + i, clamp(x, -128, 127)); break;
      case 'int16': v.setInt16(off + i * 2, clamp(x, -32768, 32767), true); break;
      case 'uint16': v.setUint16(off + i * 2, clamp(x, 0, 65535), true); break;
      case 'int32': v.setInt32(off + i * 4, x, true); break;
      case 'float32': v.setFloat32(off + i * 4, x, true); break;
      case 'float64': v.setFloat64(off + i * 8, x, true); break;
    }
  }
  const gzip = opts.gzip ?? false;
  return gzip ? gzipSync(buf, { level: opts.gzipLevel ?? 6 }) : buf;
}

export function writeNifti(file: string, data: ArrayLike<number>, opts: NiftiWriteOptions): void {
  writeFileSync(file, encodeNifti(data, { ...opts, gzip: opts.gzip ?? file.endsWith('.gz') }));
}

function clamp(x: number, lo: number, hi: number): number {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}

function det3(a: Float64Array): number {
  return a[0] * (a[5] * a[10] - a[6] * a[9]) - a[1] * (a[4] * a[10] - a[6] * a[8]) + a[2] * (a[4] * a[9] - a[5] * a[8]);
}

/** Quaternion (b, c, d) of the affine's rotation after removing voxel sizes and qfac (nifti1.h). */
function affineToQuaternion(a: Float64Array, vox: [number, number, number], qfac: number): [number, number, number] {
  const r = [
    [a[0] / vox[0], a[1] / vox[1], (a[2] / vox[2]) * qfac],
    [a[4] / vox[0], a[5] / vox[1], (a[6] / vox[2]) * qfac],
    [a[8] / vox[0], a[9] / vox[1], (a[10] / vox[2]) * qfac],
  ];
  const trace = r[0][0] + r[1][1] + r[2][2];
  let qa: number, qb: number, qc: number, qd: number;
  if (trace > 0.5) {
    qa = 0.5 * Math.sqrt(1 + trace);
    qb = (0.25 * (r[2][1] - r[1][2])) / qa;
    qc = (0.25 * (r[0][2] - r[2][0])) / qa;
    qd = (0.25 * (r[1][0] - r[0][1])) / qa;
  } else if (r[0][0] > r[1][1] && r[0][0] > r[2][2]) {
    qb = 0.5 * Math.sqrt(1 + r[0][0] - r[1][1] - r[2][2]);
    qa = (0.25 * (r[2][1] - r[1][2])) / qb;
    qc = (0.25 * (r[0][1] + r[1][0])) / qb;
    qd = (0.25 * (r[0][2] + r[2][0])) / qb;
  } else if (r[1][1] > r[2][2]) {
    qc = 0.5 * Math.sqrt(1 + r[1][1] - r[0][0] - r[2][2]);
    qa = (0.25 * (r[0][2] - r[2][0])) / qc;
    qb = (0.25 * (r[0][1] + r[1][0])) / qc;
    qd = (0.25 * (r[1][2] + r[2][1])) / qc;
  } else {
    qd = 0.5 * Math.sqrt(1 + r[2][2] - r[0][0] - r[1][1]);
    qa = (0.25 * (r[1][0] - r[0][1])) / qd;
    qb = (0.25 * (r[0][2] + r[2][0])) / qd;
    qc = (0.25 * (r[1][2] + r[2][1])) / qd;
  }
  if (qa < 0) { qb = -qb; qc = -qc; qd = -qd; }
  return [qb, qc, qd];
}

/** Maps voxel indices to RAS+ mm with a row-major 4x4 affine. */
export function voxToRasMm(affine: Float64Array, i: number, j: number, k: number): [number, number, number] {
  return [
    affine[0] * i + affine[1] * j + affine[2] * k + affine[3],
    affine[4] * i + affine[5] * j + affine[6] * k + affine[7],
    affine[8] * i + affine[9] * j + affine[10] * k + affine[11],
  ];
}
