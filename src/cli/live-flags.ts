/** Flags and helpers shared by the live commands (watch, serve). */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { logger } from '../log.ts';
import type { DriftModel } from '../preprocess/glm.ts';
import type { RecordContents } from '../session/record.ts';
import type { ProcessingOptions } from '../session/options.ts';
import { PROCESSING_FLAG_KEYS, explicitProcessing } from './flags.ts';
import type { DesignSpec } from '../ingest/with-design.ts';

export const DESIGN_FLAGS = {
  events: { type: 'string' },
  design: { type: 'string' },
  'expected-volumes': { type: 'string' },
} as const;

export const DESIGN_HELP = `Trial timing (live sessions):
  --events EVENTS.tsv      BIDS events (onset and duration in seconds from the first volume)
  --design DESIGN.tsv      NSD design (one integer per TR: image id at the onset TR, else 0)
  --expected-volumes N     end the run after N volumes (default: run until Ctrl-C)
  Without either, trials come from stimulus onsets sent on the feedback input channel.`;

export function designFromFlags(v: Record<string, unknown>): DesignSpec | undefined {
  if (v.events !== undefined && v.design !== undefined) {
    throw new MindeyeError('CLI_USAGE', 'Give --events or --design, not both.', { field: '--events/--design', fix: 'keep one of them' });
  }
  if (v.events !== undefined) return { kind: 'events', file: String(v.events), labelColumn: v['label-column'] as string | undefined };
  if (v.design !== undefined) return { kind: 'design', file: String(v.design) };
  return undefined;
}

export function expectedVolumesFromFlags(v: Record<string, unknown>): number | undefined {
  if (v['expected-volumes'] === undefined) return undefined;
  const n = Number(v['expected-volumes']);
  if (!Number.isInteger(n) || n <= 0) {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --expected-volumes.', { field: '--expected-volumes', value: v['expected-volumes'], expected: 'a positive integer', fix: 'e.g. --expected-volumes 226' });
  }
  return n;
}

/**
 * Returns sessions/<date-time>/ (UTC, to the millisecond), where live sessions record unless
 * --record-to names a folder. A name that exists already gets a suffix -2, -3, ... Two processes
 * that pick the same name in the same millisecond are kept apart by the record's lock.
 */
export function defaultRecordDir(now = new Date(), root = 'sessions'): string {
  const stamp = now.toISOString().replace(/[:]/g, '-').replace(/Z$/, '');
  let dir = join(root, stamp);
  for (let suffix = 2; existsSync(dir); suffix++) dir = join(root, `${stamp}-${suffix}`);
  return dir;
}

/**
 * Returns the processing options and model of a resumed session: the record's, as
 * `replay --record` uses them, so that the betas before and after the restart are computed
 * the same way. Each processing flag given on the command line with another value, and a
 * --model other than the recorded one, gets a warning line on stderr; the recorded value is kept.
 */
export function resumedProcessing(
  record: RecordContents, argv: string[], given: ProcessingOptions, modelDir: string | undefined, label: string,
): { processing: ProcessingOptions; modelDir: string | undefined } {
  const recorded = record.run.processing;
  if (!recorded) return { processing: given, modelDir: modelDir ?? record.run.modelDir };
  const explicit = explicitProcessing(argv, given);
  const warn = (flag: string, recordedValue: string, givenValue: string) => {
    logger.warn({ flag, recorded: recordedValue, given: givenValue, record: record.dir }, 'resume keeps the recorded value of a flag');
    process.stderr.write(`${label}: warning: ${flag} ${givenValue} differs from the recorded ${recordedValue} in ${record.dir}. ` +
      'The session resumes with the recorded value (record to a new folder to change it).\n');
  };
  for (const [flag, key] of PROCESSING_FLAG_KEYS) {
    if (!(key in explicit)) continue;
    const givenValue = comparableOption(key, explicit[key]);
    const recordedValue = comparableOption(key, recorded[key]);
    if (givenValue !== recordedValue) warn(`--${flag}`, recordedValue, givenValue);
  }
  // A record made without --model keeps decoding without one.
  if (modelDir !== undefined && resolve(modelDir) !== record.run.modelDir) warn('--model', record.run.modelDir ?? 'none', resolve(modelDir));
  return { processing: recorded, modelDir: record.run.modelDir };
}

/** Formats an option value as its flag is written: paths resolved, drift models as polyN / dctS. */
function comparableOption(key: keyof ProcessingOptions, value: unknown): string {
  if (value === undefined) return 'unset';
  if ((key === 'maskFile' || key === 'motionReference') && typeof value === 'string') return resolve(value);
  if (key === 'drift') {
    const drift = value as DriftModel;
    return drift.kind === 'poly' ? `poly${drift.order}` : `dct${drift.cutoffSec}`;
  }
  return String(value);
}

export function sessionToken(given: string | undefined): string {
  return given ?? randomBytes(16).toString('hex');
}
