/**
 * Sources built from a session record (src/session/record.ts):
 * - `recordSource`: `replay --record DIR` re-plays the recorded volumes, gaps and live-announced
 *   trials in their recorded order, paced by the replay speed or by the recorded receive times.
 * - `resumeSource`: a live session restarted on its record first re-runs the recorded volumes
 *   (no pacing), then continues with the live source, dropping what the record already has.
 *
 *   record:  run-info v0 v1 v2 (trial 3 announced) v3 ─ warning(resumed) ─▶ live: v4 v5 ...
 */
import { join } from 'node:path';
import { Observable, type Subscriber } from 'rxjs';
import { MindeyeError } from '../errors.ts';
import { nowMs, type TrialSpec } from '../events.ts';
import { readNifti } from '../io/nifti.ts';
import { logger } from '../log.ts';
import type { Source, SourceContext, SourceEvent } from '../ingest/source.ts';
import type { RecordContents, RecordedVolume } from './record.ts';

/** One step of a recorded session, in recorded order. */
type Step =
  | { kind: 'volume'; volIdx: number; file: string; line?: RecordedVolume }
  | { kind: 'gap'; volIdx: number; reason: string }
  | { kind: 'trial'; trial: TrialSpec };

/** Orders the record's volumes, gaps and announced trials as they were received. */
export function recordedSteps(record: RecordContents): Step[] {
  const files = new Map(record.volumes.map((v) => [v.volIdx, v]));
  const steps: Step[] = [];
  const placed = new Set<number>();
  for (const e of record.events) {
    if (e.type === 'volume') {
      const v = files.get(Number(e.volIdx));
      if (v === undefined || placed.has(v.volIdx)) continue;
      placed.add(v.volIdx);
      steps.push({ kind: 'volume', volIdx: v.volIdx, file: v.file, line: v.line });
    } else if (e.type === 'gap') {
      steps.push({ kind: 'gap', volIdx: Number(e.volIdx), reason: String(e.reason ?? 'recorded gap') });
    } else if (e.type === 'trial-added' && e.trial) {
      steps.push({ kind: 'trial', trial: e.trial as TrialSpec });
    }
  }
  // A volume file without its line (killed between the rename and the line) goes last, in index order.
  for (const v of record.volumes) {
    if (!placed.has(v.volIdx)) steps.push({ kind: 'volume', volIdx: v.volIdx, file: v.file });
  }
  return steps;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface RecordSourceOptions {
  /**
   * `pacer`: one volume per TR at the session's --speed. `recorded`: the recorded gaps between
   * receive times (a volume without a receive time waits one TR).
   */
  timing: 'pacer' | 'recorded';
  /** Called with each trial that was announced live, at its recorded place among the volumes. */
  announceTrial?(trial: TrialSpec): void;
  /** Called with each volume index as it is emitted (tests check the order). */
  onVolume?(volIdx: number): void;
}

/** Emits the record's steps and returns false when unsubscribed midway. */
async function emitSteps(
  record: RecordContents, steps: Step[], ctx: SourceContext, out: Subscriber<SourceEvent>, opts: RecordSourceOptions & { paced: boolean },
  isStopped: () => boolean,
): Promise<boolean> {
  let lastEpochMs: number | undefined;
  let emittedVolume = false;
  for (const step of steps) {
    if (isStopped()) return false;
    if (step.kind === 'trial') {
      opts.announceTrial?.(step.trial);
      continue;
    }
    if (step.kind === 'gap') {
      out.next({ type: 'gap', runId: ctx.runId, volIdx: step.volIdx, reason: `recorded: ${step.reason}` });
      continue;
    }
    if (!opts.paced) {
      // Yield between re-run volumes so that timers and sockets are served during a long rebuild.
      await new Promise((resolve) => setImmediate(resolve));
    } else {
      if (opts.timing === 'recorded') {
        const epochMs = step.line?.receivedAtEpochMs;
        let waitMs = 0;
        if (emittedVolume) waitMs = epochMs !== undefined && lastEpochMs !== undefined ? epochMs - lastEpochMs : record.info.trSec * 1000;
        lastEpochMs = epochMs;
        if (waitMs > 0) await sleep(waitMs);
        // The pacer still applies a pause from the dashboard.
        await ctx.pacing.waitTurn(step.volIdx, 0);
      } else {
        await ctx.pacing.waitTurn(step.volIdx, record.info.trSec);
      }
      if (isStopped()) return false;
    }
    emittedVolume = true;
    const file = join(record.dir, step.file);
    const img = readNifti(file);
    opts.onVolume?.(step.volIdx);
    out.next({
      type: 'volume', runId: ctx.runId, volIdx: step.volIdx, acqTimeSec: step.line?.acqTimeSec ?? step.volIdx * record.info.trSec,
      receivedAtMs: nowMs(), shape: img.header.shape, affine: img.header.affine, data: img.data, sourceId: file,
    });
  }
  return true;
}

/** Re-plays a record: its run-info (trials, TR, motion decision), volumes, gaps and announced trials. */
export function recordSource(record: RecordContents, opts: RecordSourceOptions): Source {
  const steps = recordedSteps(record);
  return (ctx) => new Observable<SourceEvent>((subscriber) => {
    let stopped = false;
    (async () => {
      subscriber.next({ ...record.info, runId: ctx.runId, source: `record ${record.dir} (${record.info.source})` });
      for (const problem of record.problems) subscriber.next({ type: 'warning', runId: ctx.runId, kind: 'other', message: problem });
      if (await emitSteps(record, steps, ctx, subscriber, { ...opts, paced: true }, () => stopped)) subscriber.complete();
    })().catch((err) => subscriber.error(err));
    return () => { stopped = true; };
  });
}

/** The resume section of the report. */
export interface ResumeInfo {
  record: string;
  /** When this process started resuming, ms since the epoch. */
  resumedAtEpochMs: number;
  /** Time from the record's last write to the resume, seconds (undefined for records without times). */
  downtimeSec?: number;
  /** Volumes re-run from the record (received before the restart). */
  volumesFromRecord: number;
  /** Index range of those volumes, [first, last]. */
  recordVolumeRange?: [number, number];
  /** First volume taken from the live input after the restart. */
  firstLiveVolIdx?: number;
  /** Indices after the record that became gaps before the first live volume. */
  volumesMissed: number[];
  /** Live volumes dropped because the record already had them (files still in the watched folder, a sender resending). */
  liveDuplicatesDropped: number;
  /** Earlier restarts of the same record. */
  earlierResumes: number;
  /** Problems found in the record (partial lines, repairs). */
  problems: string[];
}

export interface ResumeOptions {
  announceTrial?(trial: TrialSpec): void;
  /** Repairs the recorder made when it opened the record. */
  repairs?: string[];
}

const GRID_TOLERANCE_MM = 1e-3;

/**
 * Resumes a live session on its record: re-runs the recorded steps without pacing, emits a
 * `warning` that reports the downtime, then passes the live source on. The live source's
 * run-info must have the record's grid. Live volumes and gaps at indices the record already
 * covers are dropped and counted. `info` is filled in as the run goes (the report's resume section).
 */
export function resumeSource(record: RecordContents, live: Source, opts: ResumeOptions = {}): { source: Source; info: ResumeInfo } {
  const steps = recordedSteps(record);
  const recordedThrough = Math.max(-1, ...record.volumes.map((v) => v.volIdx), ...record.gaps);
  const earlierResumes = record.events.filter((e) => e.type === 'record-start' && e.resumed === true).length;
  const info: ResumeInfo = {
    record: record.dir, resumedAtEpochMs: Date.now(), volumesFromRecord: record.volumes.length,
    recordVolumeRange: record.volumes.length > 0 ? [record.volumes[0].volIdx, record.volumes[record.volumes.length - 1].volIdx] : undefined,
    volumesMissed: [], liveDuplicatesDropped: 0, earlierResumes, problems: [...(opts.repairs ?? []), ...record.problems],
  };
  const log = logger.child({ stage: 'resume', record: record.dir });
  const source: Source = (ctx) => new Observable<SourceEvent>((subscriber) => {
    let stopped = false;
    let liveSubscription: { unsubscribe(): void } | undefined;
    (async () => {
      info.resumedAtEpochMs = Date.now();
      if (record.lastWrittenEpochMs !== undefined) info.downtimeSec = (info.resumedAtEpochMs - record.lastWrittenEpochMs) / 1000;
      subscriber.next({ ...record.info, runId: ctx.runId });
      const startMs = nowMs();
      if (!(await emitSteps(record, steps, ctx, subscriber, { timing: 'pacer', announceTrial: opts.announceTrial, paced: false }, () => stopped))) return;
      const downtime = info.downtimeSec !== undefined ? `${info.downtimeSec.toFixed(1)} s` : 'an unknown time';
      const range = info.recordVolumeRange ? `volumes ${info.recordVolumeRange[0]}-${info.recordVolumeRange[1]}` : 'no volumes';
      const message = `session resumed after ${downtime} down: ${range} (${info.volumesFromRecord}) re-run from the record ${record.dir}. Live input continues at volume ${recordedThrough + 1}`;
      log.warn({ downtimeSec: info.downtimeSec, volumesFromRecord: info.volumesFromRecord, rebuildMs: Math.round(nowMs() - startMs) }, message);
      subscriber.next({ type: 'warning', runId: ctx.runId, kind: 'other', code: 'SESSION_RESUMED', message });
      for (const problem of info.problems) subscriber.next({ type: 'warning', runId: ctx.runId, kind: 'other', code: 'RECORD_REPAIRED', message: problem });

      liveSubscription = live(ctx).subscribe({
        next: (e) => {
          if (e.type === 'run-info') {
            try {
              checkSameGrid(record, e);
            } catch (err) {
              subscriber.error(err);
              liveSubscription?.unsubscribe();
            }
            return;
          }
          if ((e.type === 'volume' || e.type === 'gap') && e.volIdx <= recordedThrough) {
            if (e.type === 'volume') info.liveDuplicatesDropped++;
            return;
          }
          if (e.type === 'warning' && e.kind === 'duplicate' && e.volIdx !== undefined && e.volIdx <= recordedThrough) return;
          if (e.type === 'gap' && info.firstLiveVolIdx === undefined) info.volumesMissed.push(e.volIdx);
          if (e.type === 'volume' && info.firstLiveVolIdx === undefined) {
            info.firstLiveVolIdx = e.volIdx;
            log.info({ volIdx: e.volIdx, volumesMissed: info.volumesMissed, liveDuplicatesDropped: info.liveDuplicatesDropped }, 'first live volume after the resume');
          }
          subscriber.next(e);
        },
        error: (err) => subscriber.error(err),
        complete: () => subscriber.complete(),
      });
    })().catch((err) => subscriber.error(err));
    return () => {
      stopped = true;
      liveSubscription?.unsubscribe();
    };
  });
  return { source, info };
}

/** Throws when the live input after a restart is on another grid than the record (another series or scanner setup). */
function checkSameGrid(record: RecordContents, live: { shape: number[]; affine: Float64Array; source: string }): void {
  const sameShape = live.shape.every((n, i) => n === record.info.shape[i]);
  const sameAffine = live.affine.every((x, i) => Math.abs(x - record.info.affine[i]) <= GRID_TOLERANCE_MM);
  if (sameShape && sameAffine) return;
  throw new MindeyeError('VOLUME_GRID_MISMATCH', 'The live input after the restart is on another grid than the session record.', {
    file: join(record.dir, 'run.json'), field: sameShape ? 'affine' : 'shape',
    value: `${live.shape.join('x')} from ${live.source}`, expected: `${record.info.shape.join('x')} with the recorded affine`,
    fix: 'resume with the same series (--series), or record the new series to a new --record-to folder',
  });
}
