/**
 * Ingest benchmark for `mindeye-rt bench`: decodes the committed Siemens mosaic fixtures with our
 * decoder and with Debian's dcm2niix, one volume at a time, and returns per-volume times side by
 * side with their ratio.
 *
 * Per volume, ours: read the file, parse the DICOM and CSA headers, unpack the mosaic to float32
 * (`decodeMs`), plus writing an uncompressed NIfTI (`decodeAndWriteMs`, what dcm2niix also does).
 * dcm2niix: one process per volume (`-z n -b n` into a temporary folder); `wallMs` includes the
 * process start, `reportedMs` is its own "Conversion required" figure. Figures are medians over
 * `repeats` passes after one warm-up pass.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeScannerFile, type VolumeFile } from '../ingest/dicom/index.ts';
import { encodeNifti } from '../io/nifti.ts';

const FIXTURES = new URL('../../data/dicom/', import.meta.url).pathname;
const MOSAIC_DIRS = [
  'siemens-mosaic/ep2d_Asc_2', 'siemens-mosaic/ep2d_Int_HF_5', 'siemens-mosaic/cmrr_Asc_HF_7', 'siemens-mosaic/cmrr_Int_8',
  'rtcloud-sample', 'pyneal/Siemens_env/funcData',
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function mosaicFixtureFiles(): string[] {
  return MOSAIC_DIRS.flatMap((d) => readdirSync(join(FIXTURES, d)).filter((f) => f.endsWith('.dcm')).map((f) => join(FIXTURES, d, f)));
}

export async function benchIngest(repeats = 5): Promise<Record<string, unknown>> {
  const files = mosaicFixtureFiles();
  const work = mkdtempSync(join(tmpdir(), 'mindeye-bench-ingest-'));
  try {
    const decodeMs: number[] = [];
    const decodeAndWriteMs: number[] = [];
    for (let pass = 0; pass <= repeats; pass++) {
      for (const file of files) {
        const t0 = performance.now();
        const [volume] = decodeScannerFile(readFileSync(file), file, { format: 'siemens' }) as VolumeFile[];
        const t1 = performance.now();
        encodeNifti(volume.data, { shape: volume.shape, voxelSizeMm: volume.voxelSizeMm, affine: volume.affine, datatype: 'int16', trSec: volume.trSec });
        const t2 = performance.now();
        if (pass === 0) continue;
        decodeMs.push(t1 - t0);
        decodeAndWriteMs.push(t2 - t0);
      }
    }
    const ours = { decodeMs: round(median(decodeMs)), decodeAndWriteMs: round(median(decodeAndWriteMs)) };

    const version = spawnSync('dcm2niix', ['-v'], { encoding: 'utf8' });
    if (version.error !== undefined) {
      return { files: files.length, repeats, mindeyePerVolumeMs: ours, dcm2niix: 'not installed (apt-get install dcm2niix)' };
    }
    const wallMs: number[] = [];
    const reportedMs: number[] = [];
    files.forEach((file, i) => {
      const input = join(work, `in${i}`);
      mkdirSync(input);
      copyFileSync(file, join(input, 'volume.dcm'));
    });
    for (let pass = 0; pass <= repeats; pass++) {
      for (let i = 0; i < files.length; i++) {
        const output = join(work, `out${i}_${pass}`);
        mkdirSync(output);
        const t0 = performance.now();
        const result = spawnSync('dcm2niix', ['-z', 'n', '-b', 'n', '-f', 'v', '-o', output, join(work, `in${i}`)], { encoding: 'utf8' });
        const t1 = performance.now();
        if (result.status !== 0) throw new Error(`dcm2niix failed on ${files[i]}: ${result.stderr}`);
        if (pass === 0) continue;
        wallMs.push(t1 - t0);
        const m = /Conversion required ([\d.]+) seconds/.exec(result.stdout);
        if (m !== null) reportedMs.push(Number(m[1]) * 1000);
      }
    }
    const theirs = { wallMs: round(median(wallMs)), reportedMs: reportedMs.length > 0 ? round(median(reportedMs)) : undefined };
    return {
      files: files.length,
      repeats,
      volumeShapes: 'mosaics of 36 to 40 slices of 64 x 64 (18 and 27 for the real-time exports)',
      mindeyePerVolumeMs: ours,
      dcm2niixPerVolumeMs: theirs,
      dcm2niixVersion: /v[\d.]+/.exec(version.stdout)?.[0] ?? version.stdout.trim(),
      ratioDcm2niixWallToOurDecodeAndWrite: round(theirs.wallMs / ours.decodeAndWriteMs),
      ratioDcm2niixReportedToOurDecode: theirs.reportedMs === undefined ? undefined : round(theirs.reportedMs / ours.decodeMs),
      ratioDcm2niixReportedToOurDecodeAndWrite: theirs.reportedMs === undefined ? undefined : round(theirs.reportedMs / ours.decodeAndWriteMs),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
