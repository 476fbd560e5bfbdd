/**
 * Sessions for the dashboard tests.
 *
 * `TestSession` is a DashboardSession whose events the test pushes itself; it records control
 * actions and feedback input. `emitHaxbyVolumes` streams the real Haxby run committed under
 * data/ through it (run-info, volume and masked-volume events with the brain mask), and
 * `emitTrial` adds a decoded trial with real JPEG frames encoded by sharp, so that frame sizes
 * and the binary path are those of a real session.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { Subject } from 'rxjs';
import type { FeedbackInput, DashboardSession, SessionState } from '../../dashboard/server.ts';
import { nowMs, type Frame, type PipelineEvent, type TrialSpec } from '../../src/events.ts';
import { formatSpeed, type Speed } from '../../src/ingest/source.ts';
import { readNifti, readNiftiHeader, streamNiftiVolumes } from '../../src/io/nifti.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const HAXBY_RUN_DIR = `${REPO_ROOT}data/haxby2001-sub001/sub001/BOLD/task001_run001`;
export const HAXBY_BOLD = `${HAXBY_RUN_DIR}/bold_1slice.nii.gz`;
export const HAXBY_EVENTS = `${HAXBY_RUN_DIR}/bold_events.tsv`;
export const HAXBY_MASK = `${REPO_ROOT}data/haxby2001-sub001/sub001/masks/1slice/brain.nii.gz`;
export const TOKEN = 'test-token-0123456789';

export class TestSession implements DashboardSession {
  readonly bus = new Subject<PipelineEvent>();
  readonly events$ = this.bus.asObservable();
  readonly inputs: FeedbackInput[] = [];
  readonly actions: string[] = [];
  readonly images = new Map<string, Uint8Array>();
  state: SessionState = 'idle';
  speed: Speed = { kind: 'realtime' };
  simulated = false;
  mask?: Uint8Array;
  /** Makes onFeedbackInput throw, to test how the server reports a session failure. */
  failInput = false;

  readonly control = {
    start: (): void => { this.actions.push('start'); this.state = 'running'; },
    pause: (): void => { this.actions.push('pause'); this.state = 'paused'; },
    resume: (): void => { this.actions.push('resume'); this.state = 'running'; },
    stop: (): void => { this.actions.push('stop'); this.state = 'stopped'; },
    setSpeed: (speed: Speed): void => { this.actions.push(`speed ${formatSpeed(speed)}`); this.speed = speed; },
    status: (): { state: SessionState; speed: string } => ({ state: this.state, speed: formatSpeed(this.speed) }),
  };

  onFeedbackInput(msg: FeedbackInput): void {
    if (this.failInput) throw new Error('trial table is closed');
    this.inputs.push(msg);
  }

  async image(kind: 'stimulus' | 'candidate', id: string): Promise<Uint8Array | undefined> {
    if (id === 'unreadable') throw new Error('HDF5 read failed at row 12');
    return this.images.get(`${kind}/${id}`);
  }

  emit(event: PipelineEvent): void {
    this.bus.next(event);
  }
}

export function readHaxbyTrials(): TrialSpec[] {
  const lines = readFileSync(HAXBY_EVENTS, 'utf8').trim().split(/\r?\n/).slice(1);
  return lines.map((line, trialId) => {
    const [onset, duration, label] = line.split('\t');
    return { trialId, onsetSec: Number(onset), durationSec: Number(duration), stimulusId: label };
  });
}

export function readHaxbyMask(): Uint8Array {
  const mask = readNifti(HAXBY_MASK);
  return Uint8Array.from(mask.data, (v) => (v > 0 ? 1 : 0));
}

/**
 * Streams the Haxby run as run-info, volume and masked-volume events. Motion is the shift of
 * the intensity centroid from the first volume (mm); FD over `fdFlagMm` flags the volume.
 */
export async function emitHaxbyVolumes(session: TestSession, runId: string, opts: { maxVolumes?: number; fdFlagMm?: number } = {}): Promise<number> {
  const header = readNiftiHeader(HAXBY_BOLD);
  const mask = readHaxbyMask();
  session.emit({
    type: 'run-info',
    runId,
    subject: '1',
    run: '1',
    trSec: header.trSec,
    shape: header.shape,
    affine: header.affine,
    expectedVolumes: header.volumes,
    trials: readHaxbyTrials(),
    source: HAXBY_BOLD,
    motionCorrection: false,
    simulated: session.simulated,
  });
  let first: [number, number] | undefined;
  let previous: [number, number] = [0, 0];
  let count = 0;
  for await (const volume of streamNiftiVolumes(HAXBY_BOLD)) {
    if (opts.maxVolumes !== undefined && count >= opts.maxVolumes) break;
    const receivedAtMs = nowMs();
    const [nx, ny] = header.shape;
    let sum = 0;
    let cx = 0;
    let cy = 0;
    const values: number[] = [];
    for (let n = 0; n < volume.data.length; n++) {
      if (mask[n] === 0) continue;
      const v = volume.data[n];
      values.push(v);
      sum += v;
      cx += v * (n % nx);
      cy += v * (Math.floor(n / nx) % ny);
    }
    const centroid: [number, number] = [(cx / sum) * header.voxelSizeMm[0], (cy / sum) * header.voxelSizeMm[1]];
    first ??= centroid;
    const translation: [number, number, number] = [centroid[0] - first[0], centroid[1] - first[1], 0];
    const fdMm = count === 0 ? 0 : Math.abs(translation[0] - previous[0]) + Math.abs(translation[1] - previous[1]);
    previous = [translation[0], translation[1]];
    session.emit({
      type: 'volume', runId, volIdx: volume.index, acqTimeSec: volume.index * header.trSec, receivedAtMs,
      shape: header.shape, affine: header.affine, data: volume.data, sourceId: `${HAXBY_BOLD}#${volume.index}`,
    });
    session.emit({
      type: 'masked-volume', runId, volIdx: volume.index, acqTimeSec: volume.index * header.trSec, receivedAtMs,
      motion: { translationMm: translation, rotationRad: [0, 0, 0] }, fdMm, dvars: 0,
      values: Float32Array.from(values), flags: fdMm > (opts.fdFlagMm ?? 0.5) ? ['fd'] : [],
    });
    session.emit({ type: 'stage-timing', runId, stage: 'glm', volIdx: volume.index, startMs: receivedAtMs, endMs: nowMs() });
    count += 1;
  }
  return count;
}

/** Encodes a size x size JPEG of smooth noise (seeded), about 10-40 kB at 256 px. */
export async function noiseJpeg(seed: number, size = 256, quality = 85): Promise<Uint8Array> {
  const raw = Buffer.alloc(size * size * 3);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let n = 0; n < raw.length; n++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    raw[n] = ((n % (size * 3)) + (state & 0x7f)) & 0xff;
  }
  const jpeg = await sharp(raw, { raw: { width: size, height: size, channels: 3 } }).jpeg({ quality }).toBuffer();
  return new Uint8Array(jpeg);
}

export interface TrialEmitOptions {
  runId: string;
  trialId: number;
  stimulusId: string;
  candidates: string[];
  /** 1-based rank given to the true stimulus. */
  trueRank: number;
  previewSteps: number;
  image: Uint8Array;
  volIdx?: number;
  /** Adds PixCorr and SSIM to the final frame. */
  metrics?: { pixCorr: number; ssim: number };
}

/** Emits a final estimate, a final decode and the trial's frames: low-level, img2img steps, final. */
export function emitTrial(session: TestSession, o: TrialEmitOptions): Frame[] {
  const volIdx = o.volIdx ?? o.trialId;
  const receivedAtMs = nowMs();
  const others = o.candidates.filter((c) => c !== o.stimulusId);
  const ranked = [...others];
  ranked.splice(o.trueRank - 1, 0, o.stimulusId);
  const topK = ranked.slice(0, 5).map((id, n) => ({ id, score: 1 - n * 0.1 }));
  session.emit({
    type: 'trial-estimate', runId: o.runId, volIdx, receivedAtMs, trialId: o.trialId, stimulusId: o.stimulusId,
    volumesSinceOnset: 6, betas: new Float64Array(4), normalizedBetas: new Float32Array(4), final: true, estimatedAtMs: nowMs(),
  });
  session.emit({
    type: 'decoded', runId: o.runId, volIdx, receivedAtMs, trialId: o.trialId, stimulusId: o.stimulusId, final: true,
    volumesSinceOnset: 6, estimatedAtMs: nowMs(), decodedAtMs: nowMs(), topK, trueRank: o.trueRank, candidateCount: o.candidates.length,
  } as PipelineEvent);
  const frames: Frame[] = [];
  const frame = (kind: Frame['kind'], step: number, stepCount: number, extra: object = {}): Frame => ({
    type: 'frame', runId: o.runId, volIdx, receivedAtMs, trialId: o.trialId, kind, provisional: false, step, stepCount,
    mime: 'image/jpeg', width: 256, height: 256, image: o.image, sentAtMs: nowMs(), ...extra,
  });
  frames.push(frame('low-level', 0, o.previewSteps));
  for (let step = 1; step <= o.previewSteps; step++) frames.push(frame('img2img-step', step, o.previewSteps));
  frames.push(frame('final', o.previewSteps, o.previewSteps, o.metrics ?? {}));
  for (const f of frames) {
    f.sentAtMs = nowMs();
    session.emit(f);
  }
  return frames;
}
