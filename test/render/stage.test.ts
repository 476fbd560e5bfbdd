import { test } from 'node:test';
import assert from 'node:assert/strict';
import { from, lastValueFrom, toArray } from 'rxjs';
import type { Frame, PipelineEvent } from '../../src/events.ts';
import type { Speed } from '../../src/ingest/source.ts';
import { modelMakesFrames, policyForSpeed, renderStage } from '../../src/render/stage.ts';
import type { Renderer } from '../../src/render/renderer.ts';
import { pythonSkipReason } from '../helpers/python.ts';
import { decoded, tinyModel } from './helpers.ts';

const skip = pythonSkipReason(['torch', 'onnx']);

async function runStage(speed: Speed) {
  const published: PipelineEvent[] = [];
  const ctx = {
    model: tinyModel(), publish: (e: PipelineEvent) => published.push(e),
    collector: { skipped: { img2img: 0, previews: 0 } }, pacer: { speed },
  };
  let renderer: Renderer | undefined;
  const stage = renderStage({ device: 'cpu', onRenderer: (r) => { renderer = r; } });
  const events = await lastValueFrom(stage(from([1, 2, 3].map((id) => decoded(id, true))), ctx).pipe(toArray()));
  return { events, published, ctx, renderer: renderer as Renderer };
}

test('auto policy refines every trial at realtime speed', { skip }, async () => {
  const { events, published, ctx, renderer } = await runStage({ kind: 'realtime' });
  assert.equal(renderer.policy, 'complete');
  const finals = events.filter((e): e is Frame => e.type === 'frame' && e.kind === 'final');
  assert.ok(finals.every((f) => f.step === f.stepCount && f.stepCount > 0));
  assert.equal(finals.length, 3);
  assert.deepEqual(ctx.collector.skipped, { img2img: 0, previews: 0 });
  assert.deepEqual(published, events, 'every event is published on the bus');
});

test('auto policy cuts older refinements at max speed', { skip }, async () => {
  const { events, ctx, renderer } = await runStage({ kind: 'max' });
  assert.equal(renderer.policy, 'latest');
  const finals = events.filter((e): e is Frame => e.type === 'frame' && e.kind === 'final');
  assert.deepEqual(finals.map((f) => f.step), [0, 0, finals[2].stepCount]);
  assert.equal(ctx.collector.skipped.img2img, 2);
  assert.equal(ctx.collector.skipped.previews, 2 * finals[2].stepCount);
});

test('policy follows the replay speed', () => {
  assert.equal(policyForSpeed({ kind: 'realtime' }), 'complete');
  assert.equal(policyForSpeed({ kind: 'factor', factor: 2 }), 'latest');
  assert.equal(policyForSpeed({ kind: 'max' }), 'latest');
});

test('frames need lowLevel and vaeDecoder heads', { skip }, () => {
  const model = tinyModel('--no-unet');
  assert.equal(modelMakesFrames(model), true);
  const { vaeDecoder: _unused, ...heads } = model.manifest.heads;
  assert.equal(modelMakesFrames({ ...model, manifest: { ...model.manifest, heads } }), false);
});
