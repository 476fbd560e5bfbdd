import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import type { Frame } from '../../src/events.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import { readRenderSettings } from '../../src/render/config.ts';
import { gaussianNoise } from '../../src/render/noise.ts';
import { createRenderer } from '../../src/render/renderer.ts';
import { decoded } from './helpers.ts';

const DEMO = new URL('../../models/demo/', import.meta.url).pathname;
const skip = existsSync(`${DEMO}manifest.json`) ? undefined : 'models/demo is missing: run `mindeye-rt train-demo`';

test('demo model renders a full trial', { skip }, async () => {
  const model = loadManifest(DEMO);
  const settings = readRenderSettings(model);
  const latentCount = settings.latentShape.reduce((a, b) => a * b, 1);
  const condition = gaussianNoise(settings.unet?.condDim ?? 0, 2);
  const renderer = await createRenderer({ model });
  const frames: Frame[] = [];
  renderer.frames.subscribe((f) => frames.push(f));
  renderer.submit(decoded(1, true, { lowLevelLatents: gaussianNoise(latentCount, 1), priorEmbedding: condition, retrievalEmbedding: condition }));
  await renderer.drain();
  const steps = renderer.stepCount;
  assert.equal(frames.length, steps + 2);
  assert.deepEqual([frames[0].kind, frames.at(-1)?.kind], ['low-level', 'final']);
  const [height, width] = settings.vae.imageSize ?? [frames[0].height, frames[0].width];
  for (const frame of frames) {
    const meta = await sharp(frame.image).metadata();
    assert.equal(meta.format, 'jpeg');
    assert.deepEqual([meta.width, meta.height, frame.width, frame.height], [width, height, width, height]);
  }
  const stats = await sharp(frames.at(-1)?.image).stats();
  assert.ok(stats.channels.some((c) => c.stdev > 1), 'the final image is not one flat color');
});
