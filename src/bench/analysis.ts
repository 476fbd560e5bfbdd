/**
 * Turns a replay's raw timings into what `mindeye-rt bench` reports: per-stage percentiles,
 * end-to-end latencies, the realtime segment's img2img completeness, the budget table and one
 * trial's timeline.
 */
import type { ReplayCapture } from './replay.ts';
import { END_TO_END, STAGES, durationsByStage, stageStats, type StageStats } from './stages.ts';
import type { TimelineMarker, TimelineSpan } from './svg.ts';

export interface StageRow extends StageStats {
  stage: string;
  description: string;
}

/**
 * Raw durations per stage, with 'preprocess' (volume received -> GLM done), 'volumeDecodeToGlm'
 * (ingest plus preprocess of the same volume) and the end-to-end paths added.
 */
export function allDurations(capture: ReplayCapture): Map<string, number[]> {
  const byStage = durationsByStage(capture.timings);
  const push = (stage: string, ms: number) => {
    const list = byStage.get(stage) ?? [];
    list.push(ms);
    byStage.set(stage, list);
  };
  const ingestMs = new Map<number, number>();
  for (const t of capture.timings) {
    if (t.stage === 'ingest' && t.volIdx !== undefined) ingestMs.set(t.volIdx, t.endMs - t.startMs);
  }
  for (const t of capture.timings) {
    if (t.stage !== 'glm' || t.volIdx === undefined) continue;
    const received = capture.volumeReceivedMs.get(t.volIdx);
    if (received === undefined) continue;
    push('preprocess', t.endMs - received);
    const ingest = ingestMs.get(t.volIdx);
    if (ingest !== undefined) push('volumeDecodeToGlm', ingest + t.endMs - received);
  }
  for (const estimate of capture.finalEstimates.values()) push('volumeToBetas', estimate.estimatedAtMs - estimate.receivedAtMs);
  for (const decoded of capture.finalDecodes) push('volumeToDecode', decoded.decodedAtMs - decoded.receivedAtMs);
  for (const frame of capture.frames) {
    if (frame.kind === 'final') push('volumeToFinalFrame', frame.sentAtMs - frame.receivedAtMs);
  }
  // The session report computes the frame paths per trial; take its per-trial values as they are.
  for (const trial of capture.report.trials) {
    for (const [key, value] of Object.entries(trial.latencyMs ?? {})) if (typeof value === 'number') push(key, value);
  }
  return byStage;
}

export function stageRows(durations: Map<string, number[]>, catalogue = STAGES): StageRow[] {
  const rows: StageRow[] = [];
  for (const info of catalogue) {
    const stats = stageStats(durations.get(info.stage) ?? []);
    if (stats) rows.push({ stage: info.stage, description: info.description, ...stats });
  }
  return rows;
}

export function endToEndRows(durations: Map<string, number[]>): StageRow[] {
  return stageRows(durations, END_TO_END);
}

export interface ImgCompleteness {
  trialsDecoded: number;
  /** Trials whose final frame came after every img2img step ran. */
  trialsWithFullImg2img: number;
  /** Trials whose final frame was sent before the next trial's final betas. */
  trialsFinishedBeforeNextTrial: number;
}

/** Counts, from the frames, the trials that got their full img2img sequence. */
export function img2imgCompleteness(capture: ReplayCapture): ImgCompleteness {
  const finals = capture.frames.filter((f) => f.kind === 'final');
  const full = finals.filter((f) => f.step === f.stepCount && f.stepCount > 0);
  const betaTimes = [...capture.finalEstimates.values()].map((e) => ({ trialId: e.trialId, at: e.estimatedAtMs })).sort((a, b) => a.at - b.at);
  let inTime = 0;
  for (const f of finals) {
    const own = betaTimes.findIndex((b) => b.trialId === f.trialId);
    const next = own >= 0 ? betaTimes[own + 1] : undefined;
    if (next === undefined || f.sentAtMs <= next.at) inTime++;
  }
  return { trialsDecoded: capture.finalEstimates.size, trialsWithFullImg2img: full.length, trialsFinishedBeforeNextTrial: inTime };
}

export type BudgetDirection = 'at most' | 'at least';

export interface BudgetRow {
  path: string;
  /** Measured quantity, such as "p95 of preprocess on the nsd grid". */
  measure: string;
  unit: 'ms' | 'x real time' | '% of trials' | 'MB';
  direction: BudgetDirection;
  firstBar: number;
  goal?: number;
  measured?: number;
  /** Reason the row has no measured value, or how the run differs from the budget's conditions. */
  note?: string;
}

/** Compares a measured value with a bar: "meets, 38 ms under (0.62 of the bar)" or "misses by 12 ms (1.10 of the goal)". */
export function versus(row: BudgetRow, bar: number | undefined, name: 'bar' | 'goal' = 'bar'): string {
  if (bar === undefined) return '';
  if (row.measured === undefined) return 'not measured';
  const m = row.measured;
  let unit = ` ${row.unit}`;
  if (row.unit === 'x real time') unit = ' in real-time factor';
  if (row.unit === '% of trials') unit = ' points';
  const diff = Math.abs(m - bar);
  const ratio = bar === 0 ? '' : ` (${(m / bar).toFixed(2)} of the ${name})`;
  const meets = row.direction === 'at most' ? m <= bar : m >= bar;
  if (meets && diff === 0) return `meets (exactly the ${name})`;
  if (meets) return `meets, ${round(diff)}${unit} ${row.direction === 'at most' ? 'under' : 'over'}${ratio}`;
  return `misses by ${round(diff)}${unit}${ratio}`;
}

function round(x: number): string {
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export interface BudgetInputs {
  grid: 'epi' | 'nsd';
  preprocessP95?: number;
  betaToFirstFrameP95?: number;
  /** The same two paths in the realtime segment, where volumes arrive one per TR as in a live session. */
  realtimePreprocessP95?: number;
  realtimeBetaToFirstFrameP95?: number;
  realtimeFactor?: number;
  realtime?: ImgCompleteness;
  peakRssMb?: number;
  hasModel: boolean;
}

/** Builds the design's budget rows: preprocess, first frame, max-speed factor, realtime img2img, memory. */
export function budgetRows(input: BudgetInputs): BudgetRow[] {
  const noModel = 'no model on the nsd grid (the demo model does not fit its mask): run bench on the epi grid';
  const fullShare = input.realtime && input.realtime.trialsDecoded > 0
    ? (100 * input.realtime.trialsWithFullImg2img) / input.realtime.trialsDecoded : undefined;
  const atRealtime = (p95: number | undefined) => (p95 === undefined ? undefined : `realtime segment, its first volumes with their warm-up: p95 ${round(p95)} ms`);
  const notes = (...parts: (string | undefined)[]) => parts.filter((p) => p !== undefined).join('; ') || undefined;
  let realtimeNote: string | undefined;
  if (!input.hasModel) realtimeNote = noModel;
  else if (input.realtime === undefined) realtimeNote = 'realtime segment not run (--realtime-volumes 0)';
  return [
    {
      path: 'preprocess one NSD-grid volume, motion on (decode + motion + mask + GLM update)',
      measure: 'p95 of volumeDecodeToGlm: ingest, then volume received -> GLM update done',
      unit: 'ms', direction: 'at most', firstBar: 100, goal: 50, measured: input.preprocessP95,
      note: notes(input.grid === 'nsd' ? undefined : 'measured on the epi grid (64 x 64 x 36); run bench --grid nsd for the NSD grid',
        atRealtime(input.realtimePreprocessP95)),
    },
    {
      path: 'final betas -> first low-level frame + retrieval sent (demo model)',
      measure: 'p95 of betaToFirstFrame at max speed',
      unit: 'ms', direction: 'at most', firstBar: 150, goal: 50, measured: input.hasModel ? input.betaToFirstFrameP95 : undefined,
      note: input.hasModel ? atRealtime(input.realtimeBetaToFirstFrameP95) : noModel,
    },
    {
      path: 'replay at max speed, img2img skipped under load by the documented policy',
      measure: 'real-time factor of the max-speed replay',
      unit: 'x real time', direction: 'at least', firstBar: 20, goal: 50, measured: input.realtimeFactor,
      note: input.hasModel ? undefined : 'preprocessing only, no model',
    },
    {
      path: 'replay at realtime: every trial gets its full img2img sequence',
      measure: 'trials with every img2img step, in the realtime segment',
      unit: '% of trials', direction: 'at least', firstBar: 100, measured: input.hasModel ? fullShare : undefined,
      note: realtimeNote,
    },
    {
      path: 'peak RSS, demo replay',
      measure: 'peak resident set size of the bench process',
      unit: 'MB', direction: 'at most', firstBar: 1024, measured: input.peakRssMb,
    },
  ];
}

export interface TrialTimeline {
  trialId: number;
  originMs: number;
  spans: TimelineSpan[];
  markers: TimelineMarker[];
}

/**
 * Picks a trial with a full img2img sequence (else the first with a final frame) and collects
 * its spans from its window-closing volume to its final frame. The spans are the stages of every
 * volume in that time, plus the trial's own decode and render stages.
 */
export function trialTimeline(capture: ReplayCapture): TrialTimeline | undefined {
  // A trial closed by the end of a truncated run got its final betas only when the source
  // ended, which stretches its timeline. So prefer one whose window closed at a volume.
  const lastVolIdx = Math.max(-1, ...capture.volumeReceivedMs.keys());
  const closedAtVolume = (trialId: number) => (capture.finalEstimates.get(trialId)?.volIdx ?? lastVolIdx) < lastVolIdx;
  const finals = capture.frames.filter((f) => f.kind === 'final');
  const full = finals.filter((f) => f.step === f.stepCount && f.stepCount > 0);
  const chosen = full.find((f) => closedAtVolume(f.trialId)) ?? full[0] ?? finals.find((f) => closedAtVolume(f.trialId)) ?? finals[0];
  const estimate = chosen ? capture.finalEstimates.get(chosen.trialId) : [...capture.finalEstimates.values()][0];
  if (estimate === undefined) return undefined;
  const trialId = estimate.trialId;
  const originMs = estimate.receivedAtMs;
  const trialFrames = capture.frames.filter((f) => f.trialId === trialId && f.sentAtMs >= estimate.estimatedAtMs);
  const endMs = Math.max(estimate.estimatedAtMs, ...trialFrames.map((f) => f.sentAtMs));
  const spans: TimelineSpan[] = [];
  for (const t of capture.timings) {
    if (t.endMs < originMs || t.startMs > endMs) continue;
    const own = t.trialId === trialId;
    const volumeStage = t.trialId === undefined;
    if (!own && !volumeStage) continue;
    if (t.stage === 'mask+motion' || t.stage === 'render' || t.stage === 'decode') continue;
    spans.push({ stage: t.stage, startMs: Math.max(t.startMs, originMs), endMs: t.endMs, note: t.volIdx !== undefined ? `volume ${t.volIdx}` : undefined });
  }
  const markers: TimelineMarker[] = [{ label: 'betas final', atMs: estimate.estimatedAtMs }];
  const first = trialFrames[0];
  if (first) markers.push({ label: 'first frame', atMs: first.sentAtMs });
  const final = trialFrames.find((f) => f.kind === 'final');
  if (final) markers.push({ label: 'final frame', atMs: final.sentAtMs });
  return { trialId, originMs, spans, markers };
}
