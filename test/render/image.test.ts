import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import type { Frame } from '../../src/events.ts';
import { createRenderer } from '../../src/render/renderer.ts';
import { decodeToRgb, encodeRgb, planarToRgb8, type ImageFormat, type RgbImage } from '../../src/render/image.ts';
import { pythonSkipReason } from '../helpers/python.ts';
import { decoded, LATENT_SHAPE, latentsFor, tinyModel } from './helpers.ts';

const skip = pythonSkipReason(['torch', 'onnx']);

/** Recomputes the known decoder of make_tiny_model.py: scaled latents to 8-bit RGB. */
function expectedImage(latents: Float32Array, scale: number, gray = false): RgbImage {
  const [channels, h, w] = LATENT_SHAPE;
  const bias = [-0.2, 0, 0.2];
  const width = 2 * w;
  const height = 2 * h;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const oc = gray ? 0 : c;
        let acc = bias[oc];
        for (let k = 0; k < channels; k++) {
          const weight = (0.5 * (oc + 1) * (-1) ** k) / channels;
          acc += weight * (latents[k * h * w + (y >> 1) * w + (x >> 1)] / scale);
        }
        data[(y * width + x) * 3 + c] = Math.min(255, Math.max(0, Math.round((Math.tanh(acc) + 1) * 127.5)));
      }
    }
  }
  return { data, width, height };
}

function diffStats(a: Uint8Array, b: Uint8Array): { max: number; mean: number } {
  assert.equal(a.length, b.length);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

async function lowLevelFrame(format: ImageFormat, ...modelArgs: string[]): Promise<Frame> {
  const renderer = await createRenderer({ model: tinyModel('--no-unet', ...modelArgs), format, quality: 90 });
  const frames: Frame[] = [];
  renderer.frames.subscribe((f) => frames.push(f));
  renderer.submit(decoded(5, true));
  await renderer.drain();
  assert.deepEqual(frames.map((f) => f.kind), ['low-level', 'final']);
  return frames[0];
}

test('low-level frame shows the known decoder output', { skip }, async () => {
  const frame = await lowLevelFrame('png');
  assert.equal(frame.mime, 'image/png');
  assert.equal(frame.width, 16);
  assert.equal(frame.height, 16);
  const got = await decodeToRgb(frame.image);
  const want = expectedImage(latentsFor(5), 0.5);
  const stats = diffStats(got.data, want.data);
  // ONNX Runtime's tanh and Math.tanh may round to neighbouring 8-bit values.
  assert.ok(stats.max <= 1, `max pixel difference ${stats.max}`);
  assert.ok(new Set(got.data).size > 20, 'the test image has many distinct values');
});

test('one-channel decoder output becomes gray RGB', { skip }, async () => {
  const frame = await lowLevelFrame('png', '--gray');
  const got = await decodeToRgb(frame.image);
  const stats = diffStats(got.data, expectedImage(latentsFor(5), 0.5, true).data);
  assert.ok(stats.max <= 1, `max pixel difference ${stats.max}`);
});

test('outputRange [0, 1] maps values to pixels', { skip }, async () => {
  // The known decoder's tanh output lies in (-1, 1); read as [0, 1], negatives clamp to 0.
  const frame = await lowLevelFrame('png', '--vae-fields', JSON.stringify({ outputRange: [0, 1] }));
  const got = await decodeToRgb(frame.image);
  const want = expectedImage(latentsFor(5), 0.5);
  for (let i = 0; i < want.data.length; i++) {
    const value = want.data[i] / 127.5 - 1;
    const expected = Math.min(255, Math.max(0, Math.round(value * 255)));
    assert.ok(Math.abs(got.data[i] - expected) <= 2, `pixel ${i}: ${got.data[i]} vs ${expected}`);
  }
});

for (const format of ['jpeg', 'webp'] as const) {
  test(`${format} frame round-trips within codec tolerance`, { skip }, async () => {
    const frame = await lowLevelFrame(format);
    assert.equal(frame.mime, `image/${format}`);
    const meta = await sharp(frame.image).metadata();
    assert.equal(meta.format, format);
    const got = await decodeToRgb(frame.image);
    const stats = diffStats(got.data, expectedImage(latentsFor(5), 0.5).data);
    // Measured with sharp 0.34 at quality 90: mean 2.8 (JPEG) and 3.3 (WebP), max 11 and 17.
    assert.ok(stats.mean < 4, `mean pixel difference ${stats.mean}`);
    assert.ok(stats.max < 24, `max pixel difference ${stats.max}`);
    const other = diffStats(got.data, expectedImage(latentsFor(6), 0.5).data);
    assert.ok(other.mean > 10, `another trial's image is within ${other.mean} of this one`);
  });
}

test('planar conversion clamps and maps NaN to black', () => {
  const planar = Float32Array.of(-2, -1, 0, 1, 2, Number.NaN);
  const rgb = planarToRgb8(planar, 1, 1, 6, [-1, 1]);
  assert.deepEqual(Array.from(rgb.data.filter((_, i) => i % 3 === 0)), [0, 0, 128, 255, 255, 0]);
  const unit = planarToRgb8(Float32Array.of(0, 0.5, 1), 1, 1, 3, [0, 1]);
  assert.deepEqual(Array.from(unit.data.filter((_, i) => i % 3 === 0)), [0, 128, 255]);
});

test('planar conversion keeps channel order', () => {
  // 1x2 image: red plane [1, -1], green [-1, 1], blue [0, 0].
  const rgb = planarToRgb8(Float32Array.of(1, -1, -1, 1, 0, 0), 3, 1, 2, [-1, 1]);
  assert.deepEqual(Array.from(rgb.data), [255, 0, 128, 0, 255, 128]);
});

test('png encoding is lossless', async () => {
  const data = Uint8Array.from({ length: 7 * 5 * 3 }, (_, i) => (i * 37) % 256);
  const encoded = await encodeRgb({ data, width: 7, height: 5 }, { format: 'png', quality: 90 });
  const back = await decodeToRgb(encoded.bytes);
  assert.equal(back.width, 7);
  assert.equal(back.height, 5);
  assert.deepEqual(Array.from(back.data), Array.from(data));
});

test('gray PNG decodes to three equal channels', async () => {
  const png = await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer();
  const rgb = await decodeToRgb(png);
  assert.deepEqual(Array.from(rgb.data), [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]);
});
