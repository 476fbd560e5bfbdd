import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { encodeRgb, type RgbImage } from '../../src/render/image.ts';
import { gaussianFilter, pixCorr, ssim, ssimGray } from '../../src/render/metrics.ts';
import { gaussianNoise } from '../../src/render/noise.ts';
import { pythonSkipReason, runPython } from '../helpers/python.ts';

const skip = pythonSkipReason(['numpy', 'skimage', 'scipy']);

/** Draws a 425x425 test picture: colored blobs, stripes and seeded noise. */
function picture(seed: number, size = 425): RgbImage {
  const noise = gaussianNoise(size * size * 3, seed);
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const u = x / size;
      const v = y / size;
      const blob = Math.exp(-((u - 0.3 - 0.1 * seed) ** 2 + (v - 0.6) ** 2) * 12);
      const stripes = 0.5 + 0.5 * Math.sin(40 * u + 9 * v + seed);
      for (let c = 0; c < 3; c++) {
        const value = 255 * (0.45 * blob * (c + 1) / 3 + 0.35 * stripes * (c === seed % 3 ? 1 : 0.4)) + 18 * noise[(y * size + x) * 3 + c];
        data[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(value + 40)));
      }
    }
  }
  return { data, width: size, height: size };
}

async function blurred(image: RgbImage, sigma: number): Promise<RgbImage> {
  const out = await sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels: 3 } }).blur(sigma).raw().toBuffer();
  return { data: new Uint8Array(out), width: image.width, height: image.height };
}

const PYTHON_METRICS = `
import sys, json, numpy as np
from skimage.io import imread
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
out = []
for a_path, b_path in json.loads(sys.argv[1]):
    a = imread(a_path)[..., :3]
    b = imread(b_path)[..., :3]
    pix = float(np.corrcoef(a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64))[0, 1])
    ssim = float(structural_similarity(rgb2gray(a), rgb2gray(b), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0))
    out.append({'pixCorr': pix, 'ssim': ssim})
print(json.dumps(out))
`;

test('PixCorr and SSIM match scikit-image', { skip }, async () => {
  const original = picture(1);
  const pairs: [RgbImage, RgbImage][] = [
    [original, await blurred(original, 2)],
    [original, await blurred(original, 8)],
    [original, picture(2)],
    [picture(3), picture(3)],
  ];
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-metrics-'));
  const files: [string, string][] = [];
  for (const [i, [a, b]] of pairs.entries()) {
    const paths: [string, string] = [join(dir, `${i}a.png`), join(dir, `${i}b.png`)];
    writeFileSync(paths[0], (await encodeRgb(a, { format: 'png', quality: 100 })).bytes);
    writeFileSync(paths[1], (await encodeRgb(b, { format: 'png', quality: 100 })).bytes);
    files.push(paths);
  }
  const reference = JSON.parse(runPython(['-c', PYTHON_METRICS, JSON.stringify(files)])) as { pixCorr: number; ssim: number }[];
  for (const [i, [a, b]] of pairs.entries()) {
    const pc = await pixCorr(a, b);
    const s = await ssim(a, b);
    assert.ok(Math.abs(pc - reference[i].pixCorr) < 1e-9, `pair ${i}: PixCorr ${pc} vs scikit-image ${reference[i].pixCorr}`);
    assert.ok(Math.abs(s - reference[i].ssim) < 1e-9, `pair ${i}: SSIM ${s} vs scikit-image ${reference[i].ssim}`);
  }
  // The pairs span the range of real reconstructions, so a wrong window or constant would show.
  assert.ok(reference[0].ssim > reference[1].ssim);
  assert.ok(reference[1].ssim > reference[2].ssim);
  assert.ok(reference[2].ssim < 0.5);
  assert.equal(reference[3].ssim, 1);
});

test('encoded and raw inputs give the same metrics', async () => {
  const a = picture(4);
  const b = await blurred(a, 3);
  const pngA = (await encodeRgb(a, { format: 'png', quality: 100 })).bytes;
  const jpegB = (await encodeRgb(b, { format: 'jpeg', quality: 95 })).bytes;
  assert.equal(await pixCorr(pngA, b), await pixCorr(a, b));
  assert.equal(await ssim(pngA, b), await ssim(a, b));
  // JPEG loses a little, so the scores move a little.
  assert.ok(Math.abs((await ssim(a, jpegB)) - (await ssim(a, b))) < 0.05);
});

test('images of other sizes are resized to 425x425', async () => {
  const big = picture(5);
  const small = await sharp(Buffer.from(big.data), { raw: { width: 425, height: 425, channels: 3 } }).resize(200, 150, { fit: 'fill' }).raw().toBuffer();
  const smallImage: RgbImage = { data: new Uint8Array(small), width: 200, height: 150 };
  const corr = await pixCorr(big, smallImage);
  assert.ok(corr > 0.8, `PixCorr ${corr}`);
  assert.ok(corr < 1, `PixCorr ${corr}`);
  assert.ok(Math.abs((await pixCorr(smallImage, smallImage)) - 1) < 1e-12);
  const inverted: RgbImage = { ...smallImage, data: smallImage.data.map((v) => 255 - v) };
  // Resizing rounds to 8 bits after interpolation, so the inverted copy lands a little off -1.
  assert.ok(Math.abs((await pixCorr(smallImage, inverted)) + 1) < 1e-4);
});

test('raw image with a wrong byte count is rejected', async () => {
  await assert.rejects(pixCorr({ data: new Uint8Array(10), width: 4, height: 4 }, picture(1)), /10 bytes; 4x4x3 needs 48/);
});

test('SSIM rejects images smaller than its window', () => {
  assert.throws(() => ssimGray(new Float64Array(100), new Float64Array(100), 10, 10), /at least 11x11/);
});

test('Gaussian filter keeps a constant image', () => {
  const flat = new Float64Array(30 * 20).fill(0.25);
  const out = gaussianFilter(flat, 20, 30);
  assert.ok(out.every((v) => Math.abs(v - 0.25) < 1e-15));
});

test('one-color image gives NaN PixCorr', async () => {
  // Pearson correlation is undefined when one image has no variance; the report leaves such values out.
  const flat: RgbImage = { data: new Uint8Array(425 * 425 * 3).fill(128), width: 425, height: 425 };
  assert.ok(Number.isNaN(await pixCorr(flat, picture(6))));
  assert.equal(await ssim(flat, flat), 1);
});

test('SSIM is symmetric and PixCorr ignores gain', async () => {
  const a = picture(7);
  const b = await blurred(a, 4);
  assert.ok(Math.abs((await ssim(a, b)) - (await ssim(b, a))) < 1e-12);
  // Halving every pixel changes no correlation, up to 8-bit rounding.
  const half: RgbImage = { ...a, data: a.data.map((v) => Math.round(v / 2)) };
  assert.ok(Math.abs((await pixCorr(half, b)) - (await pixCorr(a, b))) < 2e-3);
});
