/**
 * Replay of a 4D NIfTI run as if it came off the scanner: the file is decompressed and parsed
 * one volume at a time (the run is never loaded whole), and each volume is released when the
 * pacing says it is due.
 *
 *   run-info ── v0 ── v1 ── ... ── v(N-1) ──|
 *
 * A truncated file yields its complete volumes, then a `warning` (kind 'corrupt') naming the
 * file, then completes; the report counts what arrived. Unsubscribing stops reading.
 */
import { Observable } from 'rxjs';
import { MindeyeError } from '../errors.ts';
import { nowMs, type RunInfo, type TrialSpec } from '../events.ts';
import { streamNiftiVolumes, type NiftiHeader } from '../io/nifti.ts';
import { stageLogger } from '../log.ts';
import type { Source, SourceEvent } from './source.ts';

export interface NiftiReplayOptions {
  file: string;
  trials?: TrialSpec[] | ((header: NiftiHeader) => TrialSpec[]);
  description: string;
  subject?: string;
  session?: string;
  run?: string;
  /** True when the data still need motion correction (scanner data, simulated runs). */
  needsMotionCorrection: boolean;
  simulated?: boolean;
  /** TR to use when the header's pixdim[4] is missing or zero. */
  trSecOverride?: number;
  /** Called with the compressed bytes read when the first volume is released (for tests). */
  onFirstVolume?(fileBytesRead: number): void;
}

export function niftiReplaySource(opts: NiftiReplayOptions): Source {
  return (ctx) => new Observable<SourceEvent>((subscriber) => {
    const log = stageLogger('ingest', { runId: ctx.runId, file: opts.file });
    let stopped = false;
    (async () => {
      let trSec = 0;
      let delivered = 0;
      let grid: NiftiHeader | undefined;
      try {
        const volumes = streamNiftiVolumes(opts.file, (header) => {
          grid = header;
          trSec = opts.trSecOverride ?? header.trSec;
          if (!(trSec > 0)) {
            throw new MindeyeError('NIFTI_HEADER_INVALID', 'The run has no repetition time.', {
              file: opts.file, field: 'pixdim[4]', value: header.trSec, expected: 'TR in seconds > 0',
              fix: 'fix the header (e.g. nibabel: img.header.set_zooms) or pass --tr',
            });
          }
          const trials = typeof opts.trials === 'function' ? opts.trials(header) : opts.trials;
          const info: RunInfo = {
            type: 'run-info', runId: ctx.runId, subject: opts.subject, session: opts.session, run: opts.run,
            trSec, shape: header.shape, affine: header.affine, expectedVolumes: header.volumes, trials,
            source: opts.description, motionCorrection: opts.needsMotionCorrection, simulated: opts.simulated,
          };
          subscriber.next(info);
        });
        // 'ingest' times the decompression and parsing of each volume, without the pacing wait.
        let readStartMs = nowMs();
        for await (const vol of volumes) {
          if (stopped) return;
          ctx.publishTiming?.({ type: 'stage-timing', runId: ctx.runId, stage: 'ingest', volIdx: vol.index, startMs: readStartMs, endMs: nowMs() });
          await ctx.pacing.waitTurn(vol.index, trSec);
          if (stopped) return;
          if (vol.index === 0) opts.onFirstVolume?.(vol.fileBytesRead);
          subscriber.next({
            type: 'volume', runId: ctx.runId, volIdx: vol.index, acqTimeSec: vol.index * trSec,
            receivedAtMs: nowMs(), shape: grid!.shape, affine: grid!.affine, data: vol.data,
            sourceId: `${opts.file}#${vol.index}`,
          });
          delivered++;
          readStartMs = nowMs();
        }
        subscriber.complete();
      } catch (err) {
        if (err instanceof MindeyeError && err.code === 'NIFTI_TRUNCATED' && delivered > 0) {
          log.error({ err: err.message, delivered }, 'run file truncated');
          subscriber.next({ type: 'warning', runId: ctx.runId, kind: 'corrupt', volIdx: delivered, message: err.message, code: err.code });
          subscriber.complete();
          return;
        }
        subscriber.error(err);
      }
    })();
    return () => {
      stopped = true;
    };
  });
}

