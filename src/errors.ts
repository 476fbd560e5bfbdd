/**
 * The one error catalogue. Each error has a stable code (area plus problem) and a message that
 * names the file, the field, the value received, what was expected and what to do.
 */

export type ErrorCode =
  | 'NIFTI_TRUNCATED'
  | 'NIFTI_HEADER_INVALID'
  | 'NIFTI_DTYPE_UNSUPPORTED'
  | 'TSV_COLUMN_MISSING'
  | 'TSV_VALUE_INVALID'
  | 'DESIGN_ROWS_MISMATCH'
  | 'MASK_GRID_MISMATCH'
  | 'MASK_EMPTY'
  | 'VOLUME_GRID_MISMATCH'
  | 'MODEL_MANIFEST_INVALID'
  | 'MODEL_FILE_MISSING'
  | 'MODEL_SHAPE_MISMATCH'
  | 'MODEL_VOXELS_MISMATCH'
  | 'MODEL_DTYPE_UNSUPPORTED'
  | 'DEVICE_UNAVAILABLE'
  | 'HDF5_INVALID'
  | 'CLI_USAGE'
  | 'INGEST_INVALID'
  | 'INGEST_AUTH'
  | 'DICOM_INVALID'
  | 'FIT_INVALID'
  | 'CHECKPOINT_INVALID'
  | 'PYTHON_DEPENDENCY_MISSING'
  | 'RENDER_FAILED'
  | 'SIM_DATA_MISSING'
  | 'DEADLINE_MISSED'
  | 'RECORD_INVALID';

export interface ErrorDetails {
  file?: string;
  field?: string;
  value?: unknown;
  expected?: string;
  fix?: string;
}

export class MindeyeError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, summary: string, details: ErrorDetails = {}) {
    super(formatMessage(summary, details));
    this.name = 'MindeyeError';
    this.code = code;
    this.details = details;
  }
}

function formatValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.join(', ')}]`;
  return String(value);
}

function formatMessage(summary: string, d: ErrorDetails): string {
  const parts = [summary];
  if (d.file !== undefined) parts.push(`file: ${d.file}`);
  if (d.field !== undefined) parts.push(`field: ${d.field}`);
  if (d.value !== undefined) parts.push(`value: ${formatValue(d.value)}`);
  if (d.expected !== undefined) parts.push(`expected: ${d.expected}`);
  if (d.fix !== undefined) parts.push(`fix: ${d.fix}`);
  return parts.join('\n  ');
}

export function isMindeyeError(err: unknown): err is MindeyeError {
  return err instanceof MindeyeError;
}

/**
 * Renders a multi-line error message on one line for warnings, logs and the report's problem
 * list: `Summary. file: x; field: y; fix: z`. A one-line message is returned unchanged.
 */
export function oneLineMessage(message: string): string {
  const [summary = '', ...details] = message.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  if (details.length === 0) return summary;
  const sentence = /[.!?:]$/.test(summary) ? summary : `${summary}.`;
  return `${sentence} ${details.join('; ')}`;
}
