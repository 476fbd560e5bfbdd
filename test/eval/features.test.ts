import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RgbImage } from '../../src/render/image.ts';
import { featureMetric, loadFeatureNet, meanCorrelationDistance, toInputTensor, twoWayIdentification } from '../../src/eval/features.ts';
import { IMAGENET_MEAN, IMAGENET_STD, evalFromFlags, parseFeatureNet, type FeatureNetSpec } from '../../src/eval/options.ts';
import { Prng } from '../../src/sim/prng.ts';
import { pythonSkipReason, runPython } from '../helpers/python.ts';

const skip = pythonSkipReason(['numpy', 'scipy', 'torch', 'onnx']);
const HERE = dirname(fileURLToPath(import.meta.url));
const SIZE = 32;
const COUNT = 12;

/** Ground truths: smooth color fields with seeded noise. Reconstructions: each truth blended with another image and noise. */
function images(): { recons: RgbImage[]; truths: RgbImage[] } {
  const rng = new Prng(21);
  const field = (seed: number): Uint8Array => {
    const data = new Uint8Array(SIZE * SIZE * 3);
    const fx = 1 + (seed % 5);
    const fy = 1 + ((seed * 7) % 4);
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        for (let c = 0; c < 3; c++) {
          const v = 128 + 90 * Math.sin((fx * x + seed * c) / 5) * Math.cos((fy * y - c) / 6) + 20 * rng.normal();
          data[(y * SIZE + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
        }
      }
    }
    return data;
  };
  const truths: RgbImage[] = [];
  const recons: RgbImage[] = [];
  for (let i = 0; i < COUNT; i++) truths.push({ data: field(i), width: SIZE, height: SIZE });
  for (let i = 0; i < COUNT; i++) {
    const other = field(100 + i);
    const data = truths[i].data.map((v, p) => Math.max(0, Math.min(255, Math.round(0.5 * v + 0.5 * other[p] + 15 * rng.normal()))));
    recons.push({ data, width: SIZE, height: SIZE });
  }
  return { recons, truths };
}

let dir = '';
let reference: Record<'static' | 'dynamic', { twoWay: number; correlationDistance: number; firstFeatures: number[] }>;
const { recons, truths } = images();

before(() => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'mindeye-features-'));
  const raw = new Uint8Array(2 * COUNT * SIZE * SIZE * 3);
  [...recons, ...truths].forEach((image, i) => raw.set(image.data, i * SIZE * SIZE * 3));
  writeFileSync(join(dir, 'images.u8'), raw);
  reference = JSON.parse(runPython([join(HERE, 'feature_nets.py'), dir, join(dir, 'images.u8'), String(COUNT), String(SIZE)]));
});

function spec(name: string, file: string, extra: Partial<FeatureNetSpec> = {}): FeatureNetSpec {
  return { name, file, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'two-way', ...extra };
}

const identity = Array.from({ length: COUNT }, (_, i) => i);

test('feature metrics match numpy and scipy', { skip }, async () => {
  for (const kind of ['static', 'dynamic'] as const) {
    const file = join(dir, `${kind}.onnx`);
    const size = kind === 'dynamic' ? SIZE : undefined;
    const twoWayNet = await loadFeatureNet(spec(kind, file, { size }), 'cpu');
    const distanceNet = await loadFeatureNet(spec(kind, file, { size, metric: 'correlation-distance' }), 'cpu');
    try {
      const first = await twoWayNet.features(recons[0]);
      assert.equal(first.length, reference[kind].firstFeatures.length, `${kind}: feature count`);
      const maxDiff = Math.max(...reference[kind].firstFeatures.map((v, i) => Math.abs(v - first[i])));
      assert.ok(maxDiff < 1e-4, `${kind}: features differ from torch by ${maxDiff}`);

      const twoWay = await featureMetric(twoWayNet, recons, truths, identity);
      assert.ok(twoWay, `${kind}: two-way computed`);
      assert.ok(Math.abs(twoWay.value - reference[kind].twoWay) < 1e-9, `${kind}: two-way ${twoWay.value} vs numpy ${reference[kind].twoWay}`);
      assert.equal(twoWay.images, COUNT);
      assert.equal(twoWay.groundTruths, COUNT);

      const distance = await featureMetric(distanceNet, recons, truths, identity);
      assert.ok(distance, `${kind}: distance computed`);
      assert.ok(Math.abs(distance.value - reference[kind].correlationDistance) < 1e-5,
        `${kind}: distance ${distance.value} vs scipy ${reference[kind].correlationDistance}`);
    } finally {
      await twoWayNet.release();
      await distanceNet.release();
    }
  }
  // The reconstructions carry half of their truth, so identification is well above chance (0.5).
  assert.ok(reference.static.twoWay > 0.6, `reference two-way ${reference.static.twoWay}`);
  assert.ok(reference.static.twoWay < 1 || reference.dynamic.twoWay < 1, `one two-way is below 1, so a miscount would show (${reference.static.twoWay}, ${reference.dynamic.twoWay})`);
});

test('input tensor is normalized NCHW', async () => {
  const image: RgbImage = { data: new Uint8Array([255, 0, 51, 0, 255, 102]), width: 2, height: 1 };
  const tensor = await toInputTensor(image, 1, 2, { mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.2] });
  assert.deepEqual(tensor.dims, [1, 3, 1, 2]);
  const data = Array.from(tensor.data as Float32Array);
  const expected = [1, -1, -2, 2, (0.2 - 0.5) / 0.2, (0.4 - 0.5) / 0.2];
  data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `value ${i}: ${v} vs ${expected[i]}`));
});

test('images are resized to the network size', { skip }, async () => {
  const net = await loadFeatureNet(spec('dynamic', join(dir, 'dynamic.onnx'), { size: 20 }), 'cpu');
  try {
    const big: RgbImage = { data: new Uint8Array(50 * 40 * 3).fill(90), width: 50, height: 40 };
    const tensor = await toInputTensor(big, 20, 20, net.spec);
    assert.deepEqual(tensor.dims, [1, 3, 20, 20]);
    assert.equal((await net.features(big)).length, 16);
  } finally {
    await net.release();
  }
});

test('repeated images are never their own lure', () => {
  // Two trials show image 0. Features: recon 0 and 1 equal truth 0; recon 2 equals truth 1.
  const t0 = new Float32Array([1, 2, 3, 4]);
  const t1 = new Float32Array([4, 1, 3, 2]);
  const t2 = new Float32Array([2, 4, 1, 3]);
  const value = twoWayIdentification([t0, t0, t1], [t0, t1, t2], [0, 0, 1]);
  assert.equal(value, 1);
  assert.equal(twoWayIdentification([t0], [t0], [0]), undefined, 'two-way needs two ground truths');
  assert.ok(Math.abs(meanCorrelationDistance([t0, t1], [t0, t1], [0, 1])!) < 1e-12);
});

test('network with another input is rejected', { skip }, async () => {
  await assert.rejects(loadFeatureNet(spec('gray', join(dir, 'gray.onnx')), 'cpu'), /3 channels \(RGB\)/);
  await assert.rejects(loadFeatureNet(spec('static', join(dir, 'static.onnx'), { size: 224 }), 'cpu'),
    /field: size\n.*value: 224\n.*expected: 32x32/);
  await assert.rejects(loadFeatureNet(spec('dynamic', join(dir, 'dynamic.onnx')), 'cpu'), /does not take the documented input/);
  const empty = join(dir, 'empty.onnx');
  writeFileSync(empty, 'not onnx');
  await assert.rejects(loadFeatureNet(spec('broken', empty), 'cpu'), /could not load the model/);
});

test('feature net flag sets defaults and options', () => {
  const file = fileURLToPath(import.meta.url);
  const clip = parseFeatureNet(`clip=${file}`);
  assert.equal(clip.size, 224);
  assert.equal(clip.metric, 'two-way');
  assert.deepEqual(clip.mean, [0.48145466, 0.4578275, 0.40821073]);
  const effnet = parseFeatureNet(`effnet=${file}`);
  assert.equal(effnet.metric, 'correlation-distance');
  assert.equal(effnet.size, 255);
  const custom = parseFeatureNet(`dino=${file},size=518,mean=0.5:0.5:0.5,std=0.25:0.25:0.25,metric=correlation-distance`);
  assert.deepEqual(custom, { name: 'dino', file, size: 518, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], metric: 'correlation-distance' });
  const unknown = parseFeatureNet(`mine=${file}`);
  assert.equal(unknown.size, undefined, 'an unknown network takes its ONNX input size');
  assert.deepEqual(unknown.std, [1, 1, 1]);
});

test('bad feature net flags are rejected', () => {
  const file = fileURLToPath(import.meta.url);
  const cases: Array<[string, RegExp]> = [
    ['alexnet2', /NAME=FILE\.onnx/],
    ['alexnet2=/no/such/file.onnx', /was not found/],
    [`x=${file},size=0`, /an integer >= 1/],
    [`x=${file},size=abc`, /an integer >= 1/],
    [`x=${file},mean=1:2`, /R:G:B/],
    [`x=${file},std=1:0:1`, /positive/],
    [`x=${file},metric=euclid`, /two-way or correlation-distance/],
    [`x=${file},resize=3`, /remove or correct the option/],
  ];
  for (const [value, pattern] of cases) {
    assert.throws(() => parseFeatureNet(value), pattern, value);
  }
  assert.throws(() => evalFromFlags({ 'feature-net': [`a=${file}`, `a=${file}`] }), /Invalid value for --feature-net/);
});

test('eval flags are checked', () => {
  assert.deepEqual(evalFromFlags({}), { draws: 30, seed: 0, featureNets: [] });
  assert.equal(evalFromFlags({ 'eval-candidates': '300' }).candidates, 300);
  for (const bad of ['1', '0', '-5', '2.5', 'all', '']) {
    assert.throws(() => evalFromFlags({ 'eval-candidates': bad }), /Invalid value for --eval-candidates/, bad);
  }
  assert.throws(() => evalFromFlags({ 'eval-draws': '0' }), /--eval-draws/);
  assert.throws(() => evalFromFlags({ 'eval-seed': 'x' }), /--eval-seed/);
});
