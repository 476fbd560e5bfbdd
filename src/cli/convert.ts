/**
 * `mindeye-rt convert DIR --out FILE.nii.gz`: the folder watcher's decoders as a batch converter.
 * Writes one 4D NIfTI and a BIDS-style JSON sidecar (RepetitionTime, SliceTiming in seconds).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { MindeyeError } from '../errors.ts';
import { FORMAT_OPTIONS, type FormatOption, type VolumeFile } from '../ingest/dicom/index.ts';
import { listFiles, readSeries } from '../ingest/dicom/series.ts';
import { writeNifti, type NiftiWriteOptions } from '../io/nifti.ts';

export const help = `mindeye-rt convert DIR --out FILE.nii.gz [--format F] [--series N] [--tr-sec S]

Converts a folder of scanner files (Siemens mosaic or XA enhanced DICOM, GE per-slice DICOM,
Philips PAR/REC or DICOM, one NIfTI per volume) to one 4D NIfTI with a JSON sidecar
FILE.json holding RepetitionTime and SliceTiming in seconds, as dcm2niix writes them.
Files that cannot be read, duplicates and incomplete volumes are reported on stderr and skipped.

Options:
  --out FILE           output NIfTI path (.nii or .nii.gz; gzip when it ends in .gz). Required.
  --format F           auto (default), siemens, siemens-xa, ge, philips or nifti
  --series N           series number to convert; required when DIR holds more than one series
  --tr-sec S           repetition time in seconds, for files that do not record it
  --nifti-first-number N
                       number in a 3D NIfTI file name that is volume 0 (default 0)
  -h, --help           show this help
`;

export function parseFormat(value: string | undefined): FormatOption {
  const format = (value ?? 'auto') as FormatOption;
  if (!FORMAT_OPTIONS.includes(format)) {
    throw new MindeyeError('CLI_USAGE', 'Unknown --format.', { field: '--format', value, expected: FORMAT_OPTIONS.join(', ') });
  }
  return format;
}

export function parseNonNegativeInt(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new MindeyeError('CLI_USAGE', `Invalid ${flag}.`, { field: flag, value, expected: 'a non-negative integer' });
  }
  return n;
}

/** Picks the smallest NIfTI type that stores every value exactly, as dcm2niix picks int16 or uint16. */
export function storageType(volumes: VolumeFile[]): NiftiWriteOptions['datatype'] {
  let min = Infinity;
  let max = -Infinity;
  let integral = true;
  for (const v of volumes) {
    for (let i = 0; i < v.data.length; i++) {
      const x = v.data[i];
      if (x < min) min = x;
      if (x > max) max = x;
      if (integral && !Number.isInteger(x)) integral = false;
    }
  }
  if (!integral) return 'float32';
  if (min >= -32768 && max <= 32767) return 'int16';
  if (min >= 0 && max <= 65535) return 'uint16';
  return 'float32';
}

/**
 * Picks the slice timing most volumes share. The first volume can be off: GE's RTIA timer reads
 * 0 for several slices of the first volume in some real-time exports.
 */
export function commonSliceTiming(volumes: VolumeFile[]): number[] | undefined {
  const counts = new Map<string, { timing: number[]; count: number }>();
  for (const v of volumes) {
    if (v.sliceTimingSec === undefined) continue;
    const key = v.sliceTimingSec.map((t) => t.toFixed(4)).join(',');
    const entry = counts.get(key) ?? { timing: v.sliceTimingSec, count: 0 };
    entry.count++;
    counts.set(key, entry);
  }
  let best: { timing: number[]; count: number } | undefined;
  for (const entry of counts.values()) if (best === undefined || entry.count > best.count) best = entry;
  return best?.timing;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      format: { type: 'string' },
      series: { type: 'string' },
      'tr-sec': { type: 'string' },
      'nifti-first-number': { type: 'string' },
    },
  });
  if (positionals.length !== 1 || values.out === undefined) {
    throw new MindeyeError('CLI_USAGE', 'convert needs one input folder and --out.', {
      field: 'arguments', value: positionals, expected: 'DIR --out FILE.nii.gz', fix: 'see mindeye-rt convert --help',
    });
  }

  const trOverride = values['tr-sec'] === undefined ? undefined : Number(values['tr-sec']);
  if (trOverride !== undefined && !(trOverride > 0)) {
    throw new MindeyeError('CLI_USAGE', 'Invalid --tr-sec.', { field: '--tr-sec', value: values['tr-sec'], expected: 'a positive number of seconds' });
  }
  const series = readSeries(listFiles(positionals[0]), {
    format: parseFormat(values.format),
    series: parseNonNegativeInt('--series', values.series),
    niftiFirstNumber: parseNonNegativeInt('--nifti-first-number', values['nifti-first-number']),
  });

  for (const w of series.warnings) process.stderr.write(`mindeye-rt convert: warning (${w.kind}): ${w.message}\n`);
  if (series.missing.length > 0) {
    process.stderr.write(`mindeye-rt convert: warning (gap): volumes ${series.missing.join(', ')} are missing; the output skips them\n`);
  }

  const volumes = series.volumes;
  const first = volumes[0];
  const voxels = first.data.length;
  const all = new Float32Array(voxels * volumes.length);
  volumes.forEach((v, i) => all.set(v.data, i * voxels));
  const trSec = trOverride ?? first.trSec;
  const datatype = storageType(volumes);
  writeNifti(values.out, all, {
    shape: first.shape,
    volumes: volumes.length,
    voxelSizeMm: first.voxelSizeMm,
    trSec,
    affine: first.affine,
    datatype,
    description: `mindeye-rt convert ${first.format}`,
  });

  const sidecar: Record<string, unknown> = {
    Manufacturer: first.manufacturer,
    SeriesNumber: series.seriesNumber,
    SeriesDescription: first.seriesDescription,
    RepetitionTime: trSec > 0 ? trSec : undefined,
    SliceTiming: commonSliceTiming(volumes),
    SourceFormat: first.format,
    VolumeIndices: volumes.map((v) => v.volIdx),
    ConversionSoftware: 'mindeye-rt convert',
  };
  const jsonPath = values.out.replace(/\.nii(\.gz)?$/i, '') + '.json';
  writeFileSync(jsonPath, JSON.stringify(sidecar, null, 2) + '\n');
  process.stdout.write(
    `Wrote ${values.out}: ${first.shape.join(' x ')} x ${volumes.length} volumes, ${datatype}, series ${series.seriesNumber} (${first.format}), TR ${trSec > 0 ? `${trSec} s` : 'unknown'}\n` +
      `Wrote ${jsonPath}\n`,
  );
  return 0;
}
