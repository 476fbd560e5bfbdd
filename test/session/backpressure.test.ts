// Backpressure: when decoding falls behind, the documented policy applies and is counted.
// 1. The decode stage's queue stays within its bound under a flood of estimates, and final
//    estimates are never skipped.
// 2. A max-speed demo replay with an artificially slow decoder: every trial still gets final
//    betas and a low-level frame, and every skip counter in the report equals what the events show.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Subject, delay, lastValueFrom, toArray, type Observable } from 'rxjs';
import { DEFAULT_DECODE_QUEUE, decodeTrials } from '../../src/decode/stage.ts';
import { loadModel, type LoadedModel } from '../../src/decode/model.ts';
import { DEMO_MODEL_DIR, prepareDemo } from '../../src/demo/prepare.ts';
import { registrarFactory, renderStageFor } from '../../src/cli/live.ts';
import { runSession } from '../../src/session/run.ts';
import { DEFAULT_PROCESSING } from '../../src/session/options.ts';
import type { Decoded, Frame, PipelineEvent, PipelineWarning, TrialEstimate } from '../../src/events.ts';

/** Returns the model with every decode call delayed by `delayMs`, so that estimates queue up. */
function slowed(model: LoadedModel, delayMs: number): LoadedModel {
  const decodeBatch = model.decodeBatch.bind(model);
  model.decodeBatch = async (...args: Parameters<LoadedModel['decodeBatch']>) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    return decodeBatch(...args);
  };
  return model;
}

function estimate(model: LoadedModel, trialId: number, volumesSinceOnset: number, final: boolean): TrialEstimate {
  const betas = new Float32Array(model.voxelCount).map((_, i) => Math.sin(i * 0.01 + trialId + volumesSinceOnset));
  return {
    type: 'trial-estimate', runId: 'flood', volIdx: trialId * 10 + volumesSinceOnset, receivedAtMs: 0, trialId, stimulusId: `s${trialId}`,
    volumesSinceOnset, betas: Float64Array.from(betas), normalizedBetas: betas, final, estimatedAtMs: 0,
  };
}

/** Floods the decode stage with `estimates` at once and collects its outputs, skips and queue lengths. */
async function flood(model: LoadedModel, estimates: TrialEstimate[], maxQueue: number) {
  const input = new Subject<TrialEstimate>();
  const skipped: TrialEstimate[] = [];
  const lengths: number[] = [];
  const decoded$ = input.pipe(decodeTrials({
    runId: 'flood', model, topK: 3, maxBatch: 2, maxQueue, publish: () => {},
    onSkipped: (e) => skipped.push(e), onQueueLength: (n) => lengths.push(n),
  }));
  const done = lastValueFrom(decoded$.pipe(toArray()));
  for (const e of estimates) input.next(e);
  input.complete();
  return { decoded: await done, skipped, highWater: Math.max(...lengths) };
}

test('decode queue stays within its bound', async () => {
  const model = slowed(await loadModel(DEMO_MODEL_DIR, { device: 'cpu' }), 20);
  // 12 trials whose windows overlap, as when volumes arrive faster than decoding: without the
  // bound, one waiting estimate per trial would queue 12.
  const estimates: TrialEstimate[] = [];
  for (let k = 1; k <= 5; k++) {
    for (let trial = 0; trial < 12; trial++) estimates.push(estimate(model, trial, k, false));
  }
  for (let trial = 0; trial < 3; trial++) estimates.push(estimate(model, trial, 6, true));
  const maxQueue = 4;
  const { decoded, skipped, highWater } = await flood(model, estimates, maxQueue);
  process.stdout.write(`# decode flood: ${estimates.length} estimates, ${decoded.length} decoded, ${skipped.length} skipped, queue high-water ${highWater} (bound ${maxQueue})\n`);
  assert.ok(highWater <= maxQueue, `queue reached ${highWater}`);
  assert.equal(decoded.length + skipped.length, estimates.length, 'every estimate is decoded or counted as skipped');
  assert.ok(skipped.every((e) => !e.final), 'no final estimate skipped');
  assert.deepEqual(decoded.filter((d) => d.final).map((d) => d.trialId), [0, 1, 2], 'every final decoded, in order');
  assert.equal(DEFAULT_DECODE_QUEUE, 32);
});

test('decode queue never skips final estimates', async () => {
  const model = slowed(await loadModel(DEMO_MODEL_DIR, { device: 'cpu' }), 20);
  const finals = Array.from({ length: 8 }, (_, trial) => estimate(model, trial, 7, true));
  const { decoded, skipped, highWater } = await flood(model, finals, 4);
  assert.equal(skipped.length, 0);
  assert.deepEqual(decoded.map((d) => d.trialId), [0, 1, 2, 3, 4, 5, 6, 7]);
  // Only final estimates may take the queue past its bound.
  assert.ok(highWater <= finals.length, `queue reached ${highWater}`);
});

test('flooded demo replay keeps betas and low-level frames', async () => {
  const demo = await prepareDemo();
  const processing = { ...DEFAULT_PROCESSING };
  const events: PipelineEvent[] = [];
  const render = renderStageFor('cpu')!;
  const result = await runSession({
    source: demo.source, processing, modelDir: demo.modelDir, device: 'cpu', speed: { kind: 'max' },
    createRegistrar: registrarFactory(processing),
    // The render stage gets the session's model: slowing it here makes decoding fall behind
    // (40 ms more per call) while volumes arrive at full speed.
    render: (decoded$: Observable<Decoded>, ctx) => {
      slowed(ctx.model, 40);
      return render(decoded$.pipe(delay(0)), ctx);
    },
    onEvent: (e) => events.push(e),
  });
  const summary = result.report.summary as {
    skipped: { img2img: number; previews: number; decodes: number }; trialsDecoded: number; queues: Record<string, { bound: number; highWater: number }>;
  };
  const trials = result.report.trials as { trialId: number }[];
  const ofType = <T extends PipelineEvent['type']>(type: T) => events.filter((e): e is Extract<PipelineEvent, { type: T }> => e.type === type);

  const finalEstimates = new Set(ofType('trial-estimate').filter((e) => e.final).map((e) => e.trialId));
  const frames = ofType('frame') as Frame[];
  const lowLevel = new Set(frames.filter((f) => f.kind === 'low-level' && !f.provisional).map((f) => f.trialId));
  const finalFrames = frames.filter((f) => f.kind === 'final');
  assert.ok(trials.length > 50, `${trials.length} trials`);
  for (const trial of trials) {
    assert.ok(finalEstimates.has(trial.trialId), `trial ${trial.trialId} has final betas`);
    assert.ok(lowLevel.has(trial.trialId), `trial ${trial.trialId} has a low-level frame`);
  }

  const estimateCount = ofType('trial-estimate').length;
  const decodedCount = ofType('decoded').length;
  const skipWarnings = (ofType('warning') as PipelineWarning[]).filter((w) => w.kind === 'skipped');
  const stepsPlanned = finalFrames.reduce((n, f) => n + f.stepCount, 0);
  const previewsSent = frames.filter((f) => f.kind === 'img2img-step').length;
  process.stdout.write(`# flooded demo: ${trials.length} trials, ${estimateCount} estimates, ${decodedCount} decoded; skipped ${JSON.stringify(summary.skipped)}\n`);
  assert.equal(summary.skipped.decodes, estimateCount - decodedCount, 'skipped decodes = estimates without a decoded event');
  assert.equal(summary.skipped.img2img, skipWarnings.length, 'skipped img2img = "skipped" warnings');
  assert.equal(summary.skipped.img2img, finalFrames.filter((f) => f.step < f.stepCount).length, 'skipped img2img = final frames cut short');
  assert.equal(summary.skipped.previews, stepsPlanned - previewsSent, 'skipped previews = planned steps without a preview');
  assert.equal(summary.queues.decode.bound, DEFAULT_DECODE_QUEUE);
  assert.ok(summary.queues.decode.highWater >= 1, `decode queue high-water ${summary.queues.decode.highWater}`);
  assert.ok(summary.queues.decode.highWater <= summary.queues.decode.bound, `decode queue high-water ${summary.queues.decode.highWater}`);
  assert.equal(finalFrames.length, trials.length, 'one final frame per trial');
});
