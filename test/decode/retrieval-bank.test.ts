import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { buildBank, run as runBank } from '../../src/cli/bank.ts';
import { MindeyeError } from '../../src/errors.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import { loadImageBank, topK } from '../../src/decode/retrieval.ts';
import { PYTHON, maxAbsDiff } from './export-fixture.ts';

const SIZE = 32;

// Writes a model directory with a voxel head and a small convolutional image encoder, an HDF5
// imgBrick, and the PyTorch embeddings of the PNG images in the folder (read back with skimage).
const BUILD_ENCODER = `
import json, os, sys, glob
import numpy as np, torch, h5py
from skimage import io
out, images, encoder_dir = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 6)).eval()
torch.onnx.export(enc, (torch.randn(2, 3, ${SIZE}, ${SIZE}),), os.path.join(encoder_dir, 'encoder.onnx'), input_names=['pixels'],
                  output_names=['embedding'], dynamic_axes={'pixels': {0: 'b'}, 'embedding': {0: 'b'}}, opset_version=17)
torch.onnx.export(torch.nn.Linear(10, 2), (torch.randn(1, 10),), os.path.join(out, 'backbone.onnx'), input_names=['voxels'],
                  output_names=['latent'], dynamic_axes={'voxels': {0: 'b'}, 'latent': {0: 'b'}}, opset_version=17)
json.dump({'format': 'mindeye-rt-model', 'version': 1, 'name': 'bank-test', 'voxels': {'count': 10},
           'heads': {'backbone': {'file': 'backbone.onnx', 'input': 'voxels'}}}, open(os.path.join(out, 'manifest.json'), 'w'))
json.dump({'format': 'mindeye-rt-model', 'version': 1, 'name': 'encoder-test', 'voxels': {'count': 1},
           'heads': {'imageEncoder': {'file': 'encoder.onnx', 'input': 'image', 'inputName': 'pixels', 'outputName': 'embedding',
                                      'inputSize': ${SIZE}, 'dim': 6, 'space': 'test-encoder'}}},
          open(os.path.join(encoder_dir, 'manifest.json'), 'w'))
mean = np.array([0.48145466, 0.4578275, 0.40821073]); std = np.array([0.26862954, 0.26130258, 0.27577711])
rows = []
for path in sorted(glob.glob(os.path.join(images, '*.png'))):
    img = io.imread(path)[..., :3].astype(np.float64) / 255
    x = torch.tensor(((img - mean) / std).transpose(2, 0, 1)[None], dtype=torch.float32)
    rows.append(enc(x).detach().numpy()[0])
np.array(rows, dtype='<f4').tofile(os.path.join(out, 'reference.f32'))
with h5py.File(os.path.join(out, 'stimuli.hdf5'), 'w') as f:
    f.create_dataset('imgBrick', data=np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8))
`;

describe('bank command', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-bank-cli-'));
  const images = join(dir, 'images');
  const model = join(dir, 'model');
  const encoder = join(dir, 'encoder');

  before(async () => {
    mkdirSync(images);
    mkdirSync(model);
    mkdirSync(encoder);
    for (const [i, name] of ['apple', 'boat', 'cloud'].entries()) {
      const rgb = Buffer.alloc(SIZE * SIZE * 3);
      for (let p = 0; p < SIZE * SIZE; p++) {
        rgb[p * 3] = (p * (i + 3)) % 256;
        rgb[p * 3 + 1] = (p >> 2) * (i + 1) % 256;
        rgb[p * 3 + 2] = 60 * i;
      }
      await sharp(rgb, { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toFile(join(images, `${name}.png`));
    }
    execFileSync(PYTHON, ['-c', BUILD_ENCODER, model, images, encoder], { stdio: ['ignore', 'ignore', 'pipe'] });
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  test('folder bank matches the PyTorch encoder', async () => {
    const result = await buildBank({ images, encoder, out: model, batch: 2 });
    assert.deepEqual(result, { count: 3, dim: 6 });
    const bank = loadImageBank(loadManifest(model));
    assert.deepEqual(bank.ids, ['apple', 'boat', 'cloud']);
    const buf = readFileSync(join(model, 'reference.f32'));
    const reference = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    assert.ok(maxAbsDiff(bank.embeddings, reference) < 1e-4, `max abs diff ${maxAbsDiff(bank.embeddings, reference)}`);
    assert.equal(topK(bank.embeddings.slice(6, 12), bank, 1)[0].id, 'boat');
    const thumb = await sharp(join(model, 'thumbs', 'boat.jpg')).metadata();
    assert.equal(thumb.format, 'jpeg');
    assert.equal(thumb.width, 128);
    assert.equal(loadManifest(model).manifest.imageBank?.space, 'test-encoder');
  });

  test('HDF5 bank encodes the chosen ids', async () => {
    const result = await buildBank({ images: join(model, 'stimuli.hdf5'), encoder, out: model, ids: '2,4', thumbSize: 40 });
    assert.equal(result.count, 2);
    const bank = loadImageBank(loadManifest(model));
    assert.deepEqual(bank.ids, ['2', '4']);
    assert.ok(existsSync(join(model, 'thumbs', '4.jpg')));
    assert.ok(bank.embeddings.every(Number.isFinite));
  });

  test('HDF5 id outside the rows is rejected', async () => {
    await assert.rejects(buildBank({ images: join(model, 'stimuli.hdf5'), encoder, out: model, ids: '5' }),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('--ids') && err.message.includes('1 to 4'));
  });

  test('encoder model without imageEncoder is rejected', async () => {
    await assert.rejects(buildBank({ images, encoder: model, out: model }),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('heads.imageEncoder') && err.message.includes('backbone'));
  });

  test('missing images path and bad flags are rejected', async () => {
    await assert.rejects(buildBank({ images: join(dir, 'none'), encoder, out: model }),
      (err: unknown) => err instanceof MindeyeError && err.code === 'MODEL_FILE_MISSING');
    await assert.rejects(runBank(['--images', images, '--encoder', encoder, '--out', model, '--limit', '0']),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('--limit'));
    await assert.rejects(runBank(['--images', images, '--encoder', encoder]),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('--out'));
    await assert.rejects(buildBank({ images, encoder, out: model, ids: '1' }),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('HDF5'));
  });
});
