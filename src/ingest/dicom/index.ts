/**
 * One entry point for every scanner file the ingest reads: detects the layout from the bytes
 * (never from the name alone) and decodes it into whole volumes or single slices.
 *
 *   NIfTI (.nii or .nii.gz, gzip found by its magic bytes)   -> volumes (one per 3D volume in the file)
 *   DICOM multi-frame (Enhanced MR: Siemens XA, Philips)       -> volumes, frames as slices
 *   DICOM with ImageType MOSAIC (Siemens classic)              -> one volume
 *   other single-frame DICOM (GE, classic Philips)             -> one slice; see slices.ts
 *   Philips PAR text header (its .REC beside it)               -> volumes
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { isMindeyeError, MindeyeError } from '../../errors.ts';
import { decodeVoxels, gunzipNifti, isGzip, parseNiftiHeader, bytesPerVoxel } from '../../io/nifti.ts';
import { hasDicomMagic, IncompleteFileError, num, parseDicomFile, str, tag, type DataSet } from './dataset.ts';
import { decodeEnhancedMr, isMultiFrame } from './enhanced.ts';
import { decodeParRec, isParText } from './philips-parrec.ts';
import { decodeSiemensMosaic, isMosaic } from './siemens-mosaic.ts';
import { decodeSingleSlice } from './slices.ts';
import type { DecodedFile, FormatOption, ScannerFormat, VolumeFile } from './types.ts';

export { IncompleteFileError } from './dataset.ts';
export { assembleSlices } from './slices.ts';
export * from './types.ts';

/** Files that belong to another file and are read with it (the REC beside a PAR). */
export function isCompanionFile(file: string): boolean {
  return /\.rec$/i.test(file);
}

/** Detects the layout of a file from its first bytes, or returns undefined for an unknown layout. */
export function sniffLayout(bytes: Uint8Array): 'nifti' | 'dicom' | 'par' | undefined {
  if (isGzip(bytes)) return 'nifti';
  if (bytes.length >= 348) {
    const size = new DataView(bytes.buffer, bytes.byteOffset, 4);
    const le = size.getInt32(0, true);
    const be = size.getInt32(0, false);
    if (le === 348 || be === 348 || le === 540 || be === 540) return 'nifti';
  }
  if (hasDicomMagic(bytes)) return 'dicom';
  if (isParText(bytes)) return 'par';
  return undefined;
}

export interface DecodeOptions {
  format: FormatOption;
  /** Number in a NIfTI file name that is volume 0 (`vol_0001.nii` with 1 gives index 0). */
  niftiFirstNumber?: number;
}

/**
 * Decodes a whole file. Throws IncompleteFileError when the bytes end early (retry later) and
 * MindeyeError DICOM_INVALID or INGEST_INVALID when the file can never be read.
 */
export function decodeScannerFile(bytes: Uint8Array, file: string, opts: DecodeOptions): DecodedFile[] {
  const layout = sniffLayout(bytes);
  if (layout === undefined) {
    if (bytes.length < 348) throw new IncompleteFileError(file, `${bytes.length} bytes, too short to recognise`);
    throw new MindeyeError('INGEST_INVALID', 'The file is neither DICOM, NIfTI nor a Philips PAR header.', {
      file, field: 'first bytes', value: JSON.stringify(Buffer.from(bytes.subarray(0, 16)).toString('latin1')),
      expected: 'DICOM ("DICM" at byte 128), NIfTI (sizeof_hdr 348 or 540, or gzip) or PAR text',
      fix: 'keep only scanner output in the watched folder',
    });
  }
  if (layout === 'nifti') {
    expectFormat(opts.format, 'nifti', file, 'a NIfTI file');
    return decodeNiftiVolumes(bytes, file, opts.niftiFirstNumber ?? 0);
  }
  if (layout === 'par') {
    expectFormat(opts.format, 'philips', file, 'a Philips PAR header');
    const recFile = findRec(file);
    let rec: Uint8Array;
    try {
      rec = readFileSync(recFile);
    } catch {
      throw new IncompleteFileError(file, `its REC file ${basename(recFile)} is not there yet`);
    }
    return decodeParRec(Buffer.from(bytes).toString('latin1'), rec, file, recFile);
  }
  const ds = parseDicomFile(bytes, file);
  const detected = dicomFormat(ds);
  if (opts.format !== 'auto' && !compatible(opts.format, detected)) {
    throw wrongFormat(opts.format, detected, file);
  }
  if (isMultiFrame(ds)) return decodeEnhancedMr(ds, file, detected === 'philips' ? 'philips' : 'siemens-xa');
  if (isMosaic(ds)) return [decodeSiemensMosaic(ds, file)];
  return [decodeSingleSlice(ds, file, detected === 'philips' ? 'philips' : 'ge')];
}

/** Reads the series number and layout from a DICOM header without decoding pixels. */
export function dicomFormat(ds: DataSet): ScannerFormat {
  const manufacturer = (str(ds, tag(0x0008, 0x0070)) ?? '').toUpperCase();
  if (isMultiFrame(ds)) return manufacturer.includes('PHILIPS') ? 'philips' : 'siemens-xa';
  if (isMosaic(ds)) return 'siemens';
  return manufacturer.includes('PHILIPS') ? 'philips' : 'ge';
}

export function seriesNumberOf(ds: DataSet): number {
  return num(ds, tag(0x0020, 0x0011), 'IS') ?? 0;
}

function compatible(requested: ScannerFormat, detected: ScannerFormat): boolean {
  // A single-slice DICOM from any vendor is read the same way, so `ge` accepts classic Philips and vice versa.
  if (requested === detected) return true;
  return (requested === 'ge' || requested === 'philips') && (detected === 'ge' || detected === 'philips');
}

function expectFormat(requested: FormatOption, detected: ScannerFormat, file: string, kind: string): void {
  if (requested !== 'auto' && requested !== detected) throw wrongFormat(requested, detected, file, kind);
}

function wrongFormat(requested: FormatOption, detected: ScannerFormat, file: string, kind?: string): MindeyeError {
  return new MindeyeError('INGEST_INVALID', 'The file does not have the requested format.', {
    file, field: '--format', value: requested, expected: `${kind ?? 'a file'} of format "${detected}"`,
    fix: `use --format ${detected} or --format auto, or remove the file`,
  });
}

function findRec(parFile: string): string {
  return parFile.replace(/\.par$/i, (ext) => (ext === '.PAR' ? '.REC' : '.rec'));
}

/** Returns the last run of digits in a file name, such as 12 in `vol_0012.nii.gz`. */
export function numberInName(file: string): number | undefined {
  const m = /(\d+)(?!.*\d)/.exec(basename(file));
  return m === null ? undefined : Number(m[1]);
}

/**
 * Decodes a NIfTI file into its volumes. A 3D file is one volume whose index is the number in
 * its name minus `firstNumber`. The volumes of a 4D file count up from there.
 */
export function decodeNiftiVolumes(bytes: Uint8Array, file: string, firstNumber: number): VolumeFile[] {
  let raw = bytes;
  if (isGzip(bytes)) {
    try {
      raw = gunzipNifti(bytes, file);
    } catch (err) {
      // A file still being written ends early; it is retried until it stops changing.
      if (isMindeyeError(err) && err.code === 'NIFTI_TRUNCATED') {
        throw new IncompleteFileError(file, `gzip stream ended early (${String(err.details.value)})`);
      }
      throw err;
    }
  }
  if (raw.length < 352) throw new IncompleteFileError(file, `${raw.length} bytes, shorter than a NIfTI header`);

  const header = parseNiftiHeader(raw.subarray(0, Math.min(raw.length, 1024)), file);
  const voxels = header.shape[0] * header.shape[1] * header.shape[2];
  const volumeBytes = voxels * bytesPerVoxel(header);
  const need = header.voxOffset + volumeBytes * header.volumes;
  if (raw.length < need) throw new IncompleteFileError(file, `${raw.length} bytes, the header needs ${need}`);

  const number = numberInName(file);
  const base = header.volumes === 1 && number !== undefined ? number - firstNumber : 0;
  const out: VolumeFile[] = [];
  for (let v = 0; v < header.volumes; v++) {
    const start = header.voxOffset + v * volumeBytes;
    out.push({
      kind: 'volume',
      format: 'nifti',
      file,
      seriesNumber: 0,
      volIdx: base + v,
      shape: header.shape,
      affine: header.affine,
      voxelSizeMm: header.voxelSizeMm,
      data: decodeVoxels(header, raw.subarray(start, start + volumeBytes)),
      trSec: header.trSec,
    });
  }
  return out;
}

/** Reads the series number of a DICOM file from its header alone (for folder scans); undefined when it is not DICOM. */
export function peekSeries(bytes: Uint8Array, file: string): number | undefined {
  if (!hasDicomMagic(bytes)) return undefined;
  try {
    return seriesNumberOf(parseDicomFile(bytes, file));
  } catch (err) {
    if (err instanceof IncompleteFileError && err.partial !== undefined) return seriesNumberOf(err.partial);
    return undefined;
  }
}

/**
 * Series and volume index of a file that could not be decoded, from whatever header was read,
 * so that a corrupt volume can be reported by index. Undefined fields when unknown.
 */
export function identifyPartial(err: IncompleteFileError, file: string): { seriesNumber?: number; volIdx?: number } {
  const ds = err.partial;
  if (ds === undefined) return {};
  const seriesNumber = num(ds, tag(0x0020, 0x0011), 'IS');
  const acquisition = num(ds, tag(0x0020, 0x0012), 'IS');
  const instance = num(ds, tag(0x0020, 0x0013), 'IS');
  const perVolume = num(ds, tag(0x0020, 0x1002), 'IS');
  const mosaicOrMultiFrame = isMosaic(ds) || isMultiFrame(ds);
  let volIdx: number | undefined;
  if (mosaicOrMultiFrame && acquisition !== undefined && acquisition >= 1) volIdx = acquisition - 1;
  else if (!mosaicOrMultiFrame && instance !== undefined && perVolume !== undefined && perVolume >= 1) volIdx = Math.floor((instance - 1) / perVolume);
  else if (/_(\d{6})\.dcm$/i.test(file)) volIdx = Number(/_(\d{6})\.dcm$/i.exec(file)![1]) - 1;
  return { seriesNumber, volIdx };
}
