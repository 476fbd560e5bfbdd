/** Flags and helpers shared by the live commands (watch, serve). */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
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

/** Returns sessions/<date-time>/, where live sessions record unless --record-to names a folder. */
export function defaultRecordDir(): string {
  const stamp = new Date().toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
  return join('sessions', stamp);
}

export function sessionToken(given: string | undefined): string {
  return given ?? randomBytes(16).toString('hex');
}
