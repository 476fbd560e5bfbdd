import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadManifest } from '../../src/decode/manifest.ts';
import { checkHeadShapes, loadHead, ort, runBatch, runHead, type LoadedHead } from '../../src/decode/ort.ts';
import { arrayNoise, loadPriorSchedule, onnxDenoiser, samplePrior } from '../../src/decode/prior.ts';
import { makeExportedModel, maxAbsDiff, type Fixture } from './export-fixture.ts';

const TOLERANCE = 1e-4;

describe('MindEye1 export parity with PyTorch (reduced width, random weights)', () => {
  let fixture: Fixture;
  const heads: Record<string, LoadedHead> = {};

  before(async () => {
    fixture = await makeExportedModel(['--lowlevel', '--batch', '3'], { lowlevel: true });
    const model = loadManifest(fixture.modelDir);
    for (const name of ['backbone', 'retrieval', 'prior', 'lowLevel']) {
      heads[name] = await loadHead(model, name, { device: 'cpu', threads: 2 });
    }
  });

  after(() => {
    if (fixture) rmSync(fixture.dir, { recursive: true, force: true });
  });

  test('manifest lists the four heads with their shapes', () => {
    const { manifest } = loadManifest(fixture.modelDir);
    const ref = fixture.reference;
    assert.equal(manifest.voxels.count, ref.voxels);
    assert.deepEqual(Object.keys(manifest.heads).sort(), ['backbone', 'lowLevel', 'prior', 'retrieval']);
    assert.equal(manifest.heads.backbone.tokens, ref.tokens);
    assert.equal(manifest.heads.backbone.dim, ref.clip);
    assert.equal(manifest.heads.prior.timesteps, ref.timesteps);
    assert.deepEqual(manifest.heads.lowLevel.latentShape, [4, 64, 64]);
  });

  test('backbone matches PyTorch', async (t) => {
    checkHeadShapes(heads.backbone, fixture.reference.voxels);
    const voxels = fixture.array('voxels');
    const { batch, voxels: width } = fixture.reference;
    const out = await runHead(heads.backbone, { voxels: new ort.Tensor('float32', voxels, [batch, width]) });
    const diff = maxAbsDiff(out, fixture.array('backbone'));
    t.diagnostic(`max abs diff ${diff}`);
    assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
  });

  test('batched rows match single rows', async () => {
    const { batch, voxels: width } = fixture.reference;
    const voxels = fixture.array('voxels');
    const rows = Array.from({ length: batch }, (_, i) => voxels.slice(i * width, (i + 1) * width));
    const batched = await runBatch(heads.backbone, rows);
    const single = await runBatch(heads.backbone, [rows[1]]);
    assert.equal(batched.length, batch);
    assert.ok(maxAbsDiff(batched[1], single[0]) < 1e-5);
  });

  test('retrieval projector matches PyTorch', async (t) => {
    const { batch, tokens, clip } = fixture.reference;
    const out = await runHead(heads.retrieval, { latent: new ort.Tensor('float32', fixture.array('backbone'), [batch, tokens, clip]) });
    const diff = maxAbsDiff(out, fixture.array('retrieval'));
    t.diagnostic(`max abs diff ${diff}`);
    assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
  });

  test('low-level head matches PyTorch', async (t) => {
    checkHeadShapes(heads.lowLevel, fixture.reference.voxels);
    const { batch, voxels: width } = fixture.reference;
    const out = await runHead(heads.lowLevel, { voxels: new ort.Tensor('float32', fixture.array('voxels'), [batch, width]) });
    const diff = maxAbsDiff(out, fixture.array('lowlevel'));
    t.diagnostic(`max abs diff ${diff}`);
    assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
  });

  for (const kind of ['ddpm', 'ddim'] as const) {
    test(`prior ${kind} sampling matches the PyTorch loop`, async (t) => {
      const { batch, tokens, clip } = fixture.reference;
      const run = fixture.reference.sampling.find((r) => r.kind === kind);
      assert.ok(run, `reference has a ${kind} run`);
      const model = loadManifest(fixture.modelDir);
      const schedule = loadPriorSchedule(join(model.dir, model.manifest.heads.prior.scheduleFile as string));
      let calls = 0;
      const denoiser = onnxDenoiser(heads.prior, tokens, clip);
      const out = await samplePrior({
        denoiser: (...args) => {
          calls++;
          return denoiser(...args);
        },
        schedule, brainEmbed: fixture.array('backbone'), batch, tokens, dim: clip,
        steps: run.steps, guidance: run.guidance,
        noise: arrayNoise(fixture.array(`${run.name}.noise_init`), fixture.array(`${run.name}.noise_steps`)),
      });
      assert.equal(calls, run.updates, 'one denoiser call per timestep');
      const diff = maxAbsDiff(out, fixture.array(`${run.name}.out`));
      t.diagnostic(`max abs diff ${diff}`);
      assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
    });
  }
});

describe('MindEye1 low-level checkpoint with pre-0.14 diffusers names', () => {
  let fixture: Fixture;

  before(async () => {
    fixture = await makeExportedModel(['--lowlevel', '--legacy-attention-names', '--voxels', '120', '--hidden', '32', '--tokens', '3',
      '--clip', '16', '--sampling', 'ddim:5:1', '--batch', '2'], { lowlevel: true });
  });

  after(() => {
    if (fixture) rmSync(fixture.dir, { recursive: true, force: true });
  });

  test('legacy attention names load and match', async (t) => {
    const head = await loadHead(loadManifest(fixture.modelDir), 'lowLevel', { device: 'cpu' });
    const { batch, voxels } = fixture.reference;
    const out = await runHead(head, { voxels: new ort.Tensor('float32', fixture.array('voxels'), [batch, voxels]) });
    const diff = maxAbsDiff(out, fixture.array('lowlevel'));
    t.diagnostic(`max abs diff ${diff}`);
    assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
  });
});
