/**
 * Trial designs from tabular files.
 *
 * - BIDS events (`*_events.tsv`): a header row with at least `onset` and `duration` (seconds)
 *   and a label column (`trial_type` by default, or `--label-column`). A UTF-8 byte-order mark,
 *   CRLF line ends and `n/a` cells are handled as the BIDS specification requires. Rows whose
 *   label is `n/a` are not trials.
 * - NSD design (`design_sessionNN_runCC.tsv`): no header, one integer per TR, the 73k image id
 *   (1-based) at the trial's onset TR and 0 elsewhere. NSD's files appear to have 225 rows for
 *   226 volumes (75 slots x 3 TRs; the trailing volume has no row), so a file with one row fewer
 *   than the run's volume count is accepted.
 */
import { readFileSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';
import type { TrialSpec } from '../events.ts';

function splitLines(text: string): string[] {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return body.split(/\r?\n/).filter((line) => line.trim().length > 0);
}

export interface EventsOptions {
  labelColumn?: string;
}

export function readBidsEvents(file: string, opts: EventsOptions = {}): TrialSpec[] {
  const lines = splitLines(readFileSync(file, 'utf8'));
  if (lines.length === 0) {
    throw new MindeyeError('TSV_VALUE_INVALID', 'The events file is empty.', {
      file, field: 'header', fix: 'write a header row with onset, duration and trial_type, then one row per event',
    });
  }
  const header = lines[0].split('\t').map((h) => h.trim());
  const labelColumn = opts.labelColumn ?? (header.includes('trial_type') ? 'trial_type' : header.includes('stim_file') ? 'stim_file' : 'trial_type');
  const required = ['onset', 'duration', labelColumn];
  for (const column of required) {
    if (!header.includes(column)) {
      throw new MindeyeError('TSV_COLUMN_MISSING', 'A required column is missing from the events file.', {
        file, field: column, value: header.join(', '), expected: `columns ${required.join(', ')}`,
        fix: column === labelColumn
          ? `add a "${column}" column or name the label column with --label-column`
          : `add an "${column}" column in seconds, as BIDS requires`,
      });
    }
  }
  const col = (name: string) => header.indexOf(name);
  const trials: TrialSpec[] = [];
  for (let r = 1; r < lines.length; r++) {
    const cells = lines[r].split('\t').map((c) => c.trim());
    const label = cells[col(labelColumn)] ?? 'n/a';
    if (label === 'n/a' || label === '') continue;
    const onsetSec = Number(cells[col('onset')]);
    const durationText = cells[col('duration')];
    const durationSec = durationText === 'n/a' ? 0 : Number(durationText);
    if (!Number.isFinite(onsetSec) || !Number.isFinite(durationSec) || durationSec < 0) {
      throw new MindeyeError('TSV_VALUE_INVALID', 'Invalid onset or duration in the events file.', {
        file, field: `row ${r + 1}`, value: `onset=${cells[col('onset')]}, duration=${durationText}`,
        expected: 'numbers in seconds (duration >= 0 or n/a)', fix: 'correct the row',
      });
    }
    trials.push({ trialId: trials.length, onsetSec, durationSec, stimulusId: label });
  }
  trials.sort((a, b) => a.onsetSec - b.onsetSec);
  trials.forEach((t, i) => (t.trialId = i));
  return trials;
}

export interface NsdDesignOptions {
  trSec: number;
  volumeCount: number;
  /** Stimulus duration in seconds (NSD: 3 s on, 1 s off). */
  durationSec?: number;
  /** Accept any row count (live sessions, whose volume count is not known in advance). */
  anyRowCount?: boolean;
}

export function readNsdDesign(file: string, opts: NsdDesignOptions): TrialSpec[] {
  const lines = splitLines(readFileSync(file, 'utf8'));
  const rows = lines.length;
  if (!opts.anyRowCount && rows !== opts.volumeCount && rows !== opts.volumeCount - 1) {
    throw new MindeyeError('DESIGN_ROWS_MISMATCH', 'The design file does not match the run\'s volume count.', {
      file, field: 'row count', value: rows,
      expected: `${opts.volumeCount} (one per volume) or ${opts.volumeCount - 1} (NSD's design files omit the trailing volume)`,
      fix: 'check that the design file belongs to this run (session and run numbers)',
    });
  }
  const trials: TrialSpec[] = [];
  for (let r = 0; r < rows; r++) {
    const text = lines[r].trim();
    const id = Number(text);
    if (!Number.isInteger(id) || id < 0) {
      throw new MindeyeError('TSV_VALUE_INVALID', 'Invalid value in the NSD design file.', {
        file, field: `row ${r + 1}`, value: text, expected: 'a non-negative integer (73k image id, or 0)', fix: 'correct the row',
      });
    }
    if (id > 0) {
      trials.push({ trialId: trials.length, onsetSec: r * opts.trSec, durationSec: opts.durationSec ?? 3, stimulusId: String(id) });
    }
  }
  return trials;
}
