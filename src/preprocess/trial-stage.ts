/**
 * The trial stage: masked volumes -> progressive trial estimates.
 *
 *   input:   run-info ── m0 ── m1 ── m2 ── m3 ── m4 ──|
 *   output:              ─── e(t0) ── e(t0) ── e(t0, final) e(t1) ──  e(t1, final)|
 *
 * One TrialEstimate per masked volume inside a trial's window; the last one of each trial is
 * `final`. When the source completes, open windows are closed and their final estimates
 * emitted before completion. Trials whose onset no volume reached get a warning. Errors pass
 * through; unsubscribing unsubscribes from the input.
 */
import { Observable, type OperatorFunction } from 'rxjs';
import { nowMs, type MaskedVolume, type PipelineEvent, type RunInfo, type TrialEstimate, type TrialSpec } from '../events.ts';
import { stageLogger } from '../log.ts';
import { HrfLibraryGlm, OnlineTrialGlm, type GlmOptions, type RawTrialEstimate } from './glm.ts';
import { BetaNormalizer } from './normalize.ts';
import type { ProcessingOptions } from '../session/options.ts';
import type { PreprocessOutput } from './stage.ts';

export interface TrialStageConfig {
  runId: string;
  processing: ProcessingOptions;
  /** Creates the normaliser once the voxel count is known. */
  createNormalizer(voxelCount: number): BetaNormalizer;
  /** Per-voxel HRF choice from the model (manifest `hrf.kind` "library"). */
  hrfLibrary?: { index: Uint8Array; library: Float32Array; samples: number; dtSec: number };
  /** Trials announced after the run started (stimulus onsets from the feedback channel). */
  trials$?: Observable<TrialSpec>;
  publish(event: PipelineEvent): void;
}

export function estimateTrials(config: TrialStageConfig): OperatorFunction<PreprocessOutput, TrialEstimate> {
  return (input) => new Observable<TrialEstimate>((subscriber) => {
    const log = stageLogger('glm', { runId: config.runId });
    let info: RunInfo | undefined;
    let glm: OnlineTrialGlm | HrfLibraryGlm | undefined;
    let normalizer: BetaNormalizer | undefined;
    let lastVolIdx = -1;
    let lastReceivedAtMs = 0;
    const announced: TrialSpec[] = [];
    const addTrial = (spec: TrialSpec) => {
      config.publish({ type: 'trial-added', runId: config.runId, trial: spec });
      if (glm) glm.addTrial(spec);
      else announced.push(spec);
    };
    const trialSubscription = config.trials$?.subscribe(addTrial);

    const emit = (raw: RawTrialEstimate, receivedAtMs: number) => {
      const normalizeStartMs = nowMs();
      const normalizedBetas = normalizer!.normalize(raw.betas);
      if (raw.final) normalizer!.observeFinal(raw.betas);
      config.publish({ type: 'stage-timing', runId: config.runId, stage: 'normalize', volIdx: raw.volIdx, trialId: raw.trialId, startMs: normalizeStartMs, endMs: nowMs() });
      const estimate: TrialEstimate = {
        type: 'trial-estimate', runId: config.runId, volIdx: raw.volIdx, receivedAtMs,
        trialId: raw.trialId, stimulusId: raw.stimulusId, volumesSinceOnset: raw.volumesSinceOnset,
        betas: raw.betas, normalizedBetas, final: raw.final, estimatedAtMs: nowMs(),
      };
      config.publish(estimate);
      subscriber.next(estimate);
    };

    const subscription = input.subscribe({
      next(event) {
        if (event.type === 'run-info') {
          info = event;
          return;
        }
        if (event.type !== 'masked-volume') return;
        const mv = event as MaskedVolume;
        if (!glm) {
          const trials = info?.trials ?? [];
          if (trials.length === 0 && !config.trials$) log.warn('the run has no trial design: no trial estimates will be made');
          const glmOptions: GlmOptions = {
            method: config.processing.glm,
            trSec: info!.trSec,
            windowSec: config.processing.windowSec,
            drift: config.processing.drift,
            expectedDurationSec: info?.expectedVolumes ? info.expectedVolumes * info.trSec : undefined,
            motionRegressors: config.processing.motionRegressors,
          };
          const lib = config.hrfLibrary;
          glm = lib
            ? new HrfLibraryGlm(trials, lib.index, lib.library, lib.samples, lib.dtSec, glmOptions)
            : new OnlineTrialGlm(trials, mv.values.length, glmOptions);
          normalizer = config.createNormalizer(mv.values.length);
          for (const spec of announced.splice(0)) glm.addTrial(spec);
        }
        const startMs = nowMs();
        const censored = config.processing.censor && mv.flags.length > 0;
        const estimates = glm.addVolume(mv.volIdx, mv.acqTimeSec, mv.values, mv.motion, censored);
        lastVolIdx = mv.volIdx;
        lastReceivedAtMs = mv.receivedAtMs;
        for (const raw of estimates) emit(raw, mv.receivedAtMs);
        config.publish({ type: 'stage-timing', runId: config.runId, stage: 'glm', volIdx: mv.volIdx, startMs, endMs: nowMs() });
      },
      error: (err) => subscriber.error(err),
      complete() {
        if (glm) {
          for (const raw of glm.finish(lastVolIdx)) emit(raw, lastReceivedAtMs);
          const missed = glm.unstartedTrials();
          if (missed.length > 0) {
            config.publish({
              type: 'warning', runId: config.runId, kind: 'other',
              message: `${missed.length} trial(s) start after the last volume and were not estimated: ${missed.map((t) => t.trialId).join(', ')}`,
            });
          }
        }
        subscriber.complete();
      },
    });
    return () => {
      subscription.unsubscribe();
      trialSubscription?.unsubscribe();
    };
  });
}
