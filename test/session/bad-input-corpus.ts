/**
 * The bad-input corpus (test/fixtures/bad-input/, README.md there): each case, the reader that
 * takes it and the outcome it must have. Shared by the library and command-line tests.
 */
import { join } from 'node:path';
import type { ErrorCode } from '../../src/errors.ts';
import { ROOT } from '../helpers/data.ts';

export const CORPUS = join(ROOT, 'test/fixtures/bad-input');

export type Reader = 'nifti' | 'dicom' | 'events' | 'model';

/** Rejected with this error; each pattern must match the message (file, field, value, fix). */
export interface Rejected {
  code: ErrorCode;
  field: string;
  patterns: RegExp[];
}

export interface CorpusCase {
  name: string;
  file: string;
  reader: Reader;
  /** Expected error, or undefined when the file must be read correctly. */
  rejected?: Rejected;
}

export const CASES: CorpusCase[] = [
  { name: 'NIfTI-1 volume (reference)', file: 'good-volume.nii', reader: 'nifti' },
  { name: 'NIfTI-2 header', file: 'nifti2.nii', reader: 'nifti' },
  { name: 'big-endian NIfTI', file: 'big-endian.nii', reader: 'nifti' },
  { name: 'scl_slope 0 means no scaling', file: 'scl-slope-zero.nii', reader: 'nifti' },
  { name: 'scl_slope and scl_inter applied', file: 'scl-slope-inter.nii', reader: 'nifti' },
  { name: 'NaN voxels kept for the pipeline to flag', file: 'nan-voxels.nii', reader: 'nifti' },
  {
    name: 'truncated gzip', file: 'truncated.nii.gz', reader: 'nifti',
    rejected: { code: 'NIFTI_TRUNCATED', field: 'gzip stream', patterns: [/ended early/, /0 complete volumes read/, /fix: .*copy it again/] },
  },
  {
    name: 'gzip stream larger than its header', file: 'gzip-bomb.nii.gz', reader: 'nifti',
    rejected: { code: 'NIFTI_HEADER_INVALID', field: 'gzip stream', patterns: [/contains more data than its header states/, /expected: 1952 bytes/] },
  },
  {
    name: 'wrong magic', file: 'wrong-magic.nii', reader: 'nifti',
    rejected: { code: 'NIFTI_HEADER_INVALID', field: 'magic', patterns: [/Not a NIfTI-1 or NIfTI-2 file/, /"n\+1", "ni1", "n\+2" or "ni2"/] },
  },
  {
    name: '5D image', file: 'five-d.nii', reader: 'nifti',
    rejected: { code: 'NIFTI_HEADER_INVALID', field: 'dim[5]', patterns: [/more than 4 dimensions/, /value: "2 \(dim = \[5, 40, 20, 1, 1, 2\]\)"/, /fix: split the components/] },
  },
  {
    name: 'zero-sized dimension', file: 'zero-dim.nii', reader: 'nifti',
    rejected: { code: 'NIFTI_HEADER_INVALID', field: 'dim[1]', patterns: [/zero or negative/, /value: 0/, /an integer >= 1/] },
  },
  {
    name: 'header claiming a 2 GB volume', file: 'huge-claim.nii', reader: 'nifti',
    rejected: {
      code: 'NIFTI_HEADER_INVALID', field: 'dim[1..3]',
      patterns: [/larger than the size limit/, /32767 x 16384 x 1 = 536854528 voxels \(2\.00 GiB as float32\)/, /at most 1\.00 GiB per volume/, /MINDEYE_MAX_VOLUME_BYTES/],
    },
  },
  {
    name: 'DICOM mosaic without CSA header', file: 'dicom-no-csa.dcm', reader: 'dicom',
    rejected: {
      code: 'DICOM_INVALID', field: 'NumberOfImagesInMosaic (CSA image header) and (0019,100A)',
      patterns: [/slice count is missing/, /value: "both absent"/, /fix: export the series with its private Siemens elements/],
    },
  },
  {
    name: 'DICOM claiming 61440 x 61440 pixels', file: 'dicom-huge-claim.dcm', reader: 'dicom',
    rejected: { code: 'DICOM_INVALID', field: 'Rows x Columns x NumberOfFrames', patterns: [/larger than the size limit/, /61440 x 61440 x 1 = 3774873600 voxels/] },
  },
  { name: 'events.tsv with BOM and CRLF', file: 'bom-crlf_events.tsv', reader: 'events' },
  {
    name: 'model normalization of the wrong shape', file: 'manifest-wrong-shape', reader: 'model',
    rejected: { code: 'MODEL_SHAPE_MISMATCH', field: 'normalization.mean', patterns: [/norm_mean\.f32/, /value: "529 float32 values"/, /expected: 530 \(voxels\.count\)/] },
  },
  {
    name: 'model file outside its directory', file: 'manifest-path-escape', reader: 'model',
    rejected: { code: 'MODEL_MANIFEST_INVALID', field: 'heads.classifier.file', patterns: [/manifest\.json/, /\.\.\/manifest-wrong-shape\/classifier\.onnx/, /a path inside the model directory/] },
  },
];
