/**
 * Single-slice DICOM (GE real-time `epiRT` exports, classic Philips): one file per slice, and a
 * volume is complete when all its slices have arrived.
 *
 * The volume a slice belongs to: GE numbers instances slice-fastest across the run, so
 * volume = floor((InstanceNumber - 1) / slices per volume), where slices per volume is
 * ImagesInAcquisition (0020,1002), else GE's LocationsInAcquisition (0021,xx4F). When
 * TemporalPositionIdentifier (0020,0100) is present it is used instead. Slices are ordered by
 * position along the slice normal, never by arrival or file name. Slice times come from GE's
 * RTIA timer (0021,xx5E, seconds since the run started).
 */
import { MindeyeError } from '../../errors.ts';
import { copyFrameToSlice, dot, sliceNormal, stackAffine, type Vec3 } from './affine.ts';
import { type DataSet, num, pixelFormat, privateTag, readPixels, requireNumber, requireNumbers, str, tag } from './dataset.ts';
import { planeGeometry } from './siemens-mosaic.ts';
import type { SliceFile, VolumeFile } from './types.ts';

export function decodeSingleSlice(ds: DataSet, file: string, format: 'ge' | 'philips'): SliceFile {
  const pixels = pixelFormat(ds, file);
  const geometry = planeGeometry(ds, file, pixels.rows, pixels.columns);
  const ipp = requireNumbers(ds, tag(0x0020, 0x0032), 'ImagePositionPatient', file, 3);
  const locationsKey = privateTag(ds, 0x0021, 'GEMS_RELA_01', 0x4f);
  const slicesPerVolume = num(ds, tag(0x0020, 0x1002), 'IS') ?? (locationsKey === undefined ? undefined : num(ds, locationsKey, 'SS'));
  if (slicesPerVolume === undefined || slicesPerVolume < 1) {
    throw new MindeyeError('DICOM_INVALID', 'The slice count per volume is missing.', {
      file, field: 'ImagesInAcquisition (0020,1002)', value: slicesPerVolume ?? 'absent',
      expected: 'a positive integer', fix: 'export the series with full headers',
    });
  }

  const temporal = num(ds, tag(0x0020, 0x0100), 'IS');
  const instance = requireNumber(ds, tag(0x0020, 0x0013), 'InstanceNumber', file, 'IS');
  const volIdx = temporal !== undefined && temporal >= 1 ? temporal - 1 : Math.floor((instance - 1) / slicesPerVolume);

  const data = readPixels(ds, file, pixels, 1);
  const slope = num(ds, tag(0x0028, 0x1053)) ?? 1;
  const intercept = num(ds, tag(0x0028, 0x1052)) ?? 0;
  if (slope !== 1 || intercept !== 0) for (let i = 0; i < data.length; i++) data[i] = data[i] * slope + intercept;
  const timerKey = privateTag(ds, 0x0021, 'GEMS_RELA_01', 0x5e);
  return {
    kind: 'slice',
    format,
    file,
    seriesNumber: num(ds, tag(0x0020, 0x0011), 'IS') ?? 0,
    seriesDescription: str(ds, tag(0x0008, 0x103e)),
    manufacturer: str(ds, tag(0x0008, 0x0070)),
    volIdx,
    slicesPerVolume,
    geometry,
    positionLps: [ipp[0], ipp[1], ipp[2]],
    data,
    trSec: (num(ds, tag(0x0018, 0x0080)) ?? 0) / 1000,
    sliceTimeSec: timerKey === undefined ? undefined : num(ds, timerKey),
    sliceThicknessMm: num(ds, tag(0x0018, 0x0088)) ?? num(ds, tag(0x0018, 0x0050)),
  };
}

/**
 * Stacks the slices of one volume. Throws when a slice is missing, repeated, or has another
 * matrix or orientation, because such a stack would give a wrong affine.
 */
export function assembleSlices(slices: SliceFile[]): VolumeFile {
  const head = slices[0];
  const { rows, columns } = head.geometry;
  const problem = (field: string, value: unknown, expected: string): MindeyeError =>
    new MindeyeError('DICOM_INVALID', 'The slices of a volume do not form one stack.', {
      file: head.file, field, value, expected: `${expected} (volume ${head.volIdx + 1}, series ${head.seriesNumber})`,
      fix: 'check that the folder holds one series with no stray files',
    });
  if (slices.length !== head.slicesPerVolume) throw problem('slice count', slices.length, `${head.slicesPerVolume} slices`);
  for (const s of slices) {
    if (s.geometry.rows !== rows || s.geometry.columns !== columns) throw problem('Rows x Columns', `${s.geometry.rows} x ${s.geometry.columns}`, `${rows} x ${columns}`);
    if (dot(s.geometry.rowCosines, head.geometry.rowCosines) < 0.999 || dot(s.geometry.columnCosines, head.geometry.columnCosines) < 0.999) {
      throw problem('ImageOrientationPatient', s.file, 'the same orientation for every slice');
    }
  }

  const normal = sliceNormal(head.geometry);
  const sorted = [...slices].sort((a, b) => dot(a.positionLps, normal) - dot(b.positionLps, normal));
  const n = sorted.length;
  const first = sorted[0].positionLps;
  const last = sorted[n - 1].positionLps;
  for (let i = 1; i < n; i++) {
    if (Math.abs(dot(sorted[i].positionLps, normal) - dot(sorted[i - 1].positionLps, normal)) < 1e-3) {
      throw problem('ImagePositionPatient', sorted[i].file, 'one slice per position');
    }
  }

  const spacingMm = n > 1 ? Math.hypot(last[0] - first[0], last[1] - first[1], last[2] - first[2]) / (n - 1) : head.sliceThicknessMm ?? 1;
  const step: Vec3 = n > 1 ? [(last[0] - first[0]) / (n - 1), (last[1] - first[1]) / (n - 1), (last[2] - first[2]) / (n - 1)] : [normal[0] * spacingMm, normal[1] * spacingMm, normal[2] * spacingMm];
  const data = new Float32Array(rows * columns * n);
  sorted.forEach((s, k) => copyFrameToSlice(s.data, 0, columns, rows, columns, data, k));

  const times = sorted.map((s) => s.sliceTimeSec);
  let sliceTimingSec: number[] | undefined;
  if (times.every((t) => t !== undefined)) {
    const t0 = Math.min(...(times as number[]));
    sliceTimingSec = (times as number[]).map((t) => Math.round((t - t0) * 1e6) / 1e6);
  }
  return {
    kind: 'volume',
    format: head.format,
    file: sorted[0].file,
    seriesNumber: head.seriesNumber,
    seriesDescription: head.seriesDescription,
    manufacturer: head.manufacturer,
    volIdx: head.volIdx,
    shape: [columns, rows, n],
    affine: stackAffine(head.geometry, first, step),
    voxelSizeMm: [head.geometry.pixelSpacingMm[1], head.geometry.pixelSpacingMm[0], spacingMm],
    data,
    trSec: head.trSec,
    sliceTimingSec,
  };
}
