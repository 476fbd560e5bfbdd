/**
 * The run report (`--report FILE.json`): per-trial results and latencies, and a summary with
 * counts, retrieval metrics, latency percentiles per stage, throughput and peak memory.
 * A metric that cannot be computed (no ground truth, no such head) is omitted, never null.
 * Retrieval, image and feature metrics cover test trials only (`testImage` not false); their
 * definitions are in docs/evaluation.md.
 *
 * Latency definitions (ms, monotonic clock):
 * - preprocess: volume received -> masked volume and GLM update done
 * - decode: one onnxruntime decode call (per trial estimate)
 * - volumeToDecode: the volume that closed a trial's window received -> its final decode done
 * - render: one frame's render work; betaToFirstFrame / betaToFirstPreview / betaToFinalFrame:
 *   final betas estimated -> the trial's first frame / first img2img preview / final frame sent
 *   after them; volumeToFirstFrame: window-closing volume received -> first frame sent
 */
import type { Decoded, Frame, PipelineEvent, RunInfo, StageTiming, TrialSpec } from '../events.ts';
import { brainRetrieval } from '../decode/retrieval.ts';
import { oneLineMessage } from '../errors.ts';
import { logger } from '../log.ts';
import { anytimeCurve } from '../eval/anytime.ts';
import { meanTopOne, type AmongNSettings } from '../eval/sampling.ts';
import type { FeatureMetricResult } from '../eval/features.ts';
import { DEFAULT_EVAL_DRAWS } from '../eval/options.ts';

export interface TrialReport {
  trialId: number;
  stimulusId: string;
  onsetSec: number;
  testImage?: boolean;
  frames: number;
  final?: {
    retrievalRank?: number;
    pixCorrLowLevel?: number;
    ssimLowLevel?: number;
    pixCorr?: number;
    ssim?: number;
  };
  latencyMs?: {
    betaToFirstFrame?: number;
    betaToFirstPreview?: number;
    betaToFinalFrame?: number;
    volumeToFirstFrame?: number;
  };
}

export interface Percentiles { p50: number; p95: number; p99: number; max: number; }

export interface RunReport {
  run: { source: string; trSec: number; volumeCount: number; trialCount: number; model: string; device: string; motion: boolean; speed: string; simulated?: boolean };
  trials: TrialReport[];
  summary: Record<string, unknown>;
}

export function percentiles(values: number[]): Percentiles | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return { p50: round(at(0.5)), p95: round(at(0.95)), p99: round(at(0.99)), max: round(s[s.length - 1]) };
}

function mean(values: number[]): number | undefined {
  return values.length === 0 ? undefined : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Candidate count used by one retrieval evaluation, and whether the request was clamped. */
export interface CandidateUse {
  candidates: number;
  available: number;
  requested?: number;
  clamped: boolean;
}

/** Run-end evaluation results and settings (src/eval/run-eval.ts fills them in). */
export interface RunEvaluation {
  /** Top-1 among N: N (undefined: all available), draws per trial and seed. */
  settings: { candidates?: number; draws: number; seed: number };
  brainRetrieval?: { top1: number; trials: number } & CandidateUse;
  /** PixCorr of each decode's low-level image with the stimulus, by decodeKey (src/eval/anytime.ts). */
  lowLevelPixCorr: Map<string, number>;
  featureMetrics: Record<string, FeatureMetricResult>;
  warnings: string[];
}

/** Returns the candidate count to use: the request, or everything available when none or too many. */
export function useCandidates(requested: number | undefined, available: number): CandidateUse {
  const use: CandidateUse = { candidates: Math.min(requested ?? available, available), available, clamped: requested !== undefined && requested > available };
  if (requested !== undefined) use.requested = requested;
  return use;
}

/** Collects pipeline events into the report. Feed it every event of the run, in order. */
export class ReportCollector {
  info?: RunInfo;
  volumesReceived = 0;
  volumesProcessed = 0;
  volumesDropped = 0;
  volumesDuplicate = 0;
  gaps = 0;
  flaggedVolumes = 0;
  skipped = { img2img: 0, previews: 0, decodes: 0 };
  /** Bounded queues: their bound and the longest length seen, for `summary.queues`. */
  readonly queues: Record<string, { bound: number; highWater: number }> = {};
  private readonly stageMs = new Map<string, number[]>();
  private readonly volumeReceivedMs = new Map<number, number>();
  readonly finalDecoded = new Map<number, Decoded>();
  readonly decodedAll: Decoded[] = [];
  private readonly framesByTrial = new Map<number, Frame[]>();
  private readonly finalEstimateMs = new Map<number, number>();
  private firstVolumeMs?: number;
  private lastEventMs?: number;
  readonly extraTrialMetrics = new Map<number, NonNullable<TrialReport['final']>>();
  /** Corrupt or invalid input and skipped work the user must know about (first 20, one line each). */
  readonly problems: string[] = [];
  /** Summary fields computed by other stages (brain retrieval needs the image bank). */
  readonly extraSummary: Record<string, unknown> = {};
  /** Evaluation settings and results; its fields take precedence over extraSummary's. */
  readonly evaluation: RunEvaluation = {
    settings: { draws: DEFAULT_EVAL_DRAWS, seed: 0 }, lowLevelPixCorr: new Map(), featureMetrics: {}, warnings: [],
  };

  onEvent(e: PipelineEvent): void {
    switch (e.type) {
      case 'run-info':
        this.info = { ...e, trials: [...(e.trials ?? [])] };
        break;
      case 'trial-added':
        this.info?.trials?.push(e.trial);
        break;
      case 'volume':
        this.volumesReceived++;
        this.volumeReceivedMs.set(e.volIdx, e.receivedAtMs);
        this.firstVolumeMs ??= e.receivedAtMs;
        break;
      case 'masked-volume':
        this.volumesProcessed++;
        if (e.flags.length > 0) this.flaggedVolumes++;
        break;
      case 'gap':
        this.gaps++;
        break;
      case 'warning':
        if (e.kind === 'duplicate') this.volumesDuplicate++;
        else if (e.kind === 'invalid' || e.kind === 'corrupt' || e.kind === 'incomplete') {
          this.volumesDropped++;
          if (this.problems.length < 20) this.problems.push(oneLineMessage(e.message));
        }
        break;
      case 'stage-timing':
        this.onTiming(e);
        break;
      case 'trial-estimate':
        if (e.final) this.finalEstimateMs.set(e.trialId, e.estimatedAtMs);
        break;
      case 'decoded':
        this.decodedAll.push(e);
        if (e.final) {
          this.finalDecoded.set(e.trialId, e);
          this.push('volumeToDecode', e.decodedAtMs - e.receivedAtMs);
        }
        break;
      case 'frame': {
        const list = this.framesByTrial.get(e.trialId) ?? [];
        list.push(e);
        this.framesByTrial.set(e.trialId, list);
        break;
      }
      case 'run-end':
        this.lastEventMs = e.endedAtMs;
        break;
    }
  }

  private push(stage: string, ms: number): void {
    const list = this.stageMs.get(stage) ?? [];
    list.push(ms);
    this.stageMs.set(stage, list);
  }

  private onTiming(t: StageTiming): void {
    this.push(t.stage, t.endMs - t.startMs);
    if (t.stage === 'glm' && t.volIdx !== undefined) {
      const received = this.volumeReceivedMs.get(t.volIdx);
      if (received !== undefined) this.push('preprocess', t.endMs - received);
    }
  }

  framesOf(trialId: number): Frame[] {
    return this.framesByTrial.get(trialId) ?? [];
  }

  build(run: Omit<RunReport['run'], 'trSec' | 'volumeCount' | 'trialCount'>, wallMs: number): RunReport {
    const info = this.info;
    const specs: TrialSpec[] = info?.trials ?? [];
    const trials: TrialReport[] = [];
    const latency: Record<string, number[]> = { betaToFirstFrame: [], betaToFirstPreview: [], betaToFinalFrame: [], volumeToFirstFrame: [] };
    for (const spec of specs) {
      const decoded = this.finalDecoded.get(spec.trialId);
      const frames = this.framesOf(spec.trialId);
      const entry: TrialReport = { trialId: spec.trialId, stimulusId: spec.stimulusId, onsetSec: spec.onsetSec, frames: frames.length };
      if (spec.testImage !== undefined) entry.testImage = spec.testImage;
      const final: NonNullable<TrialReport['final']> = { ...(this.extraTrialMetrics.get(spec.trialId) ?? {}) };
      if (decoded?.trueRank !== undefined) final.retrievalRank = decoded.trueRank;
      if (Object.keys(final).length > 0) entry.final = final;
      const betaMs = this.finalEstimateMs.get(spec.trialId);
      if (betaMs !== undefined && frames.length > 0) {
        const after = frames.filter((f) => !f.provisional && f.sentAtMs >= betaMs);
        const first = after[0];
        const preview = after.find((f) => f.kind === 'img2img-step');
        const last = after.find((f) => f.kind === 'final');
        const l: NonNullable<TrialReport['latencyMs']> = {};
        if (first) {
          l.betaToFirstFrame = first.sentAtMs - betaMs;
          l.volumeToFirstFrame = first.sentAtMs - (decoded?.receivedAtMs ?? first.receivedAtMs);
        }
        if (preview) l.betaToFirstPreview = preview.sentAtMs - betaMs;
        if (last) l.betaToFinalFrame = last.sentAtMs - betaMs;
        for (const [k, v] of Object.entries(l)) latency[k].push(v as number);
        if (Object.keys(l).length > 0) entry.latencyMs = l;
      }
      trials.push(entry);
    }

    const summary: Record<string, unknown> = {
      volumesReceived: this.volumesReceived,
      volumesProcessed: this.volumesProcessed,
      volumesDropped: this.volumesDropped,
      volumesDuplicate: this.volumesDuplicate,
      gaps: this.gaps,
      volumesFlagged: this.flaggedVolumes,
      trialsDecoded: this.finalDecoded.size,
    };
    const isTest = (trialId: number) => specs.find((t) => t.trialId === trialId)?.testImage !== false;
    const ranked = [...this.finalDecoded.values()].filter((d) => d.trueRank !== undefined && d.candidateCount !== undefined);
    const evaluated = ranked.filter((d) => isTest(d.trialId));
    const evalSettings = this.evaluation.settings;
    let imageRetrieval: AmongNSettings | undefined;
    const evaluationSummary: Record<string, unknown> = { seed: evalSettings.seed, draws: evalSettings.draws };
    if (evaluated.length > 0) {
      const pool = Math.max(...evaluated.map((d) => d.candidateCount!));
      const use = useCandidates(evalSettings.candidates, pool);
      imageRetrieval = { candidates: use.candidates, draws: evalSettings.draws, seed: evalSettings.seed };
      summary.retrievalCandidates = use.candidates;
      summary.retrievalTop1 = meanTopOne(evaluated.map((d) => ({ key: d.trialId, pool: d.candidateCount!, better: d.trueRank! - 1 })), imageRetrieval);
      summary.retrievalChance = 1 / use.candidates;
      // 2-way compares the true candidate with each other one in turn, so it uses every candidate.
      const n = evaluated[0].candidateCount!;
      if (n > 1) summary.twoWayAccuracy = mean(evaluated.map((d) => (n - d.trueRank!) / (n - 1)));
      summary.retrievalTrials = evaluated.length;
      evaluationSummary.imageRetrieval = use;
      if (use.clamped) this.warnEvaluation(`--eval-candidates ${use.requested} exceeds the ${pool} retrieval candidates; image retrieval top-1 is among ${pool}`);
    }
    const metricMean = (key: keyof NonNullable<TrialReport['final']>, name: string) => {
      const values = trials.filter((t) => isTest(t.trialId)).map((t) => t.final?.[key]).filter((v): v is number => typeof v === 'number');
      const m = mean(values);
      if (m !== undefined) summary[name] = m;
    };
    metricMean('pixCorrLowLevel', 'pixCorrLowLevelMean');
    metricMean('ssimLowLevel', 'ssimLowLevelMean');
    metricMean('pixCorr', 'pixCorrMean');
    metricMean('ssim', 'ssimMean');
    Object.assign(summary, this.extraSummary);
    const brain = this.evaluation.brainRetrieval;
    if (brain) {
      summary.brainRetrievalTop1 = brain.top1;
      summary.brainRetrievalCandidates = brain.candidates;
      const { top1: _top1, trials: _trials, ...use } = brain;
      evaluationSummary.brainRetrieval = use;
    }
    if (Object.keys(this.evaluation.featureMetrics).length > 0) summary.featureMetrics = { ...this.evaluation.featureMetrics };
    if (this.evaluation.warnings.length > 0) evaluationSummary.warnings = [...this.evaluation.warnings];
    if (evaluated.length > 0 || brain) summary.evaluation = evaluationSummary;
    if (this.problems.length > 0) summary.problems = [...this.problems];
    summary.skipped = { ...this.skipped };
    if (Object.keys(this.queues).length > 0) summary.queues = structuredClone(this.queues);

    const latencyMs: Record<string, Percentiles> = {};
    for (const [stage, values] of [...this.stageMs.entries(), ...Object.entries(latency)]) {
      const p = percentiles(values);
      if (p) latencyMs[stage] = p;
    }
    summary.latencyMs = latencyMs;

    const anytime = anytimeCurve({
      decodes: this.decodedAll,
      include: (trialId) => this.finalDecoded.has(trialId) && isTest(trialId),
      retrieval: imageRetrieval,
      pixCorrLowLevel: this.evaluation.lowLevelPixCorr,
    });
    if (anytime.length > 0) summary.anytime = anytime;

    const trSec = info?.trSec ?? 0;
    const wallSec = wallMs / 1000;
    if (wallSec > 0) {
      summary.throughputVolumesPerSec = this.volumesProcessed / wallSec;
      if (trSec > 0) summary.realtimeFactor = (this.volumesProcessed * trSec) / wallSec;
    }
    summary.wallSec = wallSec;
    summary.peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);

    return {
      run: { ...run, trSec, volumeCount: this.volumesReceived, trialCount: specs.length },
      trials,
      summary,
    };
  }

  /** Records an evaluation warning once (report and log). */
  warnEvaluation(message: string): void {
    if (this.evaluation.warnings.includes(message)) return;
    this.evaluation.warnings.push(message);
    logger.warn({ message }, 'evaluation setting adjusted');
  }
}

/**
 * Computes brain retrieval top-1, as MindEye defines it. For each distinct test image, a hit is
 * when its own trial's retrieval embedding is the most similar to the image's bank embedding
 * among the embeddings of all distinct test trials. The first trial of each image is used.
 */
export function brainRetrievalTop1(
  finals: Decoded[],
  bank: { ids: string[]; dim: number; embeddings: Float32Array },
  isTest: (trialId: number) => boolean,
): { top1: number; candidates: number } | undefined {
  const byImage = new Map<string, Float32Array>();
  for (const d of finals) {
    if (!d.retrievalEmbedding || !isTest(d.trialId) || byImage.has(d.stimulusId)) continue;
    if (bank.ids.includes(d.stimulusId)) byImage.set(d.stimulusId, d.retrievalEmbedding);
  }
  const ids = [...byImage.keys()];
  if (ids.length < 2) return undefined;
  const dim = bank.dim;
  const brains = new Float32Array(ids.length * dim);
  ids.forEach((id, j) => brains.set(byImage.get(id)!, j * dim));
  let hits = 0;
  for (let i = 0; i < ids.length; i++) {
    const row = bank.ids.indexOf(ids[i]);
    const best = brainRetrieval(bank.embeddings.subarray(row * dim, (row + 1) * dim), brains, 1)[0];
    if (best.trial === i) hits++;
  }
  return { top1: hits / ids.length, candidates: ids.length };
}
