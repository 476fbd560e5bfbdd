/**
 * Adds a trial design to a live source's run-info, for watch and serve sessions. `--events` is a
 * BIDS table with onsets in seconds from the first volume. `--design` is NSD's one integer per
 * TR, read once the TR is known.
 */
import { map } from 'rxjs';
import type { TrialSpec } from '../events.ts';
import { readBidsEvents, readNsdDesign } from '../io/tsv.ts';
import type { Source } from './source.ts';

export type DesignSpec = { kind: 'events'; file: string; labelColumn?: string } | { kind: 'design'; file: string };

export function withDesign(source: Source, design: DesignSpec | undefined): Source {
  if (!design) return source;
  const fromEvents = design.kind === 'events' ? readBidsEvents(design.file, { labelColumn: design.labelColumn }) : undefined;
  return (ctx) => source(ctx).pipe(
    map((e) => {
      if (e.type !== 'run-info') return e;
      let trials: TrialSpec[];
      if (fromEvents) trials = fromEvents;
      else {
        // A live run's volume count is unknown: accept the design's own row count (or one more).
        const rows = readNsdDesign(design.file, { trSec: e.trSec, volumeCount: e.expectedVolumes ?? Number.NaN, anyRowCount: true });
        trials = rows;
      }
      return { ...e, trials };
    }),
  );
}

/**
 * Marks a live source's runs as scanner data that still needs motion correction, so that
 * `--motion auto` turns it on for watch and serve sessions.
 */
export function asScannerInput(source: Source): Source {
  return (ctx) => source(ctx).pipe(map((e) => (e.type === 'run-info' ? { ...e, motionCorrection: true } : e)));
}
