/**
 * Runs a session for the replay, watch and serve commands: wires the optional parts (ground-truth
 * stimuli, motion correction, rendering, recording, dashboard) around `runSession` and prints
 * the summary.
 */
import { existsSync } from 'node:fs';
import { LazyImgBrick } from '../ingest/stimuli.ts';
import type { Source } from '../ingest/source.ts';
import { logger } from '../log.ts';
import { runSession } from '../session/run.ts';
import type { ProcessingOptions } from '../session/options.ts';
import { SessionRecorder } from '../session/record.ts';
import type { RunReport } from '../session/report.ts';
import type { PipelineEvent } from '../events.ts';
import type { SessionFlags } from './flags.ts';

export interface LiveSessionOptions {
  source: Source;
  processing: ProcessingOptions;
  session: SessionFlags;
  stimuliFile?: string;
  /** Keep the dashboard up after the run ends, until Ctrl-C. */
  keepServing: boolean;
  label: string;
  onEvent?(e: PipelineEvent): void;
}

export function formatSummary(report: RunReport): string {
  const s = report.summary as Record<string, unknown>;
  const lines = [
    `run: ${report.run.source}`,
    `volumes: received ${s.volumesReceived}, processed ${s.volumesProcessed}, dropped ${s.volumesDropped}; trials: ${report.run.trialCount} in design, ${s.trialsDecoded} decoded`,
  ];
  if (typeof s.retrievalTop1 === 'number') {
    lines.push(`retrieval top-1: ${(s.retrievalTop1 * 100).toFixed(1)}% of ${s.retrievalTrials} trials (${s.retrievalCandidates} candidates, chance ${((s.retrievalChance as number) * 100).toFixed(1)}%)` +
      (typeof s.twoWayAccuracy === 'number' ? `, 2-way ${(s.twoWayAccuracy * 100).toFixed(1)}%` : ''));
  }
  if (typeof s.pixCorrLowLevelMean === 'number') lines.push(`low-level PixCorr ${(s.pixCorrLowLevelMean as number).toFixed(3)}, SSIM ${(s.ssimLowLevelMean as number).toFixed(3)}`);
  const lat = s.latencyMs as Record<string, { p50: number; p95: number }>;
  for (const stage of ['preprocess', 'decode', 'volumeToDecode', 'betaToFirstFrame', 'betaToFinalFrame']) {
    if (lat[stage]) lines.push(`latency ${stage}: p50 ${lat[stage].p50.toFixed(1)} ms, p95 ${lat[stage].p95.toFixed(1)} ms`);
  }
  if (typeof s.realtimeFactor === 'number') lines.push(`speed: ${(s.realtimeFactor as number).toFixed(1)}x real time; peak RSS ${s.peakRssMb} MB`);
  return lines.join('\n');
}

export async function runLiveSession(opts: LiveSessionOptions): Promise<number> {
  const { session } = opts;
  const stimuli = opts.stimuliFile && existsSync(opts.stimuliFile) ? new LazyImgBrick(opts.stimuliFile) : undefined;
  const recorder = session.recordTo ? new SessionRecorder(session.recordTo) : undefined;
  if (session.dashboard) {
    logger.warn('the dashboard is not available in this build; running headless');
  }
  try {
    const result = await runSession({
      source: opts.source,
      processing: opts.processing,
      modelDir: session.modelDir,
      device: session.device,
      speed: session.speed,
      topK: session.topK,
      reportFile: session.reportFile,
      onEvent: (e) => {
        recorder?.onEvent(e);
        opts.onEvent?.(e);
      },
    });
    process.stdout.write(formatSummary(result.report) + '\n');
    if (session.reportFile) process.stdout.write(`report written to ${session.reportFile}\n`);
    await result.model?.close();
    return 0;
  } finally {
    await stimuli?.close();
  }
}
