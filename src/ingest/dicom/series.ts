/**
 * Batch reading of a scanner export (a folder or a list of files) into one series of volumes in
 * acquisition order. `convert` and `push` use it, with the folder watcher's decoders. Every
 * problem becomes a warning, except that an input with no series to choose is an error.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MindeyeError, isMindeyeError } from '../../errors.ts';
import type { WarningKind } from '../../events.ts';
import { assembleSlices, decodeScannerFile, IncompleteFileError, isCompanionFile, type FormatOption, type SliceFile, type VolumeFile } from './index.ts';

export interface SeriesWarning {
  kind: WarningKind;
  file?: string;
  volIdx?: number;
  message: string;
}

export interface SeriesReadOptions {
  format: FormatOption;
  /** Series number to keep; without it the input must hold exactly one series. */
  series?: number;
  niftiFirstNumber?: number;
}

export interface Series {
  seriesNumber: number;
  volumes: VolumeFile[];
  warnings: SeriesWarning[];
  /** Indices between the first and last volume that no file provided. */
  missing: number[];
}

/**
 * Lists the files directly in `dir` (not in subfolders, as the scanner exports a series into one
 * folder; hidden files excluded), sorted by name.
 */
export function listFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new MindeyeError('INGEST_INVALID', 'The input folder cannot be read.', {
      file: dir, field: 'folder', value: (err as NodeJS.ErrnoException).code, fix: 'check the path and its permissions',
    });
  }
  return names
    .filter((name) => !name.startsWith('.'))
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile())
    .sort();
}

/** Orders volumes of one series: sorts by index, drops duplicates and volumes with fewer slices than the first. */
export function orderVolumes(volumes: VolumeFile[], warnings: SeriesWarning[]): VolumeFile[] {
  const sorted = [...volumes].sort((a, b) => a.volIdx - b.volIdx || a.file.localeCompare(b.file));
  const out: VolumeFile[] = [];
  for (const v of sorted) {
    const previous = out[out.length - 1];
    if (previous !== undefined && previous.volIdx === v.volIdx) {
      warnings.push({ kind: 'duplicate', file: v.file, volIdx: v.volIdx, message: `volume ${v.volIdx} appears again in ${v.file} (first in ${previous.file}); the repeat is dropped` });
      continue;
    }
    out.push(v);
  }
  const reference = out[0];
  return out.filter((v) => {
    if (reference === undefined || v === reference) return true;
    if (v.shape[0] !== reference.shape[0] || v.shape[1] !== reference.shape[1]) {
      throw new MindeyeError('INGEST_INVALID', 'Volumes of one series have different matrices.', {
        file: v.file, field: 'shape', value: v.shape, expected: `${reference.shape.join(' x ')} like ${reference.file}`,
        fix: 'select one series with --series',
      });
    }
    if (v.shape[2] !== reference.shape[2]) {
      warnings.push({ kind: 'incomplete', file: v.file, volIdx: v.volIdx, message: `volume ${v.volIdx} has ${v.shape[2]} slices, the series has ${reference.shape[2]}; it is incomplete and dropped` });
      return false;
    }
    return true;
  });
}

/** Decodes files into one series (see SeriesReadOptions.series for which one). */
export function readSeries(files: string[], opts: SeriesReadOptions): Series {
  const warnings: SeriesWarning[] = [];
  const volumes: VolumeFile[] = [];
  const slices: SliceFile[] = [];
  for (const file of files) {
    if (isCompanionFile(file)) continue;
    try {
      for (const d of decodeScannerFile(readFileSync(file), file, opts)) (d.kind === 'volume' ? volumes : slices).push(d as never);
    } catch (err) {
      if (!isMindeyeError(err)) throw err;
      const kind: WarningKind = err instanceof IncompleteFileError ? 'corrupt' : 'invalid';
      warnings.push({ kind, file, message: `${file} skipped: ${err.message.split('\n')[0]}` });
    }
  }

  const seriesFound = [...new Set([...volumes, ...slices].map((d) => d.seriesNumber))].sort((a, b) => a - b);
  if (seriesFound.length === 0) {
    throw new MindeyeError('INGEST_INVALID', 'No readable volume was found.', {
      file: files.length === 1 ? files[0] : `${files.length} files`, field: 'files', value: warnings.length > 0 ? warnings[0].message : 'none',
      fix: 'point at a folder of DICOM, PAR/REC or NIfTI volumes, or set --format',
    });
  }
  let seriesNumber = opts.series;
  if (seriesNumber === undefined) {
    if (seriesFound.length > 1) {
      throw new MindeyeError('CLI_USAGE', 'The input contains more than one series.', {
        field: '--series', value: seriesFound, expected: 'one series number', fix: `add --series N with N one of ${seriesFound.join(', ')}`,
      });
    }
    seriesNumber = seriesFound[0];
  } else if (!seriesFound.includes(seriesNumber)) {
    throw new MindeyeError('CLI_USAGE', 'The requested series is not in the input.', {
      field: '--series', value: seriesNumber, expected: `one of ${seriesFound.join(', ')}`, fix: 'choose a series number that the files hold',
    });
  }

  for (const other of seriesFound.filter((s) => s !== seriesNumber)) {
    warnings.push({ kind: 'other', message: `series ${other} ignored (selected series ${seriesNumber})` });
  }

  const keep = volumes.filter((v) => v.seriesNumber === seriesNumber);
  const bySlice = new Map<number, SliceFile[]>();
  for (const s of slices.filter((x) => x.seriesNumber === seriesNumber)) bySlice.set(s.volIdx, [...(bySlice.get(s.volIdx) ?? []), s]);
  for (const [volIdx, group] of bySlice) {
    const unique = new Map(group.map((s) => [s.positionLps.map((x) => x.toFixed(3)).join(','), s]));
    if (unique.size < group.length) warnings.push({ kind: 'duplicate', volIdx, message: `volume ${volIdx} has ${group.length - unique.size} repeated slice file(s); repeats dropped` });
    if (unique.size < group[0].slicesPerVolume) {
      warnings.push({ kind: 'incomplete', volIdx, message: `volume ${volIdx} has ${unique.size} of ${group[0].slicesPerVolume} slices; it is incomplete and dropped` });
      continue;
    }
    keep.push(assembleSlices([...unique.values()]));
  }

  const ordered = orderVolumes(keep, warnings);
  const missing: number[] = [];
  for (let i = 1; i < ordered.length; i++) for (let k = ordered[i - 1].volIdx + 1; k < ordered[i].volIdx; k++) missing.push(k);
  return { seriesNumber, volumes: ordered, warnings, missing };
}
