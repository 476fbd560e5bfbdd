import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { exportCheckpoint } from '../../src/cli/export.ts';
import { MindeyeError } from '../../src/errors.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import { checkHeadShapes, loadHead, ort, runHead } from '../../src/decode/ort.ts';
import { arrayNoise, createPriorSampler } from '../../src/decode/prior.ts';
import { makeExportedModel, maxAbsDiff, type Fixture } from './export-fixture.ts';

const TOLERANCE = 1e-4;

describe('MindEye2 export parity with PyTorch (reduced width)', () => {
  let fixture: Fixture;

  before(async () => {
    fixture = await makeExportedModel(['--arch', 'mindeye2', '--voxels', '200', '--hidden', '48', '--tokens', '4', '--clip', '24', '--lowlevel',
      // MindEye2's prior has 52-wide heads, so rotary embeddings cover 32 of 52 dimensions.
      '--dim-head', '52', '--prior-heads', '2', '--sampling', 'ddim:20:1,ddim:10:3.5'],
      { ridgeIndex: 1 });
  });

  after(() => {
    if (fixture) rmSync(fixture.dir, { recursive: true, force: true });
  });

  test('exports the chosen ridge layer', () => {
    const { manifest } = loadManifest(fixture.modelDir);
    assert.equal(manifest.provenance?.arch, 'mindeye2');
    assert.equal(manifest.voxels.count, 200);
    assert.deepEqual(Object.keys(manifest.heads).sort(), ['backbone', 'lowLevel', 'prior', 'retrieval']);
    assert.deepEqual(manifest.heads.lowLevel.latentShape, [4, 28, 28]);
    assert.equal(manifest.heads.prior.steps, 20, 'MindEye2 samples the prior with 20 DDIM steps');
    assert.equal(manifest.heads.prior.guidance, 1);
  });

  test('ambiguous ridge layers need --ridge-index', async () => {
    // The checkpoint has two ridge layers (207 and 200 voxels) and neither is subject 1's count.
    await assert.rejects(
      exportCheckpoint({ checkpoint: fixture.checkpoint, arch: 'mindeye2', subject: 1, out: join(fixture.dir, 'other'), width: 48 }),
      (err: unknown) => err instanceof MindeyeError && err.code === 'MODEL_VOXELS_MISMATCH' && err.message.includes('--ridge-index')
        && err.message.includes('[207, 200]'),
    );
  });

  test('backbone and projector match PyTorch', async (t) => {
    const model = loadManifest(fixture.modelDir);
    const { batch, voxels, tokens, clip } = fixture.reference;
    const backbone = await loadHead(model, 'backbone', { device: 'cpu' });
    checkHeadShapes(backbone, voxels);
    const latent = await runHead(backbone, { voxels: new ort.Tensor('float32', fixture.array('voxels'), [batch, voxels]) });
    const latentDiff = maxAbsDiff(latent, fixture.array('backbone'));
    t.diagnostic(`backbone max abs diff ${latentDiff}`);
    assert.ok(latentDiff < TOLERANCE, `backbone max abs diff ${latentDiff}`);
    const retrieval = await loadHead(model, 'retrieval', { device: 'cpu' });
    const embedding = await runHead(retrieval, { latent: new ort.Tensor('float32', latent, [batch, tokens, clip]) });
    const embeddingDiff = maxAbsDiff(embedding, fixture.array('retrieval'));
    t.diagnostic(`retrieval max abs diff ${embeddingDiff}`);
    assert.ok(embeddingDiff < TOLERANCE, `retrieval max abs diff ${embeddingDiff}`);
  });

  for (const runName of ['ddim20_g1', 'ddim10_g3.5']) {
    test(`prior ${runName} sampling matches PyTorch`, async (t) => {
      const { batch } = fixture.reference;
      const run = fixture.reference.sampling.find((r) => r.name === runName);
      assert.ok(run, `reference has run ${runName}`);
      const sampler = await createPriorSampler(loadManifest(fixture.modelDir), { device: 'cpu' });
      assert.equal(sampler.steps, 20);
      const out = await sampler.sample(fixture.array('backbone'), batch, {
        steps: run.steps, guidance: run.guidance,
        noise: arrayNoise(fixture.array(`${run.name}.noise_init`), fixture.array(`${run.name}.noise_steps`)),
      });
      const diff = maxAbsDiff(out, fixture.array(`${run.name}.out`));
      t.diagnostic(`max abs diff ${diff}`);
      assert.ok(diff < TOLERANCE, `max abs diff ${diff}`);
    });
  }

  test('blurry low-level head matches PyTorch', async (t) => {
    const { batch, voxels } = fixture.reference;
    const head = await loadHead(loadManifest(fixture.modelDir), 'lowLevel', { device: 'cpu' });
    checkHeadShapes(head, voxels);
    const latents = await runHead(head, { voxels: new ort.Tensor('float32', fixture.array('voxels'), [batch, voxels]) });
    const diff = maxAbsDiff(latents, fixture.array('lowlevel'));
    t.diagnostic(`blurry max abs diff ${diff}`);
    assert.ok(diff < TOLERANCE, `blurry max abs diff ${diff}`);
  });
});
