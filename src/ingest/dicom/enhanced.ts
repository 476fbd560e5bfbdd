/**
 * Enhanced MR Image Storage (multi-frame DICOM), as Siemens XA and Philips write it. One file
 * contains frames with per-frame geometry, and frames are slices, never mosaic tiles, whatever
 * ImageType claims.
 *
 * Attributes are read from the frame's item in PerFrameFunctionalGroupsSequence (5200,9230) and
 * fall back to SharedFunctionalGroupsSequence (5200,9229). Frames are grouped into volumes by
 * TemporalPositionIndex (or FrameAcquisitionNumber), sorted by position along the slice normal,
 * and written with rows reversed (NIfTI y up), as dcm2niix does. Slice times come from
 * FrameAcquisitionDateTime relative to the earliest frame of the volume.
 */
import { MindeyeError } from '../../errors.ts';
import { copyFrameToSlice, dot, sliceNormal, stackAffine, type PlaneGeometry, type Vec3 } from './affine.ts';
import {
  type DataSet, firstItem, items, num, numbers, pixelFormat, readPixels, secondsOfDay, str, tag,
} from './dataset.ts';
import { acquisitionIndex } from './siemens-mosaic.ts';
import type { ScannerFormat, VolumeFile } from './types.ts';

const PER_FRAME = tag(0x5200, 0x9230);
const SHARED = tag(0x5200, 0x9229);

export const ENHANCED_MR_SOP_CLASSES = new Set(['1.2.840.10008.5.1.4.1.1.4.1', '1.2.840.10008.5.1.4.1.1.4.4']);

export function isMultiFrame(ds: DataSet): boolean {
  const sop = str(ds, tag(0x0008, 0x0016)) ?? '';
  return ENHANCED_MR_SOP_CLASSES.has(sop) || (num(ds, tag(0x0028, 0x0008), 'IS') ?? 1) > 1 || ds.elements[PER_FRAME] !== undefined;
}

interface Frame {
  index: number;
  positionLps: Vec3;
  temporalKey: number;
  timeSec?: number;
  slope: number;
  intercept: number;
}

/** Looks a functional group macro up for one frame: per-frame first, then shared. */
function group(perFrame: DataSet | undefined, shared: DataSet | undefined, sequence: string): DataSet | undefined {
  return (perFrame && firstItem(perFrame, sequence)) ?? (shared && firstItem(shared, sequence));
}

export function decodeEnhancedMr(ds: DataSet, file: string, format: ScannerFormat): VolumeFile[] {
  const pixels = pixelFormat(ds, file);
  const frameCount = num(ds, tag(0x0028, 0x0008), 'IS') ?? 1;
  const perFrame = items(ds, PER_FRAME);
  const shared = firstItem(ds, SHARED);
  if (perFrame.length !== frameCount) {
    throw new MindeyeError('DICOM_INVALID', 'The multi-frame DICOM has a different number of per-frame groups and frames.', {
      file, field: 'PerFrameFunctionalGroupsSequence (5200,9230)', value: `${perFrame.length} items`,
      expected: `NumberOfFrames = ${frameCount} items`, fix: 'export the series again',
    });
  }
  const orientation = numbers(group(perFrame[0], shared, tag(0x0020, 0x9116)) ?? ds, tag(0x0020, 0x0037));
  const measures = group(perFrame[0], shared, tag(0x0028, 0x9110));
  const spacing = measures === undefined ? [] : numbers(measures, tag(0x0028, 0x0030));
  if (orientation.length !== 6 || spacing.length !== 2) {
    throw new MindeyeError('DICOM_INVALID', 'The multi-frame DICOM lacks plane orientation or pixel spacing.', {
      file, field: 'PlaneOrientationSequence (0020,9116) / PixelMeasuresSequence (0028,9110)',
      value: `orientation ${orientation.length} values, spacing ${spacing.length} values`,
      expected: '6 and 2 values', fix: 'export the series again with full headers',
    });
  }
  const geom: PlaneGeometry = {
    rowCosines: [orientation[0], orientation[1], orientation[2]],
    columnCosines: [orientation[3], orientation[4], orientation[5]],
    pixelSpacingMm: [spacing[0], spacing[1]],
    rows: pixels.rows,
    columns: pixels.columns,
  };
  const normal = sliceNormal(geom);

  const frames: Frame[] = perFrame.map((item, index) => {
    const position = numbers(group(item, undefined, tag(0x0020, 0x9113)) ?? ds, tag(0x0020, 0x0032));
    if (position.length !== 3) {
      throw new MindeyeError('DICOM_INVALID', 'A frame has no ImagePositionPatient.', {
        file, field: `PlanePositionSequence (0020,9113) of frame ${index + 1}`, value: 'absent', fix: 'export the series again',
      });
    }
    const content = group(item, undefined, tag(0x0020, 0x9111));
    const dateTime = content === undefined ? undefined : str(content, tag(0x0018, 0x9074));
    const transform = group(item, shared, tag(0x0028, 0x9145));
    return {
      index,
      positionLps: [position[0], position[1], position[2]],
      temporalKey: (content && (num(content, tag(0x0020, 0x9128), 'UL') ?? num(content, tag(0x0020, 0x9156), 'US'))) ?? 0,
      timeSec: dateTime === undefined ? undefined : secondsOfDay(dateTime),
      slope: (transform && num(transform, tag(0x0028, 0x1053))) ?? num(ds, tag(0x0028, 0x1053)) ?? 1,
      intercept: (transform && num(transform, tag(0x0028, 0x1052))) ?? num(ds, tag(0x0028, 0x1052)) ?? 0,
    };
  });

  const stored = readPixels(ds, file, pixels, frameCount);
  const byTime = new Map<number, Frame[]>();
  for (const f of frames) byTime.set(f.temporalKey, [...(byTime.get(f.temporalKey) ?? []), f]);
  const temporalKeys = [...byTime.keys()].sort((a, b) => a - b);
  const baseIdx = temporalKeys.length === 1 ? acquisitionIndex(ds, file) : 0;
  const mr = firstItem(shared ?? ds, tag(0x0018, 0x9112));
  const trMs = (mr && num(mr, tag(0x0018, 0x0080))) ?? num(ds, tag(0x0018, 0x0080)) ?? 0;
  const frameSize = pixels.rows * pixels.columns;

  return temporalKeys.map((key, t) => {
    const volumeFrames = byTime.get(key)!.sort((a, b) => dot(a.positionLps, normal) - dot(b.positionLps, normal));
    const n = volumeFrames.length;
    const data = new Float32Array(frameSize * n);
    volumeFrames.forEach((f, slice) => {
      copyFrameToSlice(stored, f.index * frameSize, pixels.columns, pixels.rows, pixels.columns, data, slice);
      if (f.slope !== 1 || f.intercept !== 0) {
        const view = data.subarray(slice * frameSize, (slice + 1) * frameSize);
        for (let i = 0; i < view.length; i++) view[i] = view[i] * f.slope + f.intercept;
      }
    });
    const first = volumeFrames[0].positionLps;
    const last = volumeFrames[n - 1].positionLps;
    const measured = n > 1 ? Math.hypot(last[0] - first[0], last[1] - first[1], last[2] - first[2]) / (n - 1) : 0;
    const spacingMm = measured > 0 ? measured : (measures && (num(measures, tag(0x0018, 0x0088)) ?? num(measures, tag(0x0018, 0x0050)))) ?? 1;
    const step: Vec3 = [normal[0] * spacingMm, normal[1] * spacingMm, normal[2] * spacingMm];
    const times = volumeFrames.map((f) => f.timeSec);
    let sliceTimingSec: number[] | undefined;
    if (times.every((x) => x !== undefined)) {
      const t0 = Math.min(...(times as number[]));
      sliceTimingSec = (times as number[]).map((x) => Math.round((x - t0) * 1e6) / 1e6);
    }
    return {
      kind: 'volume' as const,
      format,
      file,
      seriesNumber: num(ds, tag(0x0020, 0x0011), 'IS') ?? 0,
      seriesDescription: str(ds, tag(0x0008, 0x103e)),
      manufacturer: str(ds, tag(0x0008, 0x0070)),
      volIdx: baseIdx + t,
      shape: [pixels.columns, pixels.rows, n],
      affine: stackAffine(geom, first, step),
      voxelSizeMm: [spacing[1], spacing[0], spacingMm],
      data,
      trSec: trMs / 1000,
      sliceTimingSec,
    };
  });
}
