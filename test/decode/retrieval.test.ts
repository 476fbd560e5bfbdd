import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MindeyeError } from '../../src/errors.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import {
  brainRetrieval, cosine, loadImageBank, rankOf, topK, twoAfc, twoAfcAccuracy, type EmbeddingBank,
} from '../../src/decode/retrieval.ts';

const f32 = (...values: number[]) => Float32Array.from(values);

const bank: EmbeddingBank = {
  ids: ['cat', 'dog', 'car', 'tree'],
  embeddings: f32(1, 0, 0, /**/ 0.8, 0.6, 0, /**/ 0, 0, 1, /**/ -1, 0, 0),
  dim: 3,
};

describe('cosine retrieval', () => {
  test('topK returns the closest ids best first', () => {
    const matches = topK(f32(2, 0.2, 0), bank, 2);
    assert.deepEqual(matches.map((m) => m.id), ['cat', 'dog']);
    assert.ok(Math.abs(matches[0].score - 2 / Math.hypot(2, 0.2)) < 1e-9);
    assert.equal(matches[1].index, 1);
  });

  test('topK ignores the embedding scale', () => {
    const small = topK(f32(0.1, 0.01, 0), bank, 4);
    const large = topK(f32(100, 10, 0), bank, 4);
    assert.deepEqual(small.map((m) => m.id), large.map((m) => m.id));
    small.forEach((m, i) => assert.ok(Math.abs(m.score - large[i].score) < 1e-6));
  });

  test('topK with k above the bank size returns all', () => {
    const matches = topK(f32(0, 0, 1), bank, 10);
    assert.equal(matches.length, 4);
    assert.equal(matches[0].id, 'car');
    assert.equal(matches[3].id, 'tree', 'the opposite vector ranks last');
  });

  test('ties keep the lower index first', () => {
    const tied: EmbeddingBank = { ids: ['a', 'b', 'c'], embeddings: f32(0, 1, /**/ 1, 0, /**/ 0, 1), dim: 2 };
    assert.deepEqual(topK(f32(0, 1), tied, 3).map((m) => m.id), ['a', 'c', 'b']);
  });

  test('invalid k is rejected', () => {
    assert.throws(() => topK(f32(1, 0, 0), bank, 0), (err: unknown) => err instanceof MindeyeError && err.code === 'CLI_USAGE');
  });

  test('embedding of another width is rejected', () => {
    assert.throws(() => topK(f32(1, 0), bank, 1), (err: unknown) => err instanceof MindeyeError && err.message.includes('2 values') && err.message.includes('3 values'));
  });

  test('bank with fewer rows than ids is rejected', () => {
    const broken: EmbeddingBank = { ids: ['a', 'b'], embeddings: f32(1, 0, 0), dim: 3 };
    assert.throws(() => topK(f32(1, 0, 0), broken, 1), (err: unknown) => err instanceof MindeyeError && err.message.includes('rows'));
  });

  test('zero vector scores zero', () => {
    assert.equal(cosine(f32(0, 0, 0), f32(1, 2, 3)), 0);
  });

  test('rankOf gives the 1-based rank of the target', () => {
    assert.equal(rankOf(f32(1, 0.1, 0), bank.embeddings, 3, 0), 1);
    assert.equal(rankOf(f32(1, 0.1, 0), bank.embeddings, 3, 3), 4);
    assert.throws(() => rankOf(f32(1, 0, 0), bank.embeddings, 3, 4), (err: unknown) => err instanceof MindeyeError);
  });

  test('brain retrieval ranks trials for an image', () => {
    const trials = f32(0, 1, /**/ 1, 0.1, /**/ -1, 0);
    const ranking = brainRetrieval(f32(1, 0), trials);
    assert.deepEqual(ranking.map((r) => r.trial), [1, 0, 2]);
    assert.equal(brainRetrieval(f32(1, 0), trials, 1).length, 1);
  });

  test('2-AFC picks the closer pair-mate', () => {
    const seen = f32(1, 0);
    const lure = f32(0.9, 0.45);
    assert.equal(twoAfc(f32(1, 0.1), seen, lure), true);
    assert.equal(twoAfc(f32(1, 0.5), seen, lure), false);
    assert.equal(twoAfc(f32(1, 0), seen, seen), false, 'a tie is a miss');
    assert.equal(twoAfcAccuracy([{ brain: f32(1, 0.1), seen, lure }, { brain: f32(1, 0.5), seen, lure }]), 0.5);
    assert.ok(Number.isNaN(twoAfcAccuracy([])));
  });
});

describe('image bank files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-bank-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  function writeModel(ids: unknown, rows: number, dim: number): string {
    writeFileSync(join(dir, 'head.onnx'), '');
    writeFileSync(join(dir, 'bank_ids.json'), JSON.stringify(ids));
    writeFileSync(join(dir, 'bank.f32'), Buffer.from(new Float32Array(rows * dim).fill(0.5).buffer));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({
      format: 'mindeye-rt-model', version: 1, name: 'bank-test', voxels: { count: 4 },
      heads: { backbone: { file: 'head.onnx', input: 'voxels' } },
      imageBank: { ids: 'bank_ids.json', embeddings: 'bank.f32', dim },
    }));
    return dir;
  }

  test('bank loads with its ids and rows', () => {
    const loaded = loadImageBank(loadManifest(writeModel(['x', 'y'], 2, 3)));
    assert.deepEqual(loaded.ids, ['x', 'y']);
    assert.equal(loaded.embeddings.length, 6);
  });

  test('bank with a short embedding file is rejected', () => {
    assert.throws(() => loadImageBank(loadManifest(writeModel(['x', 'y', 'z'], 2, 3))),
      (err: unknown) => err instanceof MindeyeError && err.code === 'MODEL_SHAPE_MISMATCH' && err.message.includes('36 bytes'));
  });

  test('bank ids that are not strings are rejected', () => {
    assert.throws(() => loadImageBank(loadManifest(writeModel([1, 2], 2, 3))),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('imageBank.ids'));
  });
});
