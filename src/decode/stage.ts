/**
 * The decode stage: trial estimates -> decoded outputs, through the model's ONNX heads.
 *
 *   input:   e(t0) ─ e(t0) ─ e(t0,F) ─ e(t1) ───── e(t1,F) ──|
 *   output:  ──── d(t0) ───────── d(t0,F) ── d(t1) ──── d(t1,F)|
 *
 * Estimates are decoded in arrival order, one onnxruntime call at a time, batching the estimates
 * that queued while the previous call ran. Under load, a queued non-final estimate is replaced by
 * a newer estimate of the same trial and counted in `skipped`. A final estimate is never skipped.
 * Completion waits for the queue to drain; an ONNX error errors the stream; unsubscribing drops
 * the queue.
 *
 * Queue bound: at most `maxQueue` estimates wait (default 32). When a new estimate would exceed
 * it, the oldest queued non-final estimate is skipped, or the new one when it is non-final and
 * none is queued. Final estimates are never skipped, so only they can take the queue past the
 * bound: one per trial, which needs a decoder more than `maxQueue` trials behind.
 */
import { Observable, type OperatorFunction } from 'rxjs';
import { nowMs, type Decoded, type PipelineEvent, type TrialEstimate } from '../events.ts';
import { bankScores, rankCandidates, type LoadedModel } from './model.ts';

export interface DecodeStageConfig {
  runId: string;
  model: LoadedModel;
  topK: number;
  maxBatch: number;
  publish(event: PipelineEvent): void;
  /** Counts estimates superseded before they were decoded. */
  onSkipped?(estimate: TrialEstimate): void;
  /** Estimates that may wait for decoding (default DEFAULT_DECODE_QUEUE); see the file header. */
  maxQueue?: number;
  /** Called with the queue length after every change, for high-water marks. */
  onQueueLength?(length: number): void;
}

export const DEFAULT_DECODE_QUEUE = 32;

export function decodeTrials(config: DecodeStageConfig): OperatorFunction<TrialEstimate, Decoded> {
  return (input) => new Observable<Decoded>((subscriber) => {
    const queue: TrialEstimate[] = [];
    let running = false;
    let inputDone = false;
    let closed = false;

    const finishIfDone = () => {
      if (inputDone && !running && queue.length === 0) subscriber.complete();
    };

    const pump = async () => {
      if (running || closed) return;
      running = true;
      try {
        while (queue.length > 0 && !closed) {
          const batch = queue.splice(0, config.maxBatch);
          config.onQueueLength?.(queue.length);
          const startMs = nowMs();
          // Per-head timings are attributed to the batch's last estimate.
          const last = batch[batch.length - 1];
          const outputs = await config.model.decodeBatch(batch.map((e) => e.normalizedBetas), (stage, headStartMs, headEndMs) => {
            config.publish({ type: 'stage-timing', runId: config.runId, stage, trialId: last.trialId, volIdx: last.volIdx, startMs: headStartMs, endMs: headEndMs });
          });
          const endMs = nowMs();
          batch.forEach((estimate, i) => {
            const decoded = toDecoded(config, estimate, outputs[i], endMs);
            config.publish({ type: 'stage-timing', runId: config.runId, stage: 'decode', trialId: estimate.trialId, volIdx: estimate.volIdx, startMs, endMs });
            config.publish(decoded);
            subscriber.next(decoded);
          });
        }
      } catch (err) {
        closed = true;
        subscriber.error(err);
        return;
      } finally {
        running = false;
      }
      finishIfDone();
    };

    const maxQueue = config.maxQueue ?? DEFAULT_DECODE_QUEUE;
    const skipAt = (index: number) => {
      config.onSkipped?.(queue[index]);
      queue.splice(index, 1);
    };

    const subscription = input.subscribe({
      next(estimate) {
        if (!estimate.final) {
          // Supersede an older queued non-final estimate of the same trial.
          const older = queue.findIndex((q) => q.trialId === estimate.trialId && !q.final);
          if (older >= 0) skipAt(older);
        }
        if (queue.length >= maxQueue) {
          const oldestNonFinal = queue.findIndex((q) => !q.final);
          if (oldestNonFinal >= 0) {
            skipAt(oldestNonFinal);
          } else if (!estimate.final) {
            config.onSkipped?.(estimate);
            return;
          }
        }
        queue.push(estimate);
        config.onQueueLength?.(queue.length);
        void pump();
      },
      error: (err) => subscriber.error(err),
      complete() {
        inputDone = true;
        finishIfDone();
      },
    });
    return () => {
      closed = true;
      queue.length = 0;
      subscription.unsubscribe();
    };
  });
}

function toDecoded(config: DecodeStageConfig, e: TrialEstimate, out: Awaited<ReturnType<LoadedModel['decodeBatch']>>[number], decodedAtMs: number): Decoded {
  const model = config.model;
  let ranking: ReturnType<typeof rankCandidates> | undefined;
  if (out.classifierScores && model.labels) {
    ranking = rankCandidates(model.labels, out.classifierScores, config.topK, e.stimulusId);
  } else if (out.retrievalEmbedding && model.bank) {
    ranking = rankCandidates(model.bank.ids, bankScores(model.bank, out.retrievalEmbedding), config.topK, e.stimulusId);
  }
  return {
    type: 'decoded', runId: e.runId, volIdx: e.volIdx, receivedAtMs: e.receivedAtMs, trialId: e.trialId,
    stimulusId: e.stimulusId, final: e.final, estimatedAtMs: e.estimatedAtMs, decodedAtMs,
    volumesSinceOnset: e.volumesSinceOnset,
    retrievalEmbedding: out.retrievalEmbedding, priorEmbedding: out.priorEmbedding, lowLevelLatents: out.lowLevelLatents,
    topK: ranking?.topK ?? [], trueRank: ranking?.trueRank, candidateCount: ranking?.candidateCount,
  };
}
