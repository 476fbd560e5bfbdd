/**
 * The stages `mindeye-rt bench` reports, in pipeline order, with what each stage-timing covers,
 * and the percentile summary it computes from the raw durations.
 */
import { percentiles, type Percentiles } from '../session/report.ts';
import type { StageTiming } from '../events.ts';

export interface StageInfo {
  stage: string;
  /** Work the timing covers, for the Markdown report. */
  description: string;
}

/** Fine stages first; the coarse ones the session report has always had follow. */
export const STAGES: StageInfo[] = [
  { stage: 'ingest', description: 'read, decompress and parse one volume of the run file (from requesting the volume to getting it)' },
  { stage: 'motion', description: 'rigid registration of one volume to the reference' },
  { stage: 'mask', description: 'sample the mask voxels, non-finite check, quality update' },
  { stage: 'glm', description: 'online GLM update and the estimates of the open trial windows' },
  { stage: 'normalize', description: 'z-score one trial estimate' },
  { stage: 'decode:classifier', description: 'classifier head, one batch' },
  { stage: 'decode:backbone', description: 'backbone head, one batch' },
  { stage: 'decode:retrieval', description: 'retrieval head, one batch' },
  { stage: 'decode:lowLevel', description: 'low-level head, one batch' },
  { stage: 'prior-sampling', description: 'diffusion prior sampling loop, one batch' },
  { stage: 'low-level', description: 'VAE decode of the low-level latents to RGB' },
  { stage: 'img2img-step', description: 'one img2img step: UNet passes, guidance, DDIM update' },
  { stage: 'img2img-decode', description: 'VAE decode of an img2img preview or final latents' },
  { stage: 'encode', description: 'JPEG encode of one frame' },
  { stage: 'send', description: 'forward one frame to the dashboard viewers (state, framing, socket write)' },
  { stage: 'mask+motion', description: 'motion and mask together' },
  { stage: 'preprocess', description: 'volume received -> masked volume and GLM update done' },
  { stage: 'decode', description: 'one decode call: every head and the prior' },
  { stage: 'render', description: 'one frame: its render work until it is sent' },
];

/** End-to-end latencies, in the order the work happens. */
export const END_TO_END: StageInfo[] = [
  { stage: 'volumeDecodeToGlm', description: 'one volume: ingest, then received -> GLM update done (the preprocess budget path)' },
  { stage: 'volumeToBetas', description: 'window-closing volume received -> final betas estimated' },
  { stage: 'volumeToDecode', description: 'window-closing volume received -> final decode done' },
  { stage: 'betaToFirstFrame', description: 'final betas -> first frame sent (low-level image; retrieval was sent before it)' },
  { stage: 'betaToFirstPreview', description: 'final betas -> first img2img preview sent' },
  { stage: 'betaToFinalFrame', description: 'final betas -> final frame sent' },
  { stage: 'volumeToFirstFrame', description: 'window-closing volume received -> first frame sent' },
  { stage: 'volumeToFinalFrame', description: 'window-closing volume received -> final frame sent' },
];

export type StageStats = Percentiles & { count: number; meanMs: number };

/** Groups durations (ms) by stage name. */
export function durationsByStage(timings: StageTiming[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const t of timings) {
    const list = out.get(t.stage) ?? [];
    list.push(t.endMs - t.startMs);
    out.set(t.stage, list);
  }
  return out;
}

export function stageStats(values: number[]): StageStats | undefined {
  const p = percentiles(values);
  if (p === undefined) return undefined;
  const meanMs = values.reduce((a, b) => a + b, 0) / values.length;
  return { ...p, count: values.length, meanMs: Math.round(meanMs * 1000) / 1000 };
}
