import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DashboardState, GALLERY_SIZE, percentile } from '../../dashboard/state.ts';
import type { Frame, PipelineEvent } from '../../src/events.ts';

const RUN = 'state-test';

function decoded(trialId: number, trueRank: number | undefined, at: { receivedAtMs: number; decodedAtMs: number }): PipelineEvent {
  return {
    type: 'decoded', runId: RUN, volIdx: trialId, receivedAtMs: at.receivedAtMs, trialId, stimulusId: `s${trialId}`, final: true,
    volumesSinceOnset: 5, estimatedAtMs: at.receivedAtMs, decodedAtMs: at.decodedAtMs, topK: [{ id: 's0', score: 1 }], trueRank, candidateCount: 4,
  } as PipelineEvent;
}

function frame(trialId: number, kind: Frame['kind'], sentAtMs: number, extra: Partial<Frame> & { pixCorr?: number; ssim?: number } = {}): Frame {
  return {
    type: 'frame', runId: RUN, volIdx: trialId, receivedAtMs: 0, trialId, kind, provisional: false, step: 0, stepCount: 2,
    mime: 'image/jpeg', width: 4, height: 4, image: new Uint8Array([trialId]), sentAtMs, ...extra,
  };
}

describe('dashboard state', () => {
  test('percentile uses the nearest rank', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert.equal(percentile(sorted, 0.5), 5);
    assert.equal(percentile(sorted, 0.95), 10);
    assert.equal(percentile([7], 0.95), 7);
    assert.ok(Number.isNaN(percentile([], 0.5)));
  });

  test('metrics skip training trials', () => {
    const state = new DashboardState();
    state.apply({
      type: 'run-info', runId: RUN, trSec: 1, shape: [1, 1, 1], affine: new Float64Array(16), source: 't', motionCorrection: false,
      trials: [
        { trialId: 0, onsetSec: 0, durationSec: 1, stimulusId: 's0', testImage: true },
        { trialId: 1, onsetSec: 2, durationSec: 1, stimulusId: 's1', testImage: false },
        { trialId: 2, onsetSec: 4, durationSec: 1, stimulusId: 's2', testImage: true },
      ],
    });
    state.apply(decoded(0, 1, { receivedAtMs: 0, decodedAtMs: 5 }));
    state.apply(decoded(1, 1, { receivedAtMs: 0, decodedAtMs: 5 }));
    state.apply(decoded(2, 3, { receivedAtMs: 0, decodedAtMs: 5 }));
    const metrics = state.metrics();
    assert.equal(metrics.decodedTrials, 3);
    assert.equal(metrics.rankedTrials, 2);
    assert.equal(metrics.retrievalTop1, 0.5);
    assert.equal(metrics.meanRank, 2);
    assert.equal(metrics.retrievalChance, 0.25);
    assert.equal(metrics.pixCorrMean, undefined);
  });

  test('frame latency follows the final estimate', () => {
    const state = new DashboardState();
    state.apply({
      type: 'trial-estimate', runId: RUN, volIdx: 3, receivedAtMs: 100, trialId: 0, stimulusId: 's0', volumesSinceOnset: 4,
      betas: new Float64Array(1), normalizedBetas: new Float32Array(1), final: true, estimatedAtMs: 110,
    });
    state.apply(decoded(0, 2, { receivedAtMs: 100, decodedAtMs: 120 }));
    state.apply(frame(0, 'low-level', 105, { provisional: true }));
    state.apply(frame(0, 'low-level', 130, { pixCorr: 0.4, ssim: 0.3 }));
    state.apply(frame(0, 'img2img-step', 150));
    state.apply(frame(0, 'final', 170, { pixCorr: 0.6, ssim: 0.5 }));
    const trial = state.trials.get(0)!;
    assert.deepEqual(trial.latencyMs, { volumeToDecode: 20, betaToFirstFrame: 20, volumeToFirstFrame: 30, betaToFirstPreview: 40, betaToFinalFrame: 60 });
    assert.equal(trial.rendered, true);
    assert.equal(trial.frameCount, 4);
    const metrics = state.metrics();
    assert.equal(metrics.pixCorrLowLevelMean, 0.4);
    assert.equal(metrics.ssimLowLevelMean, 0.3);
    assert.equal(metrics.pixCorrMean, 0.6);
    assert.equal(metrics.ssimMean, 0.5);
    assert.equal(state.latencySummary().betaToFinalFrame.p50, 60);
  });

  test('preprocess latency runs from volume to GLM', () => {
    const state = new DashboardState();
    state.apply({ type: 'volume', runId: RUN, volIdx: 0, acqTimeSec: 0, receivedAtMs: 1000, shape: [1, 1, 1], affine: new Float64Array(16), data: new Float32Array(1), sourceId: 'v0' });
    state.apply({ type: 'stage-timing', runId: RUN, stage: 'glm', volIdx: 0, startMs: 1010, endMs: 1012.5 });
    const summary = state.latencySummary();
    assert.equal(summary.glm.p50, 2.5);
    assert.equal(summary.preprocess.p50, 12.5);
  });

  test('image store evicts the least recently updated trial', () => {
    const state = new DashboardState();
    for (let trialId = 0; trialId < GALLERY_SIZE; trialId++) state.apply(frame(trialId, 'final', trialId));
    state.apply(frame(0, 'low-level', 100));
    state.apply(frame(1000, 'final', 101));
    assert.equal(state.images.size, GALLERY_SIZE);
    assert.ok(state.images.has(0), 'trial 0 was updated, so it stays');
    assert.ok(!state.images.has(1), 'trial 1 is the oldest, so it goes');
    assert.ok(state.images.has(1000));
    assert.equal(state.snapshotFrames().at(-1)!.header.trialId, 1000);
  });

  test('warnings count gaps, warnings and flags', () => {
    const state = new DashboardState();
    state.apply({ type: 'gap', runId: RUN, volIdx: 4, reason: 'missing' });
    state.apply({ type: 'warning', runId: RUN, kind: 'duplicate', volIdx: 5, message: 'again' });
    state.apply({
      type: 'masked-volume', runId: RUN, volIdx: 6, acqTimeSec: 6, receivedAtMs: 0, motion: { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] },
      fdMm: 0.9, dvars: 1, values: new Float32Array(1), flags: ['fd'],
    });
    assert.deepEqual(state.warningCounts, { gap: 1, duplicate: 1, flagged: 1 });
    assert.equal(state.warningsSince(1).length, 2);
    assert.match(state.warnings[2].message, /volume 6 flagged: fd \(FD 0\.90 mm\)/);
  });

  test('flagged volume is counted once', () => {
    const state = new DashboardState();
    state.apply({ type: 'warning', runId: RUN, kind: 'flagged', volIdx: 8, message: 'volume 8 flagged: fd, dvars' });
    state.apply({
      type: 'masked-volume', runId: RUN, volIdx: 8, acqTimeSec: 8, receivedAtMs: 0, motion: { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] },
      fdMm: 0.9, dvars: 9, values: new Float32Array(1), flags: ['fd', 'dvars'],
    });
    assert.equal(state.warningCounts.flagged, 1);
    assert.equal(state.warnings.length, 1);
    assert.equal(state.warnings[0].message, 'volume 8 flagged: fd, dvars');
  });
});
