/**
 * BIDS-style run replay: `*_bold.nii.gz` plus `*_events.tsv` (onset, duration and a label
 * column). BIDS derivatives are assumed already motion-corrected, so `--motion auto` leaves
 * motion correction off for them.
 */
import { existsSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';
import { readBidsEvents } from '../io/tsv.ts';
import { niftiReplaySource } from './replay.ts';
import type { Source } from './source.ts';

export interface BidsRunRef {
  bold: string;
  events: string;
  labelColumn?: string;
}

export function bidsSource(ref: BidsRunRef, opts: { onFirstVolume?(bytes: number): void } = {}): Source {
  for (const [flag, file] of [['--bids', ref.bold], ['--events', ref.events]] as const) {
    if (!existsSync(file)) {
      throw new MindeyeError('CLI_USAGE', 'Input file not found.', { file, field: flag, fix: `check the path given to ${flag}` });
    }
  }
  const trials = readBidsEvents(ref.events, { labelColumn: ref.labelColumn });
  return niftiReplaySource({
    file: ref.bold,
    trials,
    description: `BIDS run ${ref.bold} with ${ref.events}`,
    needsMotionCorrection: false,
    onFirstVolume: opts.onFirstVolume,
  });
}
