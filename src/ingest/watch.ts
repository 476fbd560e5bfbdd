/**
 * Folder-watch source: reads a scanner's real-time export folder as volumes arrive.
 *
 *   files:   v0  v2  v1(half) ... v1(rest)  v3(truncated)  v2(again)  v5        (v4 never)
 *   events:  run-info v0 ─ v1 v2 ─ warning(corrupt, 3) gap(3) ─ warning(duplicate, 2) ─ ... gap(4) v5
 *
 * - Completeness: a file is decoded after `stableMs` without a change and whenever it changes
 *   again. A file whose bytes end early (IncompleteFileError) is retried; when it has not changed
 *   for `corruptTimeoutMs` it is reported (warning kind `corrupt`) and skipped. A file that can
 *   never be a volume (not DICOM, wrong format, bad mosaic) is reported once (kind `invalid`).
 *   A file that changes after being reported is decoded again.
 * - Order: volumes are emitted by index (0-based, from AcquisitionNumber or the file name). A
 *   later volume waits for the missing ones; after `gapTimeoutMs` each missing index becomes a
 *   `gap` and the run goes on. A volume arriving after its gap is reported as `late`, one whose
 *   index was already emitted as `duplicate`; neither is passed on. A rejected file (invalid,
 *   corrupt, incomplete, or a link outside the folder) gives a warning. When its index is known
 *   from its header or from a NIfTI file name, that index becomes a gap as soon as the indices
 *   before it are resolved, without the gap timeout. So every index below the last emitted one
 *   is either a volume or a gap.
 * - Series: `series` selects one. Without it the source takes the first series that was not in
 *   the folder when watching began, so an earlier series is not replayed (`includeExisting`
 *   turns this off). Every other series gives one warning.
 * - Timing: `fileTimes` (a Map keyed by path) records when each file appeared, when it reached its
 *   final size (its last change) and when it was decoded, on the `performance.now()` clock. A
 *   Volume's `receivedAtMs` is the time its file (or the last slice file) was complete.
 * - Events come from fs.watch; a rescan every `rescanMs` catches what a watcher can miss
 *   (network file systems, renames, overflow).
 * - Completion: when `expectedVolumes` indices are resolved; otherwise the source runs until
 *   unsubscribed, which closes the watcher and clears every timer.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { Observable, type Subscriber } from 'rxjs';
import { isMindeyeError, MindeyeError, oneLineMessage } from '../errors.ts';
import { nowMs, type Shape3, type Volume, type WarningKind } from '../events.ts';
import { stageLogger } from '../log.ts';
import {
  assembleSlices, decodeScannerFile, FORMAT_OPTIONS, identifyPartial, IncompleteFileError, isCompanionFile, numberInName, peekSeries, sniffLayout,
  type FormatOption, type SliceFile, type VolumeFile,
} from './dicom/index.ts';
import type { Source, SourceContext, SourceEvent } from './source.ts';
import { symlinkTargetOutside } from '../io/paths.ts';

export interface WatchOptions {
  dir: string;
  format?: FormatOption;
  series?: number;
  /** Wait for a missing volume this long after a later one arrived, then emit a gap (default 5000). */
  gapTimeoutMs?: number;
  /** Quiet time after a file event before decoding (default 30). */
  stableMs?: number;
  /** An incomplete file unchanged this long is reported as corrupt (default 2000). */
  corruptTimeoutMs?: number;
  /** Period of the safety-net rescan (default 1000). */
  rescanMs?: number;
  /** Take files already in the folder when watching starts (default false). */
  includeExisting?: boolean;
  /** Repetition time for files that do not record it, seconds. */
  trSec?: number;
  /** Completes the source once this many indices are resolved (emitted or gapped). */
  expectedVolumes?: number;
  /** Number in a 3D NIfTI file name that is volume 0 (default 0). */
  niftiFirstNumber?: number;
  /**
   * First index to emit (default 0). A resumed session sets it past the volumes its record has:
   * files of lower indices are dropped without a warning, and the reorder waits from here.
   */
  startIdx?: number;
}

export interface FileTiming {
  file: string;
  /** First time the watcher saw the file, ms (performance.now()). */
  appearedAtMs: number;
  /** Last observed change of size or modification time: the file was complete from then on. */
  completeAtMs: number;
  decodedAtMs?: number;
  volIdx?: number;
}

export type WatchSource = Source & {
  /** Timing of every file seen, by path; filled while the source runs. */
  readonly fileTimes: ReadonlyMap<string, FileTiming>;
};

interface Tracked {
  path: string;
  size: number;
  mtimeMs: number;
  state: 'pending' | 'done' | 'failed' | 'existing';
  timer?: NodeJS.Timeout;
}

/** Throws CLI_USAGE for an option value that would make the watcher misbehave (NaN timers, an unknown format). */
function checkOptions(opts: WatchOptions): void {
  const bad = (field: string, value: unknown, expected: string): never => {
    throw new MindeyeError('CLI_USAGE', 'Invalid folder-watch option.', { field, value, expected, fix: 'see mindeye-rt watch --help' });
  };
  if (opts.format !== undefined && !FORMAT_OPTIONS.includes(opts.format)) bad('format', opts.format, FORMAT_OPTIONS.join(', '));
  const durations: [string, number | undefined][] = [
    ['gapTimeoutMs', opts.gapTimeoutMs], ['stableMs', opts.stableMs], ['corruptTimeoutMs', opts.corruptTimeoutMs], ['rescanMs', opts.rescanMs],
  ];
  for (const [field, value] of durations) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) bad(field, value, 'a number of milliseconds >= 0');
  }
  if (opts.rescanMs !== undefined && opts.rescanMs < 10) bad('rescanMs', opts.rescanMs, 'at least 10 ms');
  if (opts.series !== undefined && !(Number.isInteger(opts.series) && opts.series >= 0)) bad('series', opts.series, 'an integer >= 0');
  if (opts.startIdx !== undefined && !(Number.isInteger(opts.startIdx) && opts.startIdx >= 0)) bad('startIdx', opts.startIdx, 'an integer >= 0');
  if (opts.trSec !== undefined && !(opts.trSec > 0)) bad('trSec', opts.trSec, 'a positive number of seconds');
  if (opts.expectedVolumes !== undefined && !(Number.isInteger(opts.expectedVolumes) && opts.expectedVolumes >= 1)) {
    bad('expectedVolumes', opts.expectedVolumes, 'an integer >= 1');
  }
}

export function watchSource(opts: WatchOptions): WatchSource {
  checkOptions(opts);
  const fileTimes = new Map<string, FileTiming>();
  const source = ((ctx: SourceContext) =>
    new Observable<SourceEvent>((subscriber) => new FolderWatcher(opts, ctx, subscriber, fileTimes).start())) as WatchSource;
  Object.defineProperty(source, 'fileTimes', { value: fileTimes });
  return source;
}

class FolderWatcher {
  private readonly log;
  private readonly format: FormatOption;
  private readonly gapTimeoutMs: number;
  private readonly stableMs: number;
  private readonly corruptTimeoutMs: number;
  private readonly files = new Map<string, Tracked>();
  private readonly oldSeries = new Set<number>();
  private readonly warnedSeries = new Set<number>();
  private lockedSeries: number | undefined;
  private watcher: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private closed = false;

  // Reordering state.
  private nextIdx = 0;
  private readonly held = new Map<number, Volume>();
  private readonly emitted = new Set<number>();
  private readonly gapped = new Set<number>();
  private readonly failedAhead = new Map<number, string>();
  private gapTimer: NodeJS.Timeout | undefined;
  private runInfoSent = false;
  private grid: { shape: Shape3; trSec: number } | undefined;
  private readonly slices = new Map<number, Map<string, SliceFile>>();

  constructor(
    private readonly opts: WatchOptions,
    private readonly ctx: SourceContext,
    private readonly out: Subscriber<SourceEvent>,
    private readonly fileTimes: Map<string, FileTiming>,
  ) {
    this.log = stageLogger('ingest-watch', { runId: ctx.runId, dir: opts.dir });
    this.format = opts.format ?? 'auto';
    this.gapTimeoutMs = opts.gapTimeoutMs ?? 5000;
    this.stableMs = opts.stableMs ?? 30;
    this.corruptTimeoutMs = opts.corruptTimeoutMs ?? 2000;
    this.nextIdx = opts.startIdx ?? 0;
  }

  start(): () => void {
    let names: string[];
    try {
      names = readdirSync(this.opts.dir);
    } catch (err) {
      this.out.error(new MindeyeError('INGEST_INVALID', 'The watched folder cannot be read.', {
        file: this.opts.dir, field: 'dir', value: (err as NodeJS.ErrnoException).code,
        fix: 'create the folder the scanner exports to, or correct --dir',
      }));
      return () => {};
    }
    if (!this.opts.includeExisting) {
      for (const name of names) {
        const path = join(this.opts.dir, name);
        const stat = this.statFile(path);
        if (stat === undefined) continue;
        this.files.set(path, { path, size: stat.size, mtimeMs: stat.mtimeMs, state: 'existing' });
        const series = this.peekExistingSeries(path);
        if (series !== undefined) this.oldSeries.add(series);
      }
    }
    this.watcher = watch(this.opts.dir, (_event, name) => {
      if (name === null) this.rescan();
      else this.onPath(join(this.opts.dir, name.toString()));
    });
    this.watcher.on('error', (err) => {
      this.log.warn({ err }, 'fs.watch failed; relying on the periodic rescan');
    });
    this.rescanTimer = setInterval(() => this.rescan(), this.opts.rescanMs ?? 1000);
    this.log.info({ existing: this.files.size, series: this.opts.series, format: this.format }, 'watching folder');
    this.rescan();
    // A resumed session whose record already has every expected volume ends at once.
    if (this.opts.expectedVolumes !== undefined && this.nextIdx >= this.opts.expectedVolumes) this.flush();
    return () => this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    clearInterval(this.rescanTimer);
    clearTimeout(this.gapTimer);
    for (const f of this.files.values()) clearTimeout(f.timer);
    this.log.info({ emitted: this.emitted.size, gaps: this.gapped.size }, 'stopped watching folder');
  }

  private statFile(path: string): { size: number; mtimeMs: number } | undefined {
    try {
      const stat = statSync(path);
      return stat.isFile() ? { size: stat.size, mtimeMs: stat.mtimeMs } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Reads the series number from the first 64 KiB of a file (enough for the DICOM header elements used). */
  private peekExistingSeries(path: string): number | undefined {
    let fd: number | undefined;
    try {
      fd = openSync(path, 'r');
      const head = Buffer.alloc(65536);
      const length = readSync(fd, head, 0, head.length, 0);
      return peekSeries(head.subarray(0, length), path);
    } catch {
      return undefined;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  private rescan(): void {
    if (this.closed) return;
    let names: string[];
    try {
      names = readdirSync(this.opts.dir);
    } catch (err) {
      this.log.warn({ err }, 'rescan of the watched folder failed');
      return;
    }
    for (const name of names) this.onPath(join(this.opts.dir, name));
  }

  /** Registers a change of `path` and schedules a decode after the quiet time. */
  private onPath(path: string): void {
    if (this.closed) return;
    const base = path.slice(this.opts.dir.length + 1);
    if (base.startsWith('.')) return;
    if (isCompanionFile(path)) {
      // A REC that changes may complete its PAR, so the PAR is decoded again.
      for (const ext of ['.par', '.PAR']) {
        const par = this.files.get(path.replace(/\.rec$/i, ext));
        if (par === undefined || par.state === 'done' || par.state === 'existing') continue;
        par.state = 'pending';
        this.fileTimes.get(par.path)!.completeAtMs = nowMs();
        this.schedule(par, this.stableMs);
      }
      return;
    }

    const stat = this.statFile(path);
    if (stat === undefined) return;
    const now = nowMs();
    let tracked = this.files.get(path);
    if (tracked === undefined) {
      tracked = { path, size: -1, mtimeMs: -1, state: 'pending' };
      this.files.set(path, tracked);
      this.fileTimes.set(path, { file: path, appearedAtMs: now, completeAtMs: now });
    }
    if (tracked.size === stat.size && tracked.mtimeMs === stat.mtimeMs) return;

    if (tracked.state === 'existing') {
      // An old file that changes is not new data of the old series; track only its size.
      tracked.size = stat.size;
      tracked.mtimeMs = stat.mtimeMs;
      return;
    }
    tracked.size = stat.size;
    tracked.mtimeMs = stat.mtimeMs;
    tracked.state = 'pending';
    this.fileTimes.get(path)!.completeAtMs = now;
    this.schedule(tracked, this.stableMs);
  }

  private schedule(tracked: Tracked, delayMs: number): void {
    clearTimeout(tracked.timer);
    tracked.timer = setTimeout(() => this.decode(tracked), delayMs);
  }

  private decode(tracked: Tracked): void {
    if (this.closed || tracked.state !== 'pending') return;
    const timing = this.fileTimes.get(tracked.path)!;
    let decoded: ReturnType<typeof decodeScannerFile>;
    let bytes: Buffer | undefined;
    const readStartMs = nowMs();
    try {
      const outside = symlinkTargetOutside(tracked.path, this.opts.dir);
      if (outside !== undefined) {
        throw new MindeyeError('INGEST_INVALID', 'The file is a symbolic link to a file outside the watched folder.', {
          file: tracked.path, field: 'symbolic link', value: outside, expected: `a file inside ${this.opts.dir}`,
          fix: 'copy the file into the watched folder instead of linking to it',
        });
      }
      bytes = readFileSync(tracked.path);
      decoded = decodeScannerFile(bytes, tracked.path, {
        format: this.format, niftiFirstNumber: this.opts.niftiFirstNumber,
      });
    } catch (err) {
      if (err instanceof IncompleteFileError) {
        const quietMs = nowMs() - timing.completeAtMs;
        if (quietMs < this.corruptTimeoutMs) {
          this.schedule(tracked, Math.min(100, this.corruptTimeoutMs - quietMs + 1));
          return;
        }
        tracked.state = 'failed';
        const { seriesNumber, volIdx } = identifyPartial(err, tracked.path);
        if (seriesNumber !== undefined && !this.acceptSeries(seriesNumber, tracked.path)) return;
        const nifti = bytes !== undefined && sniffLayout(bytes) === 'nifti';
        const corrupt = new MindeyeError(nifti ? 'NIFTI_TRUNCATED' : err.code, `The file ends early and is still incomplete after ${this.corruptTimeoutMs} ms without change.`, {
          file: tracked.path, field: err.details.field, value: err.details.value,
          expected: nifti ? 'the data size that the NIfTI header states' : err.details.expected,
          fix: `export the file again; if the scanner pauses longer while writing, raise --corrupt-timeout-ms`,
        });
        this.failVolume('corrupt', volIdx ?? this.indexFromName(tracked.path, nifti), tracked.path, `${tracked.path} skipped: ${oneLineMessage(corrupt.message)}`);
        return;
      }
      if (isMindeyeError(err) || (err as NodeJS.ErrnoException).code === 'ENOENT') {
        tracked.state = 'failed';
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        const nifti = bytes !== undefined && sniffLayout(bytes) === 'nifti';
        this.failVolume('invalid', this.indexFromName(tracked.path, nifti), tracked.path, `${tracked.path} skipped: ${oneLineMessage((err as Error).message)}`);
        return;
      }
      this.log.error({ err, file: tracked.path }, 'unexpected error while decoding a file');
      tracked.state = 'failed';
      this.warn('other', undefined, `${tracked.path} skipped: ${(err as Error).message}`);
      return;
    }
    tracked.state = 'done';
    timing.decodedAtMs = nowMs();
    // 'ingest' times reading and decoding one file (a volume, or slices of one).
    const volIdx = decoded.find((d) => d.volIdx !== undefined)?.volIdx;
    this.ctx.publishTiming?.({ type: 'stage-timing', runId: this.ctx.runId, stage: 'ingest', volIdx, startMs: readStartMs, endMs: timing.decodedAtMs });
    for (const d of decoded) {
      if (!this.acceptSeries(d.seriesNumber, tracked.path)) return;
      timing.volIdx = d.volIdx;
      if (d.kind === 'volume') this.onVolume(d, timing.completeAtMs);
      else this.onSlice(d, timing.completeAtMs);
    }
  }

  private acceptSeries(series: number, path: string): boolean {
    if (this.opts.series !== undefined) {
      if (series === this.opts.series) return true;
    } else if (this.lockedSeries === undefined && !this.oldSeries.has(series)) {
      this.lockedSeries = series;
      this.log.info({ series, file: path }, 'following series');
      return true;
    } else if (series === this.lockedSeries) {
      return true;
    }
    if (!this.warnedSeries.has(series)) {
      this.warnedSeries.add(series);
      const reason = this.opts.series !== undefined
        ? `only series ${this.opts.series} is watched`
        : this.oldSeries.has(series) && this.lockedSeries === undefined
          ? `it was in the folder before watching began; pass series ${series} to take it`
          : `series ${this.lockedSeries} is being followed`;
      this.warn('other', undefined, `series ${series} ignored (first file ${path}): ${reason}`);
    }
    return false;
  }

  private onSlice(slice: SliceFile, completeAtMs: number): void {
    if (this.beforeStart(slice.volIdx, slice.file)) return;
    if (this.emitted.has(slice.volIdx) || this.gapped.has(slice.volIdx)) {
      this.warn(this.emitted.has(slice.volIdx) ? 'duplicate' : 'late', slice.volIdx, `${slice.file}: a slice of volume ${slice.volIdx}, which was already ${this.emitted.has(slice.volIdx) ? 'emitted' : 'given up (gap)'}; dropped`);
      return;
    }
    const key = slice.positionLps.map((x) => x.toFixed(3)).join(',');
    const group = this.slices.get(slice.volIdx) ?? new Map<string, SliceFile>();
    this.slices.set(slice.volIdx, group);
    if (group.has(key)) {
      this.warn('duplicate', slice.volIdx, `${slice.file} repeats slice position ${key} of volume ${slice.volIdx}; dropped`);
      return;
    }
    group.set(key, slice);
    if (group.size < slice.slicesPerVolume) return;
    this.slices.delete(slice.volIdx);
    try {
      this.onVolume(assembleSlices([...group.values()]), completeAtMs);
    } catch (err) {
      if (!isMindeyeError(err)) throw err;
      this.failVolume('invalid', slice.volIdx, slice.file, `volume ${slice.volIdx} could not be assembled: ${oneLineMessage(err.message)}`);
    }
  }

  private onVolume(file: VolumeFile, completeAtMs: number): void {
    const idx = file.volIdx;
    if (this.beforeStart(idx, file.file)) return;
    if (this.emitted.has(idx) || this.held.has(idx)) {
      this.warn('duplicate', idx, `${file.file} repeats volume ${idx}; dropped`);
      return;
    }
    if (this.gapped.has(idx)) {
      this.warn('late', idx, `${file.file}: volume ${idx} arrived after it was given up as a gap; dropped`);
      return;
    }
    if (this.grid !== undefined && (file.shape[0] !== this.grid.shape[0] || file.shape[1] !== this.grid.shape[1] || file.shape[2] !== this.grid.shape[2])) {
      const fewer = file.shape[0] === this.grid.shape[0] && file.shape[1] === this.grid.shape[1] && file.shape[2] < this.grid.shape[2];
      const mismatch = new MindeyeError('VOLUME_GRID_MISMATCH',
        `Volume ${idx} has grid ${file.shape.join('x')} but the run has ${this.grid.shape.join('x')}, so ${fewer ? 'it is incomplete and' : 'it is'} not passed on.`, {
          file: file.file, field: 'shape', value: file.shape.join('x'), expected: this.grid.shape.join('x'),
          fix: fewer
            ? 'export the volume again with all its slices'
            : 'send one series per run: move files of another acquisition out of the watched folder',
        });
      this.failVolume(fewer ? 'incomplete' : 'invalid', idx, file.file, `${file.file} skipped: ${oneLineMessage(mismatch.message)}`);
      return;
    }
    // An explicit TR (--tr) wins over the file's: 3D exports often carry a placeholder pixdim[4].
    const trSec = this.opts.trSec ?? (file.trSec > 0 ? file.trSec : 0);
    if (this.grid === undefined) this.grid = { shape: file.shape, trSec };
    const volume: Volume = {
      type: 'volume',
      runId: this.ctx.runId,
      volIdx: idx,
      acqTimeSec: idx * this.grid.trSec,
      receivedAtMs: completeAtMs,
      shape: file.shape,
      affine: file.affine,
      data: file.data,
      sourceId: file.file,
    };
    if (!this.runInfoSent) {
      this.runInfoSent = true;
      this.out.next({
        type: 'run-info',
        runId: this.ctx.runId,
        trSec: this.grid.trSec,
        shape: file.shape,
        affine: file.affine,
        expectedVolumes: this.opts.expectedVolumes,
        source: `folder ${this.opts.dir} (${file.format}${file.manufacturer ? `, ${file.manufacturer}` : ''}, series ${file.seriesNumber}${file.seriesDescription ? ` "${file.seriesDescription}"` : ''})`,
        motionCorrection: false,
        trials: undefined,
      });
    }
    this.held.set(idx, volume);
    this.flush();
  }

  /** Drops a file below `startIdx`: its volume came from the session record before a restart. */
  private beforeStart(volIdx: number, file: string): boolean {
    if (volIdx >= (this.opts.startIdx ?? 0)) return false;
    this.log.debug({ volIdx, file }, 'file skipped: its volume is in the session record');
    return true;
  }

  /**
   * Reports a volume that cannot be passed on. A known index becomes a gap as soon as the
   * volumes before it are resolved, without waiting for the gap timeout.
   */
  private failVolume(kind: WarningKind, volIdx: number | undefined, file: string, message: string): void {
    this.warn(kind, volIdx, message);
    if (volIdx === undefined || volIdx < this.nextIdx || this.held.has(volIdx) || this.gapped.has(volIdx)) return;
    this.failedAhead.set(volIdx, `volume ${volIdx} was ${kind}: ${file}`);
    this.flush();
  }

  /**
   * Returns the volume index that a rejected file's name gives, or undefined. Only NIfTI files
   * (by content, or named `.nii` or `.nii.gz`) count, because a 3D NIfTI export contains one volume
   * per file. DICOM names number slices or instances, so a rejected DICOM file has an index only
   * when its header could be read.
   */
  private indexFromName(path: string, niftiContent: boolean): number | undefined {
    if (!niftiContent && !/\.nii(\.gz)?$/i.test(path)) return undefined;
    const number = numberInName(path);
    if (number === undefined) return undefined;
    const volIdx = number - (this.opts.niftiFirstNumber ?? 0);
    if (volIdx < 0 || this.beforeStart(volIdx, path)) return undefined;
    return volIdx;
  }

  private flush(): void {
    // A subscriber that unsubscribes while handling an event (an error on the run-info) closes the watcher mid-call: arm no timer then.
    if (this.closed) return;
    for (;;) {
      const volume = this.held.get(this.nextIdx);
      if (volume !== undefined) {
        this.held.delete(this.nextIdx);
        this.emitted.add(this.nextIdx);
        this.out.next(volume);
      } else if (this.failedAhead.has(this.nextIdx)) {
        this.emitGap(this.nextIdx, this.failedAhead.get(this.nextIdx)!);
      } else {
        break;
      }
      this.nextIdx++;
      clearTimeout(this.gapTimer);
      this.gapTimer = undefined;
    }
    if (this.opts.expectedVolumes !== undefined && this.nextIdx >= this.opts.expectedVolumes) {
      this.log.info({ volumes: this.emitted.size, gaps: this.gapped.size }, 'expected volume count reached');
      this.out.complete();
      this.close();
      return;
    }
    if ((this.held.size > 0 || this.failedAhead.size > 0) && this.gapTimer === undefined) {
      const waitingFor = this.nextIdx;
      this.gapTimer = setTimeout(() => {
        this.gapTimer = undefined;
        if (this.nextIdx !== waitingFor) return;
        this.emitGap(waitingFor, `volume ${waitingFor} did not arrive within ${this.gapTimeoutMs} ms after a later volume`);
        this.nextIdx++;
        this.flush();
      }, this.gapTimeoutMs);
    }
  }

  private emitGap(volIdx: number, reason: string): void {
    this.gapped.add(volIdx);
    this.failedAhead.delete(volIdx);
    const partial = this.slices.get(volIdx);
    if (partial !== undefined) {
      this.slices.delete(volIdx);
      this.warn('incomplete', volIdx, `volume ${volIdx} had ${partial.size} of ${[...partial.values()][0].slicesPerVolume} slices when it was given up`);
    }
    this.log.warn({ volIdx, reason }, 'gap');
    this.out.next({ type: 'gap', runId: this.ctx.runId, volIdx, reason });
  }

  private warn(kind: WarningKind, volIdx: number | undefined, message: string): void {
    this.log.warn({ kind, volIdx }, message);
    this.out.next({ type: 'warning', runId: this.ctx.runId, kind, volIdx, message });
  }
}
