// Checks the committed demo model directory (models/demo): manifest, files, budget, and a
// forward pass of every head through onnxruntime-node with the shapes the manifest gives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadManifest, readF32 } from '../../src/decode/manifest.ts';
import { createSession, ort } from '../../src/decode/ort.ts';
import { readNifti } from '../../src/io/nifti.ts';

const MODEL_DIR = fileURLToPath(new URL('../../models/demo', import.meta.url));
const BUDGET_BYTES = 4 * 1024 * 1024;

const { manifest } = loadManifest(MODEL_DIR);
const heads = manifest.heads;

function directoryBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    total += statSync(path).isDirectory() ? directoryBytes(path) : statSync(path).size;
  }
  return total;
}

async function runHead(name: string, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  const head = heads[name];
  const session = await createSession(join(MODEL_DIR, head.file), { device: 'cpu', threads: 1 });
  try {
    const outputs = await session.run(feeds);
    return outputs[head.outputName as string];
  } finally {
    await session.release();
  }
}

function seededNormal(count: number, seed: number): Float32Array {
  // Box-Muller over a small linear congruential generator: deterministic test inputs.
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 1) / 4294967297;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

function rowNorms(data: Float32Array, dim: number): number[] {
  const norms: number[] = [];
  for (let r = 0; r < data.length / dim; r++) {
    let sum = 0;
    for (let k = 0; k < dim; k++) sum += data[r * dim + k] ** 2;
    norms.push(Math.sqrt(sum));
  }
  return norms;
}

test('demo manifest is simulated with provenance', () => {
  assert.equal(manifest.simulated, true);
  const provenance = manifest.provenance as Record<string, unknown>;
  for (const field of ['tool', 'command', 'seed', 'date', 'data', 'evaluation']) {
    assert.ok(field in provenance, `provenance lacks ${field}`);
  }
  assert.equal(provenance.quick, false, 'the shipped model must come from a full training run');
});

test('demo model matches the current simulator', async () => {
  // A model trained on another voxel model version decodes the demo's subject at chance.
  const { GENERATOR } = await import('../../src/sim/dataset.ts');
  const data = (manifest.provenance as { data: { simulation: { generator: string; seed: number } } }).data;
  assert.equal(data.simulation.generator, GENERATOR, 'retrain models/demo with `mindeye-rt train-demo`');
  const simulate = (manifest.provenance as { simulate: Record<string, unknown> }).simulate;
  assert.equal(simulate.seed, data.simulation.seed);
  assert.equal(simulate.grid, 'epi');
});

test('demo model fits its 4 MB budget', () => {
  assert.ok(directoryBytes(MODEL_DIR) <= BUDGET_BYTES, `models/demo has ${directoryBytes(MODEL_DIR)} bytes`);
});

test('demo voxel count matches its mask', () => {
  assert.equal(manifest.voxels.maskRule, 'value == 1');
  const mask = readNifti(join(MODEL_DIR, manifest.voxels.mask as string));
  let ones = 0;
  for (const value of mask.data) if (value === 1) ones++;
  assert.equal(ones, manifest.voxels.count);
});

test('demo normalization is finite and positive', () => {
  assert.equal(manifest.normalization?.kind, 'calibration');
  const norm = manifest.normalization as { mean: string; std: string };
  const mean = readF32(join(MODEL_DIR, norm.mean), manifest.voxels.count);
  const std = readF32(join(MODEL_DIR, norm.std), manifest.voxels.count);
  assert.ok(mean.every(Number.isFinite));
  assert.ok(std.every((s) => Number.isFinite(s) && s > 0));
});

test('demo heads are wired as documented', () => {
  assert.deepEqual(Object.keys(heads).sort(), ['backbone', 'imageEncoder', 'lowLevel', 'retrieval', 'unet', 'vaeDecoder']);
  assert.equal(heads.backbone.input, 'voxels');
  assert.equal(heads.backbone.inputName, 'voxels');
  assert.equal(heads.retrieval.input, 'backbone');
  assert.equal(heads.lowLevel.input, 'backbone');
  assert.equal(heads.vaeDecoder.input, 'lowLevel');
  assert.equal(heads.retrieval.space, manifest.imageBank?.space);
  assert.equal(heads.retrieval.dim, manifest.imageBank?.dim);
  assert.equal(heads.unet.condDim, heads.retrieval.dim);
  assert.deepEqual(heads.unet.latentShape, heads.lowLevel.latentShape);
  for (const field of ['scheduler', 'steps', 'strength', 'guidance', 'trainTimesteps', 'betaSchedule', 'betaStart', 'betaEnd']) {
    assert.ok(heads.unet[field] !== undefined, `unet lacks ${field}`);
  }
  assert.equal(heads.unet.scheduler, 'ddim');
  assert.ok((heads.vaeDecoder.scale as number) > 0);
});

test('demo voxels decode to unit embeddings and latents', async () => {
  const voxelCount = manifest.voxels.count;
  const batch = 3;
  const voxels = new ort.Tensor('float32', seededNormal(batch * voxelCount, 1), [batch, voxelCount]);
  const latent = await runHead('backbone', { voxels });
  assert.deepEqual(latent.dims, [batch, heads.backbone.dim]);

  const embedding = await runHead('retrieval', { [heads.retrieval.inputName as string]: latent });
  const dim = heads.retrieval.dim as number;
  assert.deepEqual(embedding.dims, [batch, dim]);
  for (const norm of rowNorms(embedding.data as Float32Array, dim)) assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);

  const latents = await runHead('lowLevel', { [heads.lowLevel.inputName as string]: latent });
  assert.deepEqual(latents.dims, [batch, ...(heads.lowLevel.latentShape as number[])]);
  assert.ok((latents.data as Float32Array).every(Number.isFinite));
});

test('demo VAE decoder outputs images in range', async () => {
  const shape = heads.lowLevel.latentShape as number[];
  const scale = heads.vaeDecoder.scale as number;
  const size = shape.reduce((a, b) => a * b, 1);
  const scaled = seededNormal(2 * size, 2).map((x) => x / scale);
  const image = await runHead('vaeDecoder', { [heads.vaeDecoder.inputName as string]: new ort.Tensor('float32', scaled, [2, ...shape]) });
  assert.deepEqual(image.dims, [2, 3, ...(heads.vaeDecoder.imageSize as number[])]);
  const pixels = image.data as Float32Array;
  assert.ok(pixels.every((p) => p >= 0 && p <= 1));
  assert.ok(Math.max(...pixels) - Math.min(...pixels) > 0.1, 'decoder output is flat');
});

test('demo unet predicts epsilon with null condition', async () => {
  const shape = heads.lowLevel.latentShape as number[];
  const dim = heads.unet.condDim as number;
  const size = shape.reduce((a, b) => a * b, 1);
  const noisy = new ort.Tensor('float32', seededNormal(2 * size, 3), [2, ...shape]);
  const timestep = new ort.Tensor('float32', Float32Array.from([900, 10]), [2]);
  const condition = new Float32Array(2 * dim);
  condition.set(seededNormal(dim, 4), 0); // row 0 conditioned, row 1 the all-zero null condition
  const feeds = {
    [heads.unet.inputName as string]: noisy,
    [heads.unet.timestepName as string]: timestep,
    [heads.unet.conditionName as string]: new ort.Tensor('float32', condition, [2, dim]),
  };
  const epsilon = await runHead('unet', feeds);
  assert.deepEqual(epsilon.dims, [2, ...shape]);
  const values = epsilon.data as Float32Array;
  assert.ok(values.every(Number.isFinite));
  // At t = 900 the input is nearly pure noise, so the predicted epsilon correlates with it.
  let dot = 0, a2 = 0, b2 = 0;
  for (let i = 0; i < size; i++) {
    dot += values[i] * (noisy.data as Float32Array)[i];
    a2 += values[i] ** 2;
    b2 += (noisy.data as Float32Array)[i] ** 2;
  }
  assert.ok(dot / Math.sqrt(a2 * b2) > 0.8, `correlation ${dot / Math.sqrt(a2 * b2)}`);
});

test('demo image bank has ids, rows and thumbnails', () => {
  const bank = manifest.imageBank!;
  const ids = JSON.parse(readFileSync(join(MODEL_DIR, bank.ids), 'utf8')) as string[];
  assert.ok(ids.length >= 100, `only ${ids.length} test images`);
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) {
    assert.match(id, /^[1-9]\d*$/);
    assert.ok(existsSync(join(MODEL_DIR, bank.thumbnails as string, `${id}.jpg`)), `no thumbnail for ${id}`);
  }
  const rows = readF32(join(MODEL_DIR, bank.embeddings), ids.length * bank.dim, 'imageBank.embeddings');
  for (const norm of rowNorms(rows, bank.dim)) assert.ok(Math.abs(norm - 1) < 1e-4);
});

test('demo image encoder retrieves its own thumbnails', async () => {
  const bank = manifest.imageBank!;
  const ids = JSON.parse(readFileSync(join(MODEL_DIR, bank.ids), 'utf8')) as string[];
  const rows = readF32(join(MODEL_DIR, bank.embeddings), ids.length * bank.dim);
  const size = heads.imageEncoder.inputSize as number;
  const images = new Float32Array(ids.length * 3 * size * size);
  for (const [n, id] of ids.entries()) {
    const { data } = await sharp(join(MODEL_DIR, bank.thumbnails as string, `${id}.jpg`)).resize(size, size).removeAlpha().raw()
      .toBuffer({ resolveWithObject: true });
    for (let p = 0; p < size * size; p++) {
      for (let c = 0; c < 3; c++) images[((n * 3 + c) * size * size) + p] = data[p * 3 + c] / 255;
    }
  }
  const embedded = await runHead('imageEncoder', { [heads.imageEncoder.inputName as string]: new ort.Tensor('float32', images, [ids.length, 3, size, size]) });
  const query = embedded.data as Float32Array;
  let correct = 0;
  for (let q = 0; q < ids.length; q++) {
    let best = -1, bestScore = -Infinity;
    for (let r = 0; r < ids.length; r++) {
      let score = 0;
      for (let k = 0; k < bank.dim; k++) score += query[q * bank.dim + k] * rows[r * bank.dim + k];
      if (score > bestScore) { bestScore = score; best = r; }
    }
    if (best === q) correct++;
  }
  // The thumbnails are JPEG copies of the bank images, so nearly all must find themselves.
  assert.ok(correct / ids.length >= 0.9, `top-1 ${correct}/${ids.length}`);
});
