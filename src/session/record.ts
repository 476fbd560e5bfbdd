/**
 * Session record (`--record-to DIR`): a write-ahead log of everything a session received, which
 * `replay --record DIR` re-plays and a restarted live session resumes from (src/session/resume.ts).
 *
 * Layout (docs/record.md has the details):
 * - run.json: the first run-info event (affine as an array), the processing options, the model
 *   directory and the record format version. Written once, by temp file and rename.
 * - volumes/vol_NNNNNN.nii: every volume as received, one uncompressed 3D NIfTI each. It is
 *   stored as int16 or uint16 when every value is an integer in that range (lossless), else
 *   as float32. Written to a temp name, fsynced and renamed before any stage receives the volume.
 * - events.jsonl: one JSON object per line for every event without its voxel or image arrays,
 *   each with `recordedAtEpochMs`. Volume lines add `file`, `dtype` and `receivedAtEpochMs`. A
 *   `record-start` line opens each process that wrote to the record (the first one and every
 *   resume).
 * - trials.jsonl + betas_final.f32: one line per final trial estimate (trialId, stimulusId,
 *   onsetSec, row) and its raw betas as float32 rows of V values in mask order.
 * - frames/trial_TTTT_KIND_SS.jpg: every frame sent (provisional ones: trial_TTTT_KIND-provisional-vNNNNNN_SS.jpg).
 * - report.json: the run report, written when the run ends.
 * - lock: the pid and start time of the process writing the record, present while it runs
 *   (see acquireRecordLock).
 *
 * A `kill -9` loses at most the volume being written (its temp file is removed on the next
 * start) and the last, half-written line of a .jsonl file, which readers skip and report.
 */
import {
  closeSync, existsSync, fdatasyncSync, fsyncSync, ftruncateSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync,
  rmdirSync, statSync, unlinkSync, writeFileSync, writeSync,
} from 'node:fs';
import { endianness, hostname } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { MindeyeError } from '../errors.ts';
import type { Frame, PipelineEvent, RunInfo, TrialSpec, Volume } from '../events.ts';
import { encodeNifti, encodeNiftiHeader, type NiftiWriteOptions } from '../io/nifti.ts';
import { logger } from '../log.ts';
import type { ProcessingOptions } from './options.ts';

export const RECORD_FORMAT = 'mindeye-rt-record/2';
/** Older records (float32 .nii.gz volumes, no epoch times) are still read. */
const READABLE_FORMATS = [RECORD_FORMAT, 'mindeye-rt-record/1'];
const VOLUME_FILE = /^vol_(\d{6})\.nii(\.gz)?$/;

export type RecordedDtype = 'int16' | 'uint16' | 'float32';

/** A volume line of events.jsonl. */
export interface RecordedVolume {
  type: 'volume';
  volIdx: number;
  acqTimeSec: number;
  /** Receive time on the recording process's monotonic clock (not comparable across restarts). */
  receivedAtMs: number;
  /** Receive time in ms since the Unix epoch (comparable across restarts). */
  receivedAtEpochMs?: number;
  sourceId: string;
  /** Path relative to the record directory. */
  file?: string;
  dtype?: RecordedDtype;
  recordedAtEpochMs?: number;
}

export interface RecordMeta {
  processing?: ProcessingOptions;
  modelDir?: string;
  /** Command that wrote the record (watch, serve, replay). */
  command?: string;
}

/** run.json as stored. */
export interface SavedRun extends Omit<RunInfo, 'affine'>, RecordMeta {
  format: string;
  affine: number[];
}

export interface JsonLines<T> {
  lines: T[];
  /** Line numbers (1-based) that are not valid JSON, the last one included. */
  invalidLines: number[];
  /** True when the file ends in a line without its newline (a write cut short). */
  partialTail: boolean;
}

/**
 * Reads a JSON-lines file, skipping lines that do not parse. A last line without its newline is
 * the trace of a write cut short (a killed process), so it is reported as `partialTail`, not thrown.
 */
export function readJsonLines<T = Record<string, unknown>>(file: string): JsonLines<T> {
  const result: JsonLines<T> = { lines: [], invalidLines: [], partialTail: false };
  if (!existsSync(file)) return result;
  const text = readFileSync(file, 'utf8');
  const rows = text.split('\n');
  // A complete file ends with '\n', so its last split element is empty.
  const tail = rows.pop() ?? '';
  if (tail.length > 0) {
    result.partialTail = true;
    result.invalidLines.push(rows.length + 1);
  }
  rows.forEach((row, i) => {
    if (row.trim() === '') return;
    try {
      result.lines.push(JSON.parse(row) as T);
    } catch {
      result.invalidLines.push(i + 1);
    }
  });
  return result;
}

/** Returns the volume file name in volumes/ for an index. */
export function volumeFileName(volIdx: number): string {
  return `vol_${String(volIdx).padStart(6, '0')}.nii`;
}

/** Picks the smallest NIfTI datatype that stores every value exactly. */
export function losslessDtype(data: Float32Array): RecordedDtype {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (!Number.isInteger(x)) return 'float32';
    if (x < min) min = x;
    if (x > max) max = x;
  }
  if (min >= -32768 && max <= 32767) return 'int16';
  if (min >= 0 && max <= 65535) return 'uint16';
  return 'float32';
}

/** Encodes a 3D NIfTI. The integer path copies through a typed array, which is faster than encodeNifti's per-value loop. */
function encodeVolume(data: Float32Array, opts: NiftiWriteOptions): Uint8Array {
  if (endianness() !== 'LE' || opts.datatype === 'float32') return encodeNifti(data, opts);
  const header = encodeNiftiHeader(opts);
  const values = opts.datatype === 'int16' ? Int16Array.from(data) : Uint16Array.from(data);
  return Buffer.concat([header, Buffer.from(values.buffer, values.byteOffset, values.byteLength)]);
}

/** Writes `bytes` to `file` so that a crash leaves either the old state or the whole file. */
function writeFileAtomic(file: string, bytes: Uint8Array, sync: boolean): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, bytes);
    if (sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/** Cuts a file back to `length` bytes. */
function truncateTo(file: string, length: number): void {
  const fd = openSync(file, 'r+');
  try {
    ftruncateSync(fd, length);
  } finally {
    closeSync(fd);
  }
}

/** Removes a half-written last line (no newline) so that the next append starts a fresh line. */
function cutPartialLine(file: string): number {
  if (!existsSync(file)) return 0;
  const bytes = readFileSync(file);
  if (bytes.length === 0 || bytes[bytes.length - 1] === 0x0a) return 0;
  const keep = bytes.lastIndexOf(0x0a) + 1;
  truncateTo(file, keep);
  return bytes.length - keep;
}

/** Volume indices recorded in volumes/ (complete files only: temp files end in .tmp). */
export function recordedVolumeFiles(dir: string): Map<number, string> {
  const files = new Map<number, string>();
  const volumesDir = join(dir, 'volumes');
  if (!existsSync(volumesDir)) return files;
  for (const name of readdirSync(volumesDir).sort()) {
    const match = VOLUME_FILE.exec(name);
    if (match) files.set(Number(match[1]), `volumes/${name}`);
  }
  return files;
}

/** Contents of a record's lock file. */
export interface RecordLock {
  pid: number;
  hostname: string;
  /** Start of the locking process, ms since the epoch (performance.timeOrigin). */
  processStartEpochMs: number;
  lockedAtEpochMs: number;
  command?: string;
}

/** A lock held by this process, and the folders it created to hold it. */
export interface HeldRecordLock {
  file: string;
  /** Folders this process created for the record, innermost first (removed again if it records nothing). */
  createdDirs: string[];
}

/** Returns true when a process with this pid exists (EPERM: it exists but belongs to another user). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readLock(file: string): RecordLock | undefined {
  try {
    const lock = JSON.parse(readFileSync(file, 'utf8')) as RecordLock;
    return Number.isInteger(lock.pid) ? lock : undefined;
  } catch {
    return undefined;
  }
}

/** Returns true when the lock's process may still be running, so the lock must be respected. */
function lockIsLive(lock: RecordLock): boolean {
  // A lock from another machine (a shared file system) cannot be checked, so it is respected.
  if (lock.hostname !== hostname()) return true;
  // The same pid with another start time is an earlier process whose pid was reused (pid 1 in containers).
  if (lock.pid === process.pid) return lock.processStartEpochMs === performance.timeOrigin;
  // NOTE: a dead recorder whose pid was reused by an unrelated process looks live. The error names the pid so that a user can check it.
  return processExists(lock.pid);
}

/**
 * Locks `dir` for one writing process: `dir`/lock holds its pid and start time. The lock file is
 * written under a temporary name and hard-linked into place, which fails when a lock exists, so
 * no reader ever sees a half-written lock. A lock whose process is gone (a kill -9) is taken
 * over with a warning. A live one raises CLI_USAGE naming the lock file and the pid.
 */
export function acquireRecordLock(dir: string, command?: string): HeldRecordLock {
  const firstCreated = mkdirSync(dir, { recursive: true });
  const createdDirs: string[] = [];
  if (firstCreated !== undefined) {
    for (let d = resolve(dir); ; d = dirname(d)) {
      createdDirs.push(d);
      if (d === resolve(firstCreated) || relative(resolve(firstCreated), d).startsWith('..')) break;
    }
  }
  const file = join(dir, 'lock');
  const tmp = join(dir, `lock.${process.pid}.tmp`);
  const content: RecordLock = { pid: process.pid, hostname: hostname(), processStartEpochMs: performance.timeOrigin, lockedAtEpochMs: Date.now(), command };
  writeFileSync(tmp, JSON.stringify(content) + '\n');
  try {
    // Two tries: the second follows the removal of a stale lock.
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(tmp, file);
        return { file, createdDirs };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readLock(file);
      if (holder && lockIsLive(holder)) {
        throw new MindeyeError('CLI_USAGE', 'Another process is writing this session record.', {
          file, field: '--record-to', value: dir,
          expected: `a record no other process writes (the lock is held by pid ${holder.pid} on ${holder.hostname}, ${holder.command ?? 'a mindeye-rt command'} started ${new Date(holder.processStartEpochMs).toISOString()})`,
          fix: `record to another folder (--record-to), or stop process ${holder.pid} first; delete ${file} only if that process is not a mindeye-rt session`,
        });
      }
      logger.warn({ file, pid: holder?.pid, hostname: holder?.hostname }, holder
        ? `taking over the record lock of process ${holder.pid}, which is no longer running`
        : 'taking over an unreadable record lock');
      try {
        unlinkSync(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    throw new MindeyeError('CLI_USAGE', 'Another process took the session record lock at the same time.', {
      file, field: '--record-to', value: dir, fix: 'record to another folder (--record-to), or start one process per record',
    });
  } finally {
    unlinkSync(tmp);
  }
}

/** Removes a lock this process holds (left alone when another process has taken it over since). */
export function releaseRecordLock(lock: HeldRecordLock): void {
  const holder = readLock(lock.file);
  if (holder?.pid !== process.pid || holder.processStartEpochMs !== performance.timeOrigin) return;
  try {
    unlinkSync(lock.file);
  } catch (err) {
    logger.warn({ err, file: lock.file }, 'the record lock could not be removed');
  }
}

/**
 * Writes a session record. The volume write-ahead goes through `writeVolume`, which the session
 * calls before any pipeline stage receives the volume. Every other event goes through `onEvent`.
 *
 * The constructor takes the record's lock (acquireRecordLock) and throws when another process
 * holds it. Files and folders are created at the first write, so a session that fails before
 * recording anything leaves no folder behind: `close` removes the lock and the folders it made.
 *
 * On an existing record it repairs what a killed process left (a temp volume file, a partial
 * last line, betas without their trial line), then appends. `repairs` lists the repairs.
 * Events derived from volumes that the record already has (volIdx <= `resumedThrough`) are not
 * written again when the resumed session re-runs them, except what the record lacks: a trial's
 * final estimate and final decode, and frames.
 */
export class SessionRecorder {
  readonly repairs: string[] = [];
  private info?: RunInfo;
  private betaRows = 0;
  private readonly trialStarts = new Map<number, number>();
  private readonly recordedVolumes: Set<number>;
  private readonly recordedTrials = new Set<number>();
  private readonly announcedTrials = new Set<number>();
  private readonly recordedGaps = new Set<number>();
  private readonly decodedFinalTrials = new Set<number>();
  private readonly recordedFrames = new Set<string>();
  /** Highest volume or gap index the record had when this recorder opened it (-1 for a new record). */
  private resumedThrough = -1;
  private eventsFd?: number;
  private readonly lock: HeldRecordLock;
  private closed = false;
  private readonly createdFolders = new Set<string>();
  private readonly log = logger.child({ stage: 'record' });

  private readonly meta: RecordMeta;

  constructor(private readonly dir: string, meta: RecordMeta = {}) {
    // Absolute paths, so that a replay from another working directory finds the mask and model.
    const maskFile = meta.processing?.maskFile;
    const motionReference = meta.processing?.motionReference;
    this.meta = {
      ...meta,
      modelDir: meta.modelDir !== undefined ? resolve(meta.modelDir) : undefined,
      processing: meta.processing && {
        ...meta.processing,
        maskFile: maskFile !== undefined ? resolve(maskFile) : undefined,
        motionReference: typeof motionReference === 'string' ? resolve(motionReference) : motionReference ?? 0,
      },
    };
    this.lock = acquireRecordLock(dir, meta.command);
    this.repair();
    this.recordedVolumes = new Set(recordedVolumeFiles(dir).keys());
    const trials = readJsonLines<{ trialId: number }>(join(dir, 'trials.jsonl'));
    this.betaRows = trials.lines.length;
    for (const t of trials.lines) this.recordedTrials.add(t.trialId);
    type Line = { type: string; trial?: TrialSpec; volIdx?: number; trialId?: number; final?: boolean; kind?: string; step?: number; provisional?: boolean };
    for (const e of readJsonLines<Line>(join(dir, 'events.jsonl')).lines) {
      if (e.type === 'trial-added' && e.trial) this.announcedTrials.add(e.trial.trialId);
      if (e.type === 'gap' && typeof e.volIdx === 'number') this.recordedGaps.add(e.volIdx);
      if (e.type === 'decoded' && e.final === true && typeof e.trialId === 'number') this.decodedFinalTrials.add(e.trialId);
      if (e.type === 'frame') this.recordedFrames.add(frameKey(e as Frame));
    }
    this.resumedThrough = Math.max(-1, ...this.recordedVolumes, ...this.recordedGaps);
  }

  /** Opens events.jsonl and writes its record-start line, at the first write. */
  private open(): number {
    if (this.eventsFd !== undefined) return this.eventsFd;
    if (this.closed) throw new Error(`the session recorder of ${this.dir} is closed`);
    this.eventsFd = openSync(join(this.dir, 'events.jsonl'), 'a');
    this.appendEvent({
      type: 'record-start', format: RECORD_FORMAT, pid: process.pid, command: this.meta.command,
      resumed: this.recordedVolumes.size > 0, volumesInRecord: this.recordedVolumes.size,
    });
    return this.eventsFd;
  }

  /** Creates volumes/ or frames/ at its first file. */
  private ensureFolder(name: 'volumes' | 'frames'): void {
    if (this.createdFolders.has(name)) return;
    mkdirSync(join(this.dir, name), { recursive: true });
    this.createdFolders.add(name);
  }

  private repair(): void {
    for (const folder of ['volumes', 'frames']) {
      if (!existsSync(join(this.dir, folder))) continue;
      for (const name of readdirSync(join(this.dir, folder))) {
        if (!name.endsWith('.tmp')) continue;
        unlinkSync(join(this.dir, folder, name));
        this.repairs.push(`removed ${folder}/${name}, a file whose write was cut short`);
      }
    }
    for (const name of ['events.jsonl', 'trials.jsonl']) {
      const cut = cutPartialLine(join(this.dir, name));
      if (cut > 0) this.repairs.push(`removed a half-written last line of ${name} (${cut} bytes)`);
    }
    // betas_final.f32 is appended before its trials.jsonl line, so extra bytes are a row whose line was never written.
    const betasFile = join(this.dir, 'betas_final.f32');
    const trials = readJsonLines<{ voxels?: number }>(join(this.dir, 'trials.jsonl')).lines;
    if (existsSync(betasFile)) {
      const voxels = trials[0]?.voxels ?? 0;
      const expectedBytes = trials.length * voxels * 4;
      const size = statSync(betasFile).size;
      if (size > expectedBytes) {
        truncateTo(betasFile, expectedBytes);
        this.repairs.push(`removed ${size - expectedBytes} bytes of betas_final.f32 without a trials.jsonl line`);
      }
    }
    for (const repair of this.repairs) this.log.warn({ dir: this.dir }, `record repaired: ${repair}`);
  }

  /**
   * Writes a received volume to disk (the write-ahead). Returns false when the record already
   * had it (a resumed session re-running recorded volumes).
   */
  writeVolume(e: Volume): boolean {
    if (this.recordedVolumes.has(e.volIdx)) return false;
    const eventsFd = this.open();
    this.ensureFolder('volumes');
    const name = volumeFileName(e.volIdx);
    const dtype = losslessDtype(e.data);
    const voxelSizeMm = [0, 1, 2].map((c) => Math.hypot(e.affine[c], e.affine[4 + c], e.affine[8 + c])) as [number, number, number];
    const bytes = encodeVolume(e.data, { shape: e.shape, voxelSizeMm, trSec: this.info?.trSec, affine: e.affine, datatype: dtype, description: `mindeye-rt volume ${e.volIdx}` });
    writeFileAtomic(join(this.dir, 'volumes', name), bytes, true);
    this.recordedVolumes.add(e.volIdx);
    this.appendEvent({
      type: 'volume', volIdx: e.volIdx, acqTimeSec: e.acqTimeSec, receivedAtMs: e.receivedAtMs,
      receivedAtEpochMs: performance.timeOrigin + e.receivedAtMs, sourceId: e.sourceId, file: `volumes/${name}`, dtype,
    } satisfies RecordedVolume);
    fdatasyncSync(eventsFd);
    return true;
  }

  onEvent(e: PipelineEvent): void {
    switch (e.type) {
      case 'run-info': {
        this.info = e;
        for (const t of e.trials ?? []) this.trialStarts.set(t.trialId, t.onsetSec);
        const runFile = join(this.dir, 'run.json');
        // A resumed session keeps the first process's run.json: it describes the whole record.
        if (existsSync(runFile)) break;
        this.open();
        const saved: SavedRun = { format: RECORD_FORMAT, ...e, affine: Array.from(e.affine), ...this.meta };
        writeFileAtomic(runFile, Buffer.from(JSON.stringify(saved, null, 2) + '\n'), true);
        break;
      }
      case 'volume':
        // Written by writeVolume, which the session calls before publishing the volume on the bus.
        break;
      case 'trial-added':
        this.trialStarts.set(e.trial.trialId, e.trial.onsetSec);
        if (this.announcedTrials.has(e.trial.trialId)) break;
        this.announcedTrials.add(e.trial.trialId);
        this.appendEvent(e);
        break;
      case 'masked-volume': {
        if (e.volIdx <= this.resumedThrough) break;
        const { values: _values, ...rest } = e;
        this.appendEvent(rest);
        break;
      }
      case 'trial-estimate': {
        const { betas, normalizedBetas: _n, ...rest } = e;
        if (e.final && !this.recordedTrials.has(e.trialId)) {
          this.appendBytes('betas_final.f32', Buffer.from(Float32Array.from(betas).buffer));
          this.appendBytes('trials.jsonl', Buffer.from(JSON.stringify({
            trialId: e.trialId, stimulusId: e.stimulusId, onsetSec: this.trialStarts.get(e.trialId), volIdx: e.volIdx, row: this.betaRows, voxels: betas.length,
          }) + '\n'));
          this.recordedTrials.add(e.trialId);
          this.betaRows++;
        }
        if (e.volIdx > this.resumedThrough) this.appendEvent(rest);
        break;
      }
      case 'decoded': {
        // A final decode is recorded once per trial, even when the resumed session made it from recorded volumes.
        if (e.final ? this.decodedFinalTrials.has(e.trialId) : e.volIdx <= this.resumedThrough) break;
        if (e.final) this.decodedFinalTrials.add(e.trialId);
        const { retrievalEmbedding: _r, priorEmbedding: _p, lowLevelLatents: _l, ...rest } = e;
        this.appendEvent(rest);
        break;
      }
      case 'frame': {
        const key = frameKey(e);
        if (this.recordedFrames.has(key)) break;
        this.recordedFrames.add(key);
        const { image, ...rest } = e;
        const ext = e.mime === 'image/webp' ? 'webp' : e.mime === 'image/png' ? 'png' : 'jpg';
        // Provisional frames are sent again at each progressive estimate, so their names carry the volume index.
        const provisional = e.provisional ? `-provisional-v${String(e.volIdx).padStart(6, '0')}` : '';
        const name = `trial_${String(e.trialId).padStart(4, '0')}_${e.kind}${provisional}_${String(e.step).padStart(2, '0')}.${ext}`;
        this.open();
        this.ensureFolder('frames');
        writeFileAtomic(join(this.dir, 'frames', name), image, false);
        this.appendEvent({ ...rest, file: `frames/${name}` });
        break;
      }
      case 'stage-timing':
      case 'warning':
        if ((e.volIdx ?? Infinity) <= this.resumedThrough) break;
        this.appendEvent(e);
        break;
      case 'gap':
        if (this.recordedGaps.has(e.volIdx)) break;
        this.recordedGaps.add(e.volIdx);
        this.appendEvent(e);
        break;
      default:
        this.appendEvent(e);
    }
  }

  /** Writes the run report as report.json (replaced at each run end, so a resumed session's report covers the whole session). */
  writeReport(report: object): void {
    this.open();
    writeFileAtomic(join(this.dir, 'report.json'), Buffer.from(JSON.stringify(report, null, 2) + '\n'), true);
  }

  /** Appends a line that is not a pipeline event (feedback triggers, resume notes). */
  note(line: { type: string } & Record<string, unknown>): void {
    this.appendEvent(line);
  }

  /** Closes events.jsonl and removes the lock. A record never written to is removed with the folders created for it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.eventsFd !== undefined) closeSync(this.eventsFd);
    releaseRecordLock(this.lock);
    if (this.eventsFd !== undefined) return;
    for (const d of this.lock.createdDirs) {
      try {
        rmdirSync(d);
      } catch {
        // Not empty (another process wrote there), so it stays.
        break;
      }
    }
  }

  private appendEvent(e: object): void {
    // One write call per line, so a kill leaves at most the last line incomplete.
    writeSync(this.open(), JSON.stringify({ ...e, recordedAtEpochMs: Date.now() }) + '\n');
  }

  private appendBytes(name: string, bytes: Uint8Array): void {
    this.open();
    const fd = openSync(join(this.dir, name), 'a');
    try {
      writeSync(fd, bytes);
    } finally {
      closeSync(fd);
    }
  }
}

/** Identifies a frame: a resumed session that renders a trial again records only the frames the record lacks. */
function frameKey(e: Pick<Frame, 'trialId' | 'kind' | 'step' | 'provisional' | 'volIdx'>): string {
  return `${e.trialId}/${e.kind}/${e.step}/${e.provisional}/${e.volIdx}`;
}

/** Contents of a record, read back for replay and resume. */
export interface RecordContents {
  dir: string;
  run: SavedRun;
  /** The run-info event as recorded (affine as Float64Array). */
  info: RunInfo;
  /** Volume files by index, with their events.jsonl line when it was written. */
  volumes: { volIdx: number; file: string; line?: RecordedVolume }[];
  /** Every events.jsonl line in order. */
  events: ({ type: string; recordedAtEpochMs?: number } & Record<string, unknown>)[];
  /** Final trials recorded in trials.jsonl, by trial id. */
  finalTrials: Map<number, { trialId: number; stimulusId: string; row: number; voxels: number }>;
  /** Trials announced during the run (feedback channel), in order. */
  announcedTrials: TrialSpec[];
  /** Gaps recorded, by index. */
  gaps: Set<number>;
  /** Time of the last line written, ms since the epoch (undefined for records without it). */
  lastWrittenEpochMs?: number;
  /** Problems found while reading (partial last lines, volume files without a line). */
  problems: string[];
}

/** Reads a record back. Throws RECORD_INVALID when `dir` is not a mindeye-rt record. */
export function readRecord(dir: string): RecordContents {
  const runFile = join(dir, 'run.json');
  if (!existsSync(runFile)) {
    throw new MindeyeError('RECORD_INVALID', 'Not a mindeye-rt session record: run.json is missing.', {
      file: runFile, field: '--record', fix: 'pass a directory written by --record-to (watch and serve write sessions/<date-time>/)',
    });
  }
  let run: SavedRun;
  try {
    run = JSON.parse(readFileSync(runFile, 'utf8')) as SavedRun;
  } catch (err) {
    throw new MindeyeError('RECORD_INVALID', 'The record\'s run.json is not valid JSON.', {
      file: runFile, field: 'run.json', value: (err as Error).message, fix: 'restore run.json from a backup, or record the session again',
    });
  }
  if (!READABLE_FORMATS.includes(run.format)) {
    throw new MindeyeError('RECORD_INVALID', 'Unsupported record format.', {
      file: runFile, field: 'format', value: run.format, expected: READABLE_FORMATS.join(' or '), fix: 'record the session again with this version',
    });
  }
  if (!Array.isArray(run.affine) || run.affine.length !== 16 || !Array.isArray(run.shape) || !(run.trSec >= 0)) {
    throw new MindeyeError('RECORD_INVALID', 'The record\'s run.json lacks the grid or the TR.', {
      file: runFile, field: 'affine/shape/trSec', value: JSON.stringify({ shape: run.shape, trSec: run.trSec }),
      expected: 'shape [x, y, z], trSec >= 0 and a 16-value affine', fix: 'record the session again',
    });
  }
  const problems: string[] = [];
  const eventsFile = join(dir, 'events.jsonl');
  const events = readJsonLines<RecordContents['events'][number]>(eventsFile);
  if (events.partialTail) problems.push(`${eventsFile}: the last line is incomplete (the recording process was killed while writing it); it was skipped`);
  const otherInvalid = events.invalidLines.filter((n, i) => !(events.partialTail && i === 0));
  if (otherInvalid.length > 0) problems.push(`${eventsFile}: ${otherInvalid.length} line(s) are not valid JSON and were skipped (line ${otherInvalid.slice(0, 5).join(', ')})`);

  const volumeLines = new Map<number, RecordedVolume>();
  const gaps = new Set<number>();
  const announcedTrials: TrialSpec[] = [];
  for (const e of events.lines) {
    if (e.type === 'volume') volumeLines.set(Number(e.volIdx), e as unknown as RecordedVolume);
    else if (e.type === 'gap') gaps.add(Number(e.volIdx));
    else if (e.type === 'trial-added' && e.trial) announcedTrials.push(e.trial as TrialSpec);
  }
  const volumes = [...recordedVolumeFiles(dir)].sort((a, b) => a[0] - b[0]).map(([volIdx, file]) => ({ volIdx, file, line: volumeLines.get(volIdx) }));
  const unlisted = volumes.filter((v) => v.line === undefined).map((v) => v.volIdx);
  if (unlisted.length > 0 && run.format === RECORD_FORMAT) {
    problems.push(`volume(s) ${unlisted.join(', ')} have a file but no events.jsonl line (killed between the two writes): their receive time is unknown`);
  }
  const trials = readJsonLines<{ trialId: number; stimulusId: string; row: number; voxels: number }>(join(dir, 'trials.jsonl'));
  if (trials.partialTail) problems.push(`${join(dir, 'trials.jsonl')}: the last line is incomplete; it was skipped`);
  const lastWrittenEpochMs = [...events.lines].reverse().find((e) => typeof e.recordedAtEpochMs === 'number')?.recordedAtEpochMs;
  const { format: _format, processing: _p, modelDir: _m, command: _c, ...info } = run;
  return {
    dir, run, events: events.lines, volumes, gaps, announcedTrials, lastWrittenEpochMs, problems,
    info: { ...info, type: 'run-info', affine: Float64Array.from(run.affine) },
    finalTrials: new Map(trials.lines.map((t) => [t.trialId, t])),
  };
}

/** Reads the record in `dir` when it contains a run.json (a session to resume), else returns undefined. */
export function existingRecord(dir: string | undefined): RecordContents | undefined {
  if (dir === undefined || !existsSync(join(dir, 'run.json'))) return undefined;
  return readRecord(dir);
}
