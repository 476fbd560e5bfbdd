/**
 * DICOM data set access on top of the dicom-parser package: typed numeric reads that follow the
 * element's VR, private-block lookup, and pixel data to float32.
 *
 * Only uncompressed transfer syntaxes are read (implicit or explicit VR little endian, explicit VR
 * big endian), because real-time scanner exports write uncompressed images.
 */
import dicomParser from 'dicom-parser';
import type { DataSet, Element } from 'dicom-parser';
import { MindeyeError } from '../../errors.ts';
import { checkVolumeSize } from '../../io/limits.ts';

export type { DataSet, Element };

/**
 * A file that is not complete yet (still being written, or cut short). The folder watcher retries
 * it until the size settles; after its timeout it reports the file as corrupt.
 */
export class IncompleteFileError extends MindeyeError {
  /** Header fields that could be read before the end of the bytes, when any could. */
  readonly partial?: DataSet;

  constructor(file: string, detail: string, partial?: DataSet) {
    super('DICOM_INVALID', 'The file ends early (still being written, or truncated).', {
      file, field: 'file size', value: detail,
      expected: 'every element, including Pixel Data (7FE0,0010), inside the file',
      fix: 'wait until the scanner has finished writing it; a file that stays short is truncated and must be exported again',
    });
    this.name = 'IncompleteFileError';
    this.partial = partial;
  }
}

const UNCOMPRESSED_SYNTAXES = new Set([
  '1.2.840.10008.1.2', // implicit VR little endian
  '1.2.840.10008.1.2.1', // explicit VR little endian
  '1.2.840.10008.1.2.2', // explicit VR big endian (retired, still written by old exports)
]);

/** Formats a group and element as dicom-parser's tag key, such as `x00280010`. */
export function tag(group: number, element: number): string {
  return 'x' + ((group << 16) | element).toString(16).padStart(8, '0');
}

export function hasDicomMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 132 && bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 && bytes[131] === 0x4d;
}

/**
 * Parses a Part 10 DICOM file. Throws IncompleteFileError when the bytes end before the last
 * element (including the pixel data) and DICOM_INVALID when they are not DICOM at all.
 */
export function parseDicomFile(bytes: Uint8Array, file: string): DataSet {
  if (bytes.length < 132) {
    throw new IncompleteFileError(file, `${bytes.length} bytes, shorter than the 132-byte preamble and "DICM" prefix`);
  }
  if (!hasDicomMagic(bytes)) {
    throw new MindeyeError('DICOM_INVALID', 'Not a DICOM Part 10 file.', {
      file, field: 'bytes 128-131', value: Buffer.from(bytes.subarray(128, 132)).toString('latin1'),
      expected: '"DICM" after a 128-byte preamble',
      fix: 'remove the file from the watched folder, or choose --format to match the files the scanner writes',
    });
  }
  let ds: DataSet;
  try {
    ds = dicomParser.parseDicom(bytes);
  } catch (err) {
    const partial = (err as { dataSet?: DataSet }).dataSet;
    const reason = typeof err === 'string' ? err : ((err as { exception?: string }).exception ?? String(err));
    if (/past end|overrun|overread/i.test(reason) || metaGroupIncomplete(bytes)) {
      throw new IncompleteFileError(file, `${bytes.length} bytes; the parser stopped with "${reason}"`, partial);
    }
    throw new MindeyeError('DICOM_INVALID', 'The DICOM file could not be parsed.', {
      file, field: 'data set', value: reason, fix: 'export the file again; if it persists, check it with dcmdump',
    });
  }
  const pixels = ds.elements[tag(0x7fe0, 0x0010)];
  // A file cut exactly between two elements parses cleanly, so a missing Pixel Data element also
  // means "not complete yet". A DICOM object that never has pixels ends up reported as corrupt.
  if (pixels === undefined) {
    throw new IncompleteFileError(file, `${bytes.length} bytes without Pixel Data (7FE0,0010)`, ds);
  }
  if (pixels.dataOffset + pixels.length > bytes.length) {
    throw new IncompleteFileError(file, `${bytes.length} bytes, Pixel Data needs ${pixels.dataOffset + pixels.length}`, ds);
  }
  return ds;
}

/**
 * True when the bytes end inside the File Meta Information group, whose length (0002,0000) is
 * the first element after "DICM" in every Part 10 file.
 */
function metaGroupIncomplete(bytes: Uint8Array): boolean {
  if (bytes.length < 144) return true;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(132, true) !== 0x0002 || view.getUint16(134, true) !== 0x0000) return false;
  return bytes.length < 144 + view.getUint32(140, true);
}

/** Trimmed string value, or undefined when absent or empty. */
export function str(ds: DataSet, key: string, index?: number): string | undefined {
  const value = ds.string(key, index);
  return value === undefined || value === '' ? undefined : value.trim();
}

/** Reads all numeric values of an element as its VR specifies; `implicitVr` applies when the file has no VRs. */
export function numbers(ds: DataSet, key: string, implicitVr = 'DS'): number[] {
  const el = ds.elements[key];
  if (el === undefined || el.length === 0) return [];
  const vr = el.vr ?? implicitVr;
  const width: Record<string, number> = { US: 2, SS: 2, UL: 4, SL: 4, FL: 4, FD: 8 };
  if (vr === 'DS' || vr === 'IS') {
    const text = ds.string(key) ?? '';
    return text.split('\\').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  }
  const w = width[vr];
  if (w === undefined) return [];
  const out: number[] = [];
  for (let i = 0; i < el.length / w; i++) {
    const v =
      vr === 'US' ? ds.uint16(key, i) : vr === 'SS' ? ds.int16(key, i) : vr === 'UL' ? ds.uint32(key, i)
        : vr === 'SL' ? ds.int32(key, i) : vr === 'FL' ? ds.float(key, i) : ds.double(key, i);
    if (v !== undefined) out.push(v);
  }
  return out;
}

export function num(ds: DataSet, key: string, implicitVr = 'DS'): number | undefined {
  const values = numbers(ds, key, implicitVr);
  return values.length > 0 && Number.isFinite(values[0]) ? values[0] : undefined;
}

/** Returns the first item's data set of a sequence element, or undefined. */
export function firstItem(ds: DataSet, key: string): DataSet | undefined {
  return ds.elements[key]?.items?.[0]?.dataSet;
}

export function items(ds: DataSet, key: string): DataSet[] {
  return (ds.elements[key]?.items ?? []).map((item) => item.dataSet).filter((d): d is DataSet => d !== undefined);
}

/**
 * Key of a private element: private creators (gggg,0010-00FF) reserve blocks, so the element
 * (gggg,xxEE) of creator C lives at (gggg, block << 8 | EE). Returns undefined when C is absent.
 */
export function privateTag(ds: DataSet, group: number, creator: string, elementLow: number): string | undefined {
  for (let block = 0x10; block <= 0xff; block++) {
    const value = str(ds, tag(group, block));
    if (value === undefined) continue;
    if (value.toUpperCase() === creator.toUpperCase()) return tag(group, (block << 8) | elementLow);
  }
  return undefined;
}

export function requireNumber(ds: DataSet, key: string, name: string, file: string, implicitVr = 'DS'): number {
  const value = num(ds, key, implicitVr);
  if (value === undefined) {
    throw new MindeyeError('DICOM_INVALID', `Required DICOM attribute ${name} is missing.`, {
      file, field: `${name} (${key.slice(1, 5)},${key.slice(5)})`, value: 'absent',
      fix: 'export the series again with full headers (anonymisation tools can strip it)',
    });
  }
  return value;
}

export function requireNumbers(ds: DataSet, key: string, name: string, file: string, count: number): number[] {
  const values = numbers(ds, key);
  if (values.length !== count || values.some((v) => !Number.isFinite(v))) {
    throw new MindeyeError('DICOM_INVALID', `DICOM attribute ${name} is missing or malformed.`, {
      file, field: `${name} (${key.slice(1, 5)},${key.slice(5)})`, value: values.length === 0 ? 'absent' : values,
      expected: `${count} numbers`, fix: 'export the series again with full headers',
    });
  }
  return values;
}

export interface PixelFormat {
  rows: number;
  columns: number;
  bitsAllocated: number;
  signed: boolean;
  bigEndian: boolean;
}

export function pixelFormat(ds: DataSet, file: string): PixelFormat {
  const syntax = str(ds, tag(0x0002, 0x0010)) ?? '1.2.840.10008.1.2';
  if (!UNCOMPRESSED_SYNTAXES.has(syntax.replace(/\0/g, ''))) {
    throw new MindeyeError('DICOM_INVALID', 'Compressed DICOM pixel data is not supported.', {
      file, field: 'TransferSyntaxUID (0002,0010)', value: syntax,
      expected: '1.2.840.10008.1.2, 1.2.840.10008.1.2.1 or 1.2.840.10008.1.2.2 (uncompressed)',
      fix: 'set the scanner export to uncompressed, or decompress with `gdcmconv --raw`',
    });
  }
  const bitsAllocated = requireNumber(ds, tag(0x0028, 0x0100), 'BitsAllocated', file, 'US');
  if (bitsAllocated !== 8 && bitsAllocated !== 16 && bitsAllocated !== 32) {
    throw new MindeyeError('DICOM_INVALID', 'Unsupported DICOM pixel size.', {
      file, field: 'BitsAllocated (0028,0100)', value: bitsAllocated, expected: '8, 16 or 32',
    });
  }
  const samples = num(ds, tag(0x0028, 0x0002), 'US') ?? 1;
  if (samples !== 1) {
    throw new MindeyeError('DICOM_INVALID', 'Colour DICOM images are not fMRI volumes.', {
      file, field: 'SamplesPerPixel (0028,0002)', value: samples, expected: '1 (monochrome)',
    });
  }
  return {
    rows: requireNumber(ds, tag(0x0028, 0x0010), 'Rows', file, 'US'),
    columns: requireNumber(ds, tag(0x0028, 0x0011), 'Columns', file, 'US'),
    bitsAllocated,
    signed: (num(ds, tag(0x0028, 0x0103), 'US') ?? 0) === 1,
    bigEndian: syntax === '1.2.840.10008.1.2.2',
  };
}

/** Stored pixel values (no rescale) of `frames` frames as float32, in file order. */
export function readPixels(ds: DataSet, file: string, format: PixelFormat, frames: number): Float32Array {
  const el = ds.elements[tag(0x7fe0, 0x0010)];
  if (el === undefined) {
    throw new MindeyeError('DICOM_INVALID', 'The DICOM file has no pixel data.', {
      file, field: 'PixelData (7FE0,0010)', value: 'absent', fix: 'export images, not a header-only object',
    });
  }
  if (el.encapsulatedPixelData === true) {
    throw new MindeyeError('DICOM_INVALID', 'Encapsulated (compressed) pixel data is not supported.', {
      file, field: 'PixelData (7FE0,0010)', value: 'encapsulated', fix: 'export uncompressed images',
    });
  }

  const count = format.rows * format.columns * frames;
  checkVolumeSize({
    code: 'DICOM_INVALID', file, field: 'Rows x Columns x NumberOfFrames', voxels: count, dimensions: `${format.rows} x ${format.columns} x ${frames}`,
  });
  const bytesPerPixel = format.bitsAllocated / 8;
  if (el.length < count * bytesPerPixel) {
    throw new MindeyeError('DICOM_INVALID', 'Pixel Data is shorter than Rows x Columns x frames.', {
      file, field: 'PixelData (7FE0,0010) length', value: el.length,
      expected: `${count * bytesPerPixel} bytes (${format.rows} x ${format.columns} x ${frames} frames x ${bytesPerPixel})`,
      fix: 'the file is damaged: export it again',
    });
  }

  const bytes = ds.byteArray;
  const view = new DataView(bytes.buffer, bytes.byteOffset + el.dataOffset, count * bytesPerPixel);
  const le = !format.bigEndian;
  const out = new Float32Array(count);
  if (format.bitsAllocated === 16) {
    if (le && !format.signed && (bytes.byteOffset + el.dataOffset) % 2 === 0) {
      out.set(new Uint16Array(bytes.buffer, bytes.byteOffset + el.dataOffset, count));
    } else if (le && format.signed && (bytes.byteOffset + el.dataOffset) % 2 === 0) {
      out.set(new Int16Array(bytes.buffer, bytes.byteOffset + el.dataOffset, count));
    } else if (format.signed) {
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, le);
    } else {
      for (let i = 0; i < count; i++) out[i] = view.getUint16(i * 2, le);
    }
  } else if (format.bitsAllocated === 8) {
    for (let i = 0; i < count; i++) out[i] = format.signed ? view.getInt8(i) : view.getUint8(i);
  } else {
    for (let i = 0; i < count; i++) out[i] = format.signed ? view.getInt32(i * 4, le) : view.getUint32(i * 4, le);
  }
  return out;
}

/** Parses a DICOM DT or TM value (`YYYYMMDDHHMMSS.FFFFFF` or `HHMMSS.FFFFFF`) to seconds since midnight. */
export function secondsOfDay(value: string): number | undefined {
  const m = /^(?:\d{8})?(\d{2})(\d{2})(\d{2}(?:\.\d+)?)/.exec(value.trim());
  if (m === null) return undefined;
  return Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
}
