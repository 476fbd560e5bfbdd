/**
 * Typed events that stages pass to each other and publish on the run's event bus.
 *
 * Every event carries `runId`, the acquisition index `volIdx` (0-based) of the volume that
 * caused it and that volume's `receivedAtMs` (monotonic clock, `performance.now()`), so that
 * latency from scanner to screen can be measured on every path.
 *
 * Conventions: times carry their unit in the name (`trSec`, `onsetSec`, `receivedAtMs`).
 * Volumes are Float32Array in NIfTI order (x fastest). Affines are Float64Array(16), row-major,
 * mapping voxel indices (i, j, k) to RAS+ millimetres.
 */

export type Shape3 = [number, number, number];

/** Trial in a run's design: onset and duration in seconds, stimulus id or category label. */
export interface TrialSpec {
  trialId: number;
  onsetSec: number;
  durationSec: number;
  /** NSD 73k id (1-based, as a string) or a category label such as "face". */
  stimulusId: string;
  /** True when the stimulus belongs to the held-out test set (demo and NSD shared images). */
  testImage?: boolean;
}

export interface RunInfo {
  type: 'run-info';
  runId: string;
  subject?: string;
  session?: string;
  run?: string;
  trSec: number;
  shape: Shape3;
  affine: Float64Array;
  /** Volume count when the source knows it in advance (replays). */
  expectedVolumes?: number;
  trials?: TrialSpec[];
  /** Human-readable description of the source, such as a file path. */
  source: string;
  motionCorrection: boolean;
  /** True for data produced by `mindeye-rt simulate`. */
  simulated?: boolean;
}

export interface Volume {
  type: 'volume';
  runId: string;
  volIdx: number;
  acqTimeSec: number;
  receivedAtMs: number;
  shape: Shape3;
  affine: Float64Array;
  data: Float32Array;
  /** File path or message id the volume came from. */
  sourceId: string;
}

export type QualityFlag = 'fd' | 'dvars' | 'spike' | 'nan' | 'all-zero' | 'jump' | 'no-overlap';

export interface MotionParams {
  /** Translations in mm along x, y, z (RAS+). */
  translationMm: [number, number, number];
  /** Rotations in radians about x, y, z. */
  rotationRad: [number, number, number];
}

export interface MaskedVolume {
  type: 'masked-volume';
  runId: string;
  volIdx: number;
  acqTimeSec: number;
  receivedAtMs: number;
  motion: MotionParams;
  /** Framewise displacement (Power et al. 2012, 50 mm sphere) in mm; 0 for the first volume. */
  fdMm: number;
  /** Root mean square of the volume-to-volume change inside the mask, in signal units. */
  dvars: number;
  /** Voxel values inside the mask, in mask order (length V). */
  values: Float32Array;
  flags: QualityFlag[];
}

export interface TrialEstimate {
  type: 'trial-estimate';
  runId: string;
  volIdx: number;
  receivedAtMs: number;
  trialId: number;
  stimulusId: string;
  /** Volumes acquired from the trial's onset up to and including volIdx. */
  volumesSinceOnset: number;
  betas: Float64Array;
  normalizedBetas: Float32Array;
  final: boolean;
  /** performance.now() when the estimate was computed. */
  estimatedAtMs: number;
}

export interface RetrievalHit {
  id: string;
  score: number;
}

export interface Decoded {
  type: 'decoded';
  runId: string;
  volIdx: number;
  receivedAtMs: number;
  trialId: number;
  stimulusId: string;
  final: boolean;
  /** Volumes from the trial's onset that the estimate behind this decode used. */
  volumesSinceOnset: number;
  estimatedAtMs: number;
  decodedAtMs: number;
  retrievalEmbedding?: Float32Array;
  priorEmbedding?: Float32Array;
  lowLevelLatents?: Float32Array;
  /** Best candidates first: image ids for an image bank, labels for a classifier. */
  topK: RetrievalHit[];
  /** 1-based rank of the true stimulus among all candidates, when it is one of them. */
  trueRank?: number;
  candidateCount?: number;
}

export type FrameKind = 'low-level' | 'img2img-step' | 'final';

export interface Frame {
  type: 'frame';
  runId: string;
  volIdx: number;
  receivedAtMs: number;
  trialId: number;
  kind: FrameKind;
  provisional: boolean;
  step: number;
  stepCount: number;
  mime: 'image/jpeg' | 'image/webp' | 'image/png';
  width: number;
  height: number;
  image: Uint8Array;
  sentAtMs: number;
}

export interface StageTiming {
  type: 'stage-timing';
  runId: string;
  stage: string;
  volIdx?: number;
  trialId?: number;
  startMs: number;
  endMs: number;
}

export interface Gap {
  type: 'gap';
  runId: string;
  volIdx: number;
  reason: string;
}

export type WarningKind = 'duplicate' | 'late' | 'invalid' | 'corrupt' | 'incomplete' | 'skipped' | 'flagged' | 'other';

export interface PipelineWarning {
  type: 'warning';
  runId: string;
  kind: WarningKind;
  volIdx?: number;
  trialId?: number;
  message: string;
  code?: string;
}

/** A trial announced during the run (a stimulus onset sent by the stimulus program). */
export interface TrialAdded {
  type: 'trial-added';
  runId: string;
  trial: TrialSpec;
}

export interface RunEnd {
  type: 'run-end';
  runId: string;
  volumesReceived: number;
  endedAtMs: number;
  error?: string;
}

export type PipelineEvent =
  | RunInfo
  | Volume
  | MaskedVolume
  | TrialEstimate
  | Decoded
  | Frame
  | StageTiming
  | Gap
  | PipelineWarning
  | TrialAdded
  | RunEnd;

/** Monotonic clock in milliseconds; the one clock every event's `...Ms` field uses. */
export function nowMs(): number {
  return performance.now();
}
