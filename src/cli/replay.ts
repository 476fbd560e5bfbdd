/** `mindeye-rt replay`: replay a recorded run as if live. */
import { MindeyeError } from '../errors.ts';
import { bidsSource } from '../ingest/bids.ts';
import { nsdSource } from '../ingest/nsd.ts';
import type { Source } from '../ingest/source.ts';
import { readRecord } from '../session/record.ts';
import { recordSource } from '../session/resume.ts';
import type { ProcessingOptions } from '../session/options.ts';
import { Subject } from 'rxjs';
import { resolve } from 'node:path';
import type { TrialSpec } from '../events.ts';
import { PROCESSING_FLAGS, PROCESSING_HELP, SESSION_FLAGS, SESSION_HELP, SPEED_FLAGS, SPEED_HELP, explicitProcessing, parseFlags, processingFromFlags, sessionFromFlags } from './flags.ts';
import { runLiveSession } from './live.ts';

export const help = `Usage: mindeye-rt replay (--demo | --nsd-root DIR --subject N --session S --run R
                         | --bids BOLD.nii.gz --events EVENTS.tsv | --record DIR) [options]

Replays a recorded run through the live pipeline, one volume per TR (or faster), and decodes
every trial. With the dashboard (default) it keeps serving after the run ends until Ctrl-C;
with --no-dashboard it exits when the run ends.

Sources:
  --demo                   the embedded simulated subject with the shipped demo model
  --nsd-root DIR           an NSD-layout dataset (with --subject, --session, --run; 1-based)
  --bids BOLD.nii.gz       a BIDS-style run, with --events EVENTS.tsv
  --record DIR             a session recorded with --record-to (or by watch and serve under
                           sessions/<date-time>/): its volumes, gaps and trials, including
                           trials announced live, in recorded order

A --record replay uses the recorded processing options and model unless flags override them,
so it reproduces the live session's betas. It also accepts --speed recorded: each volume
waits the gap between the recorded receive times (the scanner's timing, including any
downtime before a resume), instead of one TR.

${SPEED_HELP}

${PROCESSING_HELP}

${SESSION_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    ...PROCESSING_FLAGS, ...SESSION_FLAGS, ...SPEED_FLAGS,
    demo: { type: 'boolean', default: false },
    'nsd-root': { type: 'string' }, subject: { type: 'string', default: '1' }, session: { type: 'string' }, run: { type: 'string' },
    bids: { type: 'string' }, events: { type: 'string' },
    record: { type: 'string' },
  }, 'replay');
  const recordedTiming = values.speed === 'recorded';
  if (recordedTiming && values.record === undefined) {
    throw new MindeyeError('CLI_USAGE', '--speed recorded needs --record.', {
      field: '--speed', value: 'recorded', expected: 'realtime, max or a factor for this source', fix: 'use --speed realtime, or replay a session record with --record DIR',
    });
  }
  const processing = processingFromFlags(values);
  const session = sessionFromFlags(recordedTiming ? { ...values, speed: 'max' } : values);
  const chosen = ['demo', 'nsd-root', 'bids', 'record'].filter((k) => values[k] !== undefined && values[k] !== false);
  if (chosen.length !== 1) {
    throw new MindeyeError('CLI_USAGE', 'Choose exactly one source.', {
      field: 'source', value: chosen.length === 0 ? 'none' : chosen.map((c) => `--${c}`).join(' '),
      expected: 'one of --demo, --nsd-root, --bids, --record', fix: 'see mindeye-rt replay --help',
    });
  }

  if (values.demo) {
    const { prepareDemo } = await import('../demo/prepare.ts');
    const demo = await prepareDemo();
    const { source, stimuliFile } = demo;
    return runLiveSession({ source, processing, session: { ...session, modelDir: session.modelDir ?? demo.modelDir }, stimuliFile, keepServing: true, label: 'demo (simulated subject)' });
  }

  let source: Source;
  let stimuliFile: string | undefined;
  if (values['nsd-root'] !== undefined) {
    const n = (flag: string) => {
      const x = Number(values[flag]);
      if (!Number.isInteger(x) || x < 1) {
        throw new MindeyeError('CLI_USAGE', `Invalid or missing --${flag}.`, { field: `--${flag}`, value: values[flag], expected: 'a positive integer (1-based)', fix: `add --${flag} N` });
      }
      return x;
    };
    const ref = { root: String(values['nsd-root']), subject: n('subject'), session: n('session'), run: n('run') };
    const nsd = nsdSource(ref);
    source = nsd.source;
    stimuliFile = nsd.paths.stimuli;
    processing.maskFile ??= session.modelDir ? undefined : nsd.paths.roi;
  } else if (values.bids !== undefined) {
    if (values.events === undefined) {
      throw new MindeyeError('CLI_USAGE', '--bids needs --events.', { field: '--events', fix: 'add --events RUN_events.tsv' });
    }
    source = bidsSource({ bold: String(values.bids), events: String(values.events), labelColumn: values['label-column'] as string | undefined });
  } else {
    const record = readRecord(String(values.record));
    if (session.recordTo !== undefined && resolve(session.recordTo) === resolve(record.dir)) {
      throw new MindeyeError('CLI_USAGE', 'A replay cannot record into the record it replays.', {
        field: '--record-to', value: session.recordTo, fix: 'record the replay to another folder, or leave --record-to out',
      });
    }
    const announced = new Subject<TrialSpec>();
    const replayProcessing: ProcessingOptions = { ...(record.run.processing ?? processing), ...explicitProcessing(argv, processing) };
    const replaySession = { ...session, modelDir: session.modelDir ?? record.run.modelDir };
    return runLiveSession({
      source: recordSource(record, { timing: recordedTiming ? 'recorded' : 'pacer', announceTrial: (t) => announced.next(t) }),
      processing: replayProcessing, session: replaySession, keepServing: true, label: 'replay', announcedTrials$: announced,
      amendReport: recordedTiming ? (report) => { report.run.speed = 'recorded'; } : undefined,
    });
  }
  return runLiveSession({ source, processing, session, stimuliFile, keepServing: true, label: 'replay' });
}
