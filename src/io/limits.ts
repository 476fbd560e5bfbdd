/**
 * Size limits checked before memory is allocated for input data.
 *
 * A header (NIfTI, DICOM, push message) states how large its volume is, and a reader that
 * trusted it would allocate that many bytes before reading any voxel. Every reader compares the
 * claimed size with `maxVolumeBytes()` first, and with the bytes actually present where the file
 * size is available, so a damaged or hostile header costs an error instead of gigabytes.
 *
 * The cap is per volume, in bytes of the decoded float32 voxels (4 bytes per voxel, whatever
 * the stored type). The default, 1 GiB, is 268 million voxels: about 12 times a 0.8 mm
 * whole-brain grid (260 x 311 x 260). The environment variable MINDEYE_MAX_VOLUME_BYTES changes it for
 * every command.
 */
import { MindeyeError, type ErrorCode } from '../errors.ts';

export const DEFAULT_MAX_VOLUME_BYTES = 1024 ** 3;
export const MAX_VOLUME_BYTES_ENV = 'MINDEYE_MAX_VOLUME_BYTES';

/** Returns the per-volume cap in bytes: MINDEYE_MAX_VOLUME_BYTES when set, else 1 GiB. */
export function maxVolumeBytes(): number {
  const text = process.env[MAX_VOLUME_BYTES_ENV];
  if (text === undefined || text === '') return DEFAULT_MAX_VOLUME_BYTES;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new MindeyeError('CLI_USAGE', 'Invalid volume size limit.', {
      field: MAX_VOLUME_BYTES_ENV, value: text, expected: 'a positive integer number of bytes',
      fix: `unset ${MAX_VOLUME_BYTES_ENV} (default ${DEFAULT_MAX_VOLUME_BYTES}) or set it to a byte count`,
    });
  }
  return value;
}

export interface VolumeSizeClaim {
  code: ErrorCode;
  file: string;
  /** Header field the size comes from, as a user would find it (e.g. "dim[1..3]"). */
  field: string;
  /** Voxels in one volume, as the header states. */
  voxels: number;
  /** Human-readable dimensions for the message, e.g. "32768 x 32768 x 1". */
  dimensions: string;
  /** Cap to check against; default `maxVolumeBytes()`. */
  limitBytes?: number;
}

/**
 * Throws when one volume of `claim.voxels` voxels would take more than the cap as float32.
 * Callers check this before they allocate the volume.
 */
export function checkVolumeSize(claim: VolumeSizeClaim): void {
  const limit = claim.limitBytes ?? maxVolumeBytes();
  const bytes = claim.voxels * 4;
  if (Number.isFinite(bytes) && bytes <= limit) return;
  throw new MindeyeError(claim.code, 'The header claims a volume larger than the size limit.', {
    file: claim.file, field: claim.field,
    value: `${claim.dimensions} = ${claim.voxels} voxels (${formatBytes(bytes)} as float32)`,
    expected: `at most ${formatBytes(limit)} per volume`,
    fix: `the header is probably damaged: export the file again; for a genuinely larger volume raise ${MAX_VOLUME_BYTES_ENV}`,
  });
}

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} bytes`;
}
