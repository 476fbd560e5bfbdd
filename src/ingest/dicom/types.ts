/** Decoded scanner files: whole volumes (mosaic, multi-frame, PAR/REC, NIfTI) or single slices (GE, classic Philips). */
import type { Shape3 } from '../../events.ts';
import type { PlaneGeometry, Vec3 } from './affine.ts';

/** Export layouts the decoders read; `siemens` is the classic mosaic, `siemens-xa` any enhanced multi-frame MR image. */
export type ScannerFormat = 'siemens' | 'siemens-xa' | 'ge' | 'philips' | 'nifti';
export type FormatOption = 'auto' | ScannerFormat;
export const FORMAT_OPTIONS: readonly FormatOption[] = ['auto', 'siemens', 'siemens-xa', 'ge', 'philips', 'nifti'];

export interface VolumeFile {
  kind: 'volume';
  format: ScannerFormat;
  file: string;
  seriesNumber: number;
  seriesDescription?: string;
  manufacturer?: string;
  /** 0-based acquisition index (AcquisitionNumber - 1 for DICOM). */
  volIdx: number;
  shape: Shape3;
  affine: Float64Array;
  voxelSizeMm: [number, number, number];
  /** NIfTI order, x fastest; scanner rescale applied. */
  data: Float32Array;
  /** Repetition time in seconds; 0 when the file does not record it. */
  trSec: number;
  /** Acquisition time of each NIfTI slice from the start of the volume, seconds. */
  sliceTimingSec?: number[];
}

export interface SliceFile {
  kind: 'slice';
  format: 'ge' | 'philips';
  file: string;
  seriesNumber: number;
  seriesDescription?: string;
  manufacturer?: string;
  volIdx: number;
  /** Slices a complete volume has (ImagesInAcquisition or the vendor's equivalent). */
  slicesPerVolume: number;
  geometry: PlaneGeometry;
  positionLps: Vec3;
  /** Rows x columns, DICOM order (top row first); rescale applied. */
  data: Float32Array;
  trSec: number;
  /** Slice acquisition time from the vendor timer, seconds; made relative to the volume when assembled. */
  sliceTimeSec?: number;
  sliceThicknessMm?: number;
}

export type DecodedFile = VolumeFile | SliceFile;
