/**
 * The dashboard's view of a session: a reducer over PipelineEvents. It keeps what a client
 * connecting mid-run needs to draw every panel at once: run info, trial states, the motion
 * series, latency samples, metrics, warnings, and the images of recent trials.
 *
 * Memory is bounded: series are capped (MAX_SERIES points, oldest dropped first) and only the
 * newest GALLERY_SIZE trials keep their images. Volumes are never stored; the server turns
 * the newest one into a mosaic image (mosaic.ts).
 */
import type {
  Decoded,
  Frame,
  FrameKind,
  MaskedVolume,
  PipelineEvent,
  QualityFlag,
  RetrievalHit,
  RunInfo,
  Shape3,
  TrialEstimate,
  TrialSpec,
} from '../src/events.ts';

/** Motion and FD points, latency samples and warnings kept per series. */
export const MAX_SERIES = 5000;
/** Past trials whose images are kept for the gallery and sent to connecting clients. */
export const GALLERY_SIZE = 48;
const MAX_WARNINGS = 300;

/**
 * Image-quality metrics that a session may attach to a non-provisional Frame event: PixCorr and
 * SSIM of that frame against the ground-truth stimulus, as the report defines them. The dashboard
 * shows them when present (low-level frames and final frames separately).
 */
export interface FrameMetrics {
  pixCorr?: number;
  ssim?: number;
}

export interface RunView {
  runId: string;
  subject?: string;
  session?: string;
  run?: string;
  trSec: number;
  shape: Shape3;
  expectedVolumes?: number;
  source: string;
  motionCorrection: boolean;
  simulated: boolean;
}

export interface MotionPoint {
  volIdx: number;
  acqTimeSec: number;
  translationMm: [number, number, number];
  rotationRad: [number, number, number];
  fdMm: number;
  dvars: number;
  flags: QualityFlag[];
}

export interface TrialView extends TrialSpec {
  /** Volumes since onset of the newest estimate, and whether it was the final one. */
  estimate?: { volumesSinceOnset: number; final: boolean; volIdx: number };
  decoded?: { final: boolean; topK: RetrievalHit[]; trueRank?: number; candidateCount?: number; volIdx: number };
  /** Frames received for this trial, and whether its final image has arrived. */
  frameCount: number;
  rendered: boolean;
  pixCorrLowLevel?: number;
  ssimLowLevel?: number;
  pixCorr?: number;
  ssim?: number;
  /** Latency of the trial's paths in ms (same names as the report's latencyMs). */
  latencyMs: Record<string, number>;
}

export interface StoredFrame {
  header: {
    runId: string;
    trialId: number;
    volIdx: number;
    kind: FrameKind;
    provisional: boolean;
    step: number;
    stepCount: number;
    mime: string;
    width: number;
    height: number;
    sentAtMs: number;
  };
  image: Uint8Array;
}

export interface WarningView {
  kind: string;
  volIdx?: number;
  trialId?: number;
  message: string;
  code?: string;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  max: number;
  last: number;
}

export interface MetricsView {
  decodedTrials: number;
  rankedTrials: number;
  retrievalTop1?: number;
  meanRank?: number;
  retrievalChance?: number;
  pixCorrLowLevelMean?: number;
  ssimLowLevelMean?: number;
  pixCorrMean?: number;
  ssimMean?: number;
}

export interface SnapshotState {
  run?: RunView;
  ended?: { volumesReceived: number; error?: string };
  volumesReceived: number;
  lastVolIdx: number;
  motion: MotionPoint[];
  trials: TrialView[];
  currentTrialId?: number;
  latency: Record<string, LatencySummary>;
  /** Recent latency samples per stage, oldest first: [volIdx or trialId, durationMs]. */
  latencySamples: Record<string, [number, number][]>;
  metrics: MetricsView;
  warnings: WarningView[];
  warningCounts: Record<string, number>;
}

export class DashboardState {
  run?: RunView;
  ended?: { volumesReceived: number; error?: string };
  volumesReceived = 0;
  lastVolIdx = -1;
  readonly motion: MotionPoint[] = [];
  readonly trials = new Map<number, TrialView>();
  currentTrialId?: number;
  readonly warnings: WarningView[] = [];
  readonly warningCounts: Record<string, number> = {};
  /** Warnings added since the start, including those no longer kept in `warnings`. */
  warningTotal = 0;
  /**
   * Volumes already listed as flagged. The preprocess stage publishes a `flagged` warning and a
   * masked-volume event with flags for the same volume, and the panel lists it once.
   */
  private readonly flaggedVolumes = new Set<number>();
  private readonly latencyAll = new Map<string, number[]>();
  private readonly latencySamples = new Map<string, [number, number][]>();
  /** Final-estimate time (ms) per trial, for the beta-to-frame paths. */
  private readonly finalEstimateAtMs = new Map<number, number>();
  /** receivedAtMs of the volume behind each trial's final decode, for volumeToFirstFrame. */
  private readonly finalDecodedReceivedAtMs = new Map<number, number>();
  /** receivedAtMs of recent volumes, for the preprocess path (volume received to GLM done). */
  private readonly volumeReceivedAtMs = new Map<number, number>();
  private readonly firstFrameSeen = new Set<number>();
  private readonly firstPreviewSeen = new Set<number>();
  /** Images of the current and past trials: newest low-level, newest preview and final. */
  readonly images = new Map<number, { lowLevel?: StoredFrame; preview?: StoredFrame; final?: StoredFrame }>();

  apply(event: PipelineEvent): void {
    switch (event.type) {
      case 'run-info':
        this.applyRunInfo(event);
        break;
      case 'volume':
        this.volumesReceived += 1;
        this.lastVolIdx = Math.max(this.lastVolIdx, event.volIdx);
        this.volumeReceivedAtMs.set(event.volIdx, event.receivedAtMs);
        if (this.volumeReceivedAtMs.size > 64) this.volumeReceivedAtMs.delete(this.volumeReceivedAtMs.keys().next().value as number);
        break;
      case 'masked-volume':
        this.applyMaskedVolume(event);
        break;
      case 'trial-estimate':
        this.applyEstimate(event);
        break;
      case 'decoded':
        this.applyDecoded(event);
        break;
      case 'frame':
        this.applyFrame(event);
        break;
      case 'stage-timing':
        this.addLatency(event.stage, event.volIdx ?? event.trialId ?? -1, event.endMs - event.startMs);
        if (event.stage === 'glm' && event.volIdx !== undefined) {
          const receivedAtMs = this.volumeReceivedAtMs.get(event.volIdx);
          if (receivedAtMs !== undefined) this.addLatency('preprocess', event.volIdx, event.endMs - receivedAtMs);
        }
        break;
      case 'gap':
        this.addWarning({ kind: 'gap', volIdx: event.volIdx, message: event.reason });
        break;
      case 'warning':
        if (event.kind === 'flagged' && event.volIdx !== undefined) {
          if (this.flaggedVolumes.has(event.volIdx)) break;
          this.flaggedVolumes.add(event.volIdx);
        }
        this.addWarning({ kind: event.kind, volIdx: event.volIdx, trialId: event.trialId, message: event.message, code: event.code });
        break;
      case 'run-end':
        this.ended = { volumesReceived: event.volumesReceived, error: event.error };
        break;
    }
  }

  private applyRunInfo(event: RunInfo): void {
    this.run = {
      runId: event.runId,
      subject: event.subject,
      session: event.session,
      run: event.run,
      trSec: event.trSec,
      shape: event.shape,
      expectedVolumes: event.expectedVolumes,
      source: event.source,
      motionCorrection: event.motionCorrection,
      simulated: event.simulated === true,
    };
    for (const spec of event.trials ?? []) {
      this.trial(spec.trialId, spec);
    }
  }

  private applyMaskedVolume(event: MaskedVolume): void {
    pushCapped(this.motion, {
      volIdx: event.volIdx,
      acqTimeSec: event.acqTimeSec,
      translationMm: event.motion.translationMm,
      rotationRad: event.motion.rotationRad,
      fdMm: event.fdMm,
      dvars: event.dvars,
      flags: event.flags,
    });
    if (event.flags.length > 0 && !this.flaggedVolumes.has(event.volIdx)) {
      this.flaggedVolumes.add(event.volIdx);
      this.addWarning({ kind: 'flagged', volIdx: event.volIdx, message: `volume ${event.volIdx} flagged: ${event.flags.join(', ')} (FD ${event.fdMm.toFixed(2)} mm)` });
    }
  }

  private applyEstimate(event: TrialEstimate): void {
    const trial = this.trial(event.trialId, { stimulusId: event.stimulusId });
    trial.estimate = { volumesSinceOnset: event.volumesSinceOnset, final: event.final, volIdx: event.volIdx };
    if (event.final) this.finalEstimateAtMs.set(event.trialId, event.estimatedAtMs);
  }

  private applyDecoded(event: Decoded): void {
    const trial = this.trial(event.trialId, { stimulusId: event.stimulusId });
    trial.decoded = {
      final: event.final,
      topK: event.topK,
      trueRank: event.trueRank,
      candidateCount: event.candidateCount,
      volIdx: event.volIdx,
    };
    this.currentTrialId = event.trialId;
    if (event.final) {
      this.finalDecodedReceivedAtMs.set(event.trialId, event.receivedAtMs);
      const ms = event.decodedAtMs - event.receivedAtMs;
      trial.latencyMs.volumeToDecode = ms;
      this.addLatency('volumeToDecode', event.trialId, ms);
    }
  }

  private applyFrame(event: Frame): void {
    const trial = this.trial(event.trialId, {});
    trial.frameCount += 1;
    this.currentTrialId = event.trialId;
    const stored: StoredFrame = {
      header: {
        runId: event.runId,
        trialId: event.trialId,
        volIdx: event.volIdx,
        kind: event.kind,
        provisional: event.provisional,
        step: event.step,
        stepCount: event.stepCount,
        mime: event.mime,
        width: event.width,
        height: event.height,
        sentAtMs: event.sentAtMs,
      },
      image: event.image,
    };
    const slot = this.images.get(event.trialId) ?? {};
    if (event.kind === 'low-level') slot.lowLevel = stored;
    else if (event.kind === 'img2img-step') slot.preview = stored;
    else slot.final = stored;
    // Re-inserting moves the trial to the end, so eviction drops the trials updated longest ago.
    this.images.delete(event.trialId);
    this.images.set(event.trialId, slot);
    this.evictOldImages();

    if (event.kind === 'final' && !event.provisional) trial.rendered = true;
    const metrics = event as Frame & FrameMetrics;
    if (!event.provisional && event.kind === 'low-level') {
      if (typeof metrics.pixCorr === 'number') trial.pixCorrLowLevel = metrics.pixCorr;
      if (typeof metrics.ssim === 'number') trial.ssimLowLevel = metrics.ssim;
    }
    if (!event.provisional && event.kind === 'final') {
      if (typeof metrics.pixCorr === 'number') trial.pixCorr = metrics.pixCorr;
      if (typeof metrics.ssim === 'number') trial.ssim = metrics.ssim;
    }

    this.addFrameLatency(event, trial);
  }

  /**
   * Beta-to-frame paths count only non-provisional frames sent after the trial's final estimate,
   * as the run report does.
   */
  private addFrameLatency(event: Frame, trial: TrialView): void {
    const betaMs = this.finalEstimateAtMs.get(event.trialId);
    if (betaMs === undefined || event.provisional || event.sentAtMs < betaMs) return;
    const fromBeta = event.sentAtMs - betaMs;
    if (!this.firstFrameSeen.has(event.trialId)) {
      this.firstFrameSeen.add(event.trialId);
      trial.latencyMs.betaToFirstFrame = fromBeta;
      trial.latencyMs.volumeToFirstFrame = event.sentAtMs - (this.finalDecodedReceivedAtMs.get(event.trialId) ?? event.receivedAtMs);
      this.addLatency('betaToFirstFrame', event.trialId, fromBeta);
      this.addLatency('volumeToFirstFrame', event.trialId, trial.latencyMs.volumeToFirstFrame);
    }
    if (event.kind === 'img2img-step' && !this.firstPreviewSeen.has(event.trialId)) {
      this.firstPreviewSeen.add(event.trialId);
      trial.latencyMs.betaToFirstPreview = fromBeta;
      this.addLatency('betaToFirstPreview', event.trialId, fromBeta);
    }
    if (event.kind === 'final' && trial.latencyMs.betaToFinalFrame === undefined) {
      trial.latencyMs.betaToFinalFrame = fromBeta;
      this.addLatency('betaToFinalFrame', event.trialId, fromBeta);
    }
  }

  private evictOldImages(): void {
    for (const id of this.images.keys()) {
      if (this.images.size <= GALLERY_SIZE) break;
      this.images.delete(id);
    }
  }

  private trial(trialId: number, spec: Partial<TrialSpec>): TrialView {
    let trial = this.trials.get(trialId);
    if (trial === undefined) {
      trial = {
        trialId,
        onsetSec: spec.onsetSec ?? Number.NaN,
        durationSec: spec.durationSec ?? Number.NaN,
        stimulusId: spec.stimulusId ?? '',
        testImage: spec.testImage,
        frameCount: 0,
        rendered: false,
        latencyMs: {},
      };
      this.trials.set(trialId, trial);
    } else {
      if (spec.onsetSec !== undefined) trial.onsetSec = spec.onsetSec;
      if (spec.durationSec !== undefined) trial.durationSec = spec.durationSec;
      if (spec.stimulusId !== undefined && spec.stimulusId !== '') trial.stimulusId = spec.stimulusId;
      if (spec.testImage !== undefined) trial.testImage = spec.testImage;
    }
    return trial;
  }

  private addWarning(warning: WarningView): void {
    pushCapped(this.warnings, warning, MAX_WARNINGS);
    this.warningTotal += 1;
    this.warningCounts[warning.kind] = (this.warningCounts[warning.kind] ?? 0) + 1;
  }

  private addLatency(stage: string, key: number, durationMs: number): void {
    if (!Number.isFinite(durationMs)) return;
    let all = this.latencyAll.get(stage);
    let samples = this.latencySamples.get(stage);
    if (all === undefined || samples === undefined) {
      all = [];
      samples = [];
      this.latencyAll.set(stage, all);
      this.latencySamples.set(stage, samples);
    }
    pushCapped(all, durationMs);
    pushCapped(samples, [key, durationMs]);
  }

  /** Warnings added after the total was `total`, as far as they are still kept. */
  warningsSince(total: number): WarningView[] {
    const added = Math.min(this.warningTotal - total, this.warnings.length);
    return added > 0 ? this.warnings.slice(-added) : [];
  }

  latencySummary(): Record<string, LatencySummary> {
    const out: Record<string, LatencySummary> = {};
    for (const [stage, values] of this.latencyAll) {
      if (values.length === 0) continue;
      const sorted = Float64Array.from(values).sort();
      out[stage] = {
        count: values.length,
        p50: percentile(sorted, 0.5),
        p95: percentile(sorted, 0.95),
        max: sorted[sorted.length - 1],
        last: values[values.length - 1],
      };
    }
    return out;
  }

  metrics(): MetricsView {
    let decodedTrials = 0;
    let rankedTrials = 0;
    let top1 = 0;
    let rankSum = 0;
    let candidateCount: number | undefined;

    const values: Record<'pixCorrLowLevel' | 'ssimLowLevel' | 'pixCorr' | 'ssim', number[]> = { pixCorrLowLevel: [], ssimLowLevel: [], pixCorr: [], ssim: [] };
    for (const trial of this.trials.values()) {
      if (trial.decoded?.final === true) {
        decodedTrials += 1;
        // Like the run report, training-set trials (testImage false) do not count for retrieval.
        if (trial.decoded.trueRank !== undefined && trial.testImage !== false) {
          rankedTrials += 1;
          rankSum += trial.decoded.trueRank;
          if (trial.decoded.trueRank === 1) top1 += 1;
        }
        if (trial.decoded.candidateCount !== undefined) candidateCount = trial.decoded.candidateCount;
      }
      for (const key of ['pixCorrLowLevel', 'ssimLowLevel', 'pixCorr', 'ssim'] as const) {
        const value = trial[key];
        if (value !== undefined) values[key].push(value);
      }
    }

    const view: MetricsView = { decodedTrials, rankedTrials };
    if (rankedTrials > 0) {
      view.retrievalTop1 = top1 / rankedTrials;
      view.meanRank = rankSum / rankedTrials;
    }
    if (candidateCount !== undefined && candidateCount > 0) view.retrievalChance = 1 / candidateCount;
    if (values.pixCorrLowLevel.length > 0) view.pixCorrLowLevelMean = mean(values.pixCorrLowLevel);
    if (values.ssimLowLevel.length > 0) view.ssimLowLevelMean = mean(values.ssimLowLevel);
    if (values.pixCorr.length > 0) view.pixCorrMean = mean(values.pixCorr);
    if (values.ssim.length > 0) view.ssimMean = mean(values.ssim);
    return view;
  }

  snapshot(): SnapshotState {
    const latencySamples: Record<string, [number, number][]> = {};
    for (const [stage, samples] of this.latencySamples) latencySamples[stage] = samples.slice(-500);
    return {
      run: this.run,
      ended: this.ended,
      volumesReceived: this.volumesReceived,
      lastVolIdx: this.lastVolIdx,
      motion: this.motion,
      trials: [...this.trials.values()].sort((a, b) => a.trialId - b.trialId),
      currentTrialId: this.currentTrialId,
      latency: this.latencySummary(),
      latencySamples,
      metrics: this.metrics(),
      warnings: this.warnings.slice(-100),
      warningCounts: this.warningCounts,
    };
  }

  /** Images a connecting client needs: every kept trial's newest frames, least recently updated trial first. */
  snapshotFrames(): StoredFrame[] {
    const out: StoredFrame[] = [];
    for (const slot of this.images.values()) {
      for (const frame of [slot.lowLevel, slot.preview, slot.final]) if (frame !== undefined) out.push(frame);
    }
    return out;
  }
}

function pushCapped<T>(list: T[], item: T, cap = MAX_SERIES): void {
  list.push(item);
  if (list.length > cap) list.splice(0, list.length - cap);
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Nearest-rank quantile (q in [0, 1]) of sorted values, the definition the run report uses. */
export function percentile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
