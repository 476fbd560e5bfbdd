/**
 * The contract every volume source implements (replays, folder watch, network push).
 *
 * A source is a function from a run context to an Observable of source events:
 *
 *   run-info ─ volume ─ volume ─ gap ─ volume ─ warning ─ volume ─|
 *
 * - `run-info` comes first, before the first volume (a live source emits it once the first
 *   volume tells it the grid, affine and TR).
 * - volumes come in acquisition order (`volIdx` increasing); a missing volume is a `gap`, a
 *   corrupt, duplicate or late one a `warning`. Nothing is dropped or reordered silently.
 * - completion means the run ended; an error means the source cannot go on (the session logs it
 *   and ends the run with what was processed).
 * - unsubscribing stops reading (closes files, sockets and watchers).
 */
import type { Observable } from 'rxjs';
import type { Gap, PipelineWarning, RunInfo, StageTiming, Volume } from '../events.ts';

export type SourceEvent = RunInfo | Volume | Gap | PipelineWarning;

export interface SourceContext {
  runId: string;
  /** Pacing control for replays; live sources ignore it. */
  pacing: PacingControl;
  /** Receives the source's own timings, such as 'ingest' (decoding one volume); optional. */
  publishTiming?(timing: StageTiming): void;
}

export type Source = (ctx: SourceContext) => Observable<SourceEvent>;

/** Replay speed: one volume per TR (`realtime`), a multiple of real time, or as fast as possible. */
export type Speed = { kind: 'realtime' } | { kind: 'factor'; factor: number } | { kind: 'max' };

/**
 * Pacing shared by the session, its sources and the dashboard controls. Sources call
 * `waitTurn(volIdx, trSec)` before emitting each volume.
 */
export interface PacingControl {
  readonly speed: Speed;
  readonly paused: boolean;
  setSpeed(speed: Speed): void;
  pause(): void;
  resume(): void;
  /** Resolves when volume `volIdx` is due at the current speed (immediately at `max`). */
  waitTurn(volIdx: number, trSec: number): Promise<void>;
}

export function parseSpeed(text: string): Speed {
  if (text === 'realtime') return { kind: 'realtime' };
  if (text === 'max') return { kind: 'max' };
  const factor = Number(text);
  if (!Number.isFinite(factor) || factor <= 0) {
    throw new RangeError(`invalid speed "${text}": expected realtime, max or a positive number such as 4`);
  }
  return factor === 1 ? { kind: 'realtime' } : { kind: 'factor', factor };
}

export function formatSpeed(speed: Speed): string {
  return speed.kind === 'factor' ? `${speed.factor}x` : speed.kind;
}
