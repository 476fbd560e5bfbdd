import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectedTopOne, meanTopOne, topOneHitRate, type RankedQuery } from '../../src/eval/sampling.ts';
import { rankOf } from '../../src/decode/retrieval.ts';
import { Prng } from '../../src/sim/prng.ts';

function randomRows(rng: Prng, rows: number, dim: number): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let i = 0; i < out.length; i++) out[i] = rng.normal();
  return out;
}

/** Queries of brain embeddings against a pool of image embeddings; query i's true image is row i % pool. */
function queriesFor(brains: Float32Array, images: Float32Array, dim: number): RankedQuery[] {
  const pool = images.length / dim;
  const count = brains.length / dim;
  const queries: RankedQuery[] = [];
  for (let i = 0; i < count; i++) {
    const rank = rankOf(brains.subarray(i * dim, (i + 1) * dim), images, dim, i % pool);
    queries.push({ key: i, pool, better: rank - 1 });
  }
  return queries;
}

test('perfect embeddings give top-1 of 1', () => {
  const rng = new Prng(1);
  const dim = 16;
  const images = randomRows(rng, 100, dim);
  const queries = queriesFor(images, images, dim);
  assert.ok(queries.every((q) => q.better === 0), 'each embedding is its own nearest neighbour');
  assert.equal(meanTopOne(queries, { candidates: 10, draws: 30, seed: 0 }), 1);
  assert.equal(meanTopOne(queries, { candidates: 100, draws: 30, seed: 0 }), 1);
});

test('random embeddings give about 1/N', () => {
  // 2000 random brain embeddings against 200 random image embeddings: each true rank is
  // uniform on 1..200. The bound is 4 standard deviations of the sampled mean: the spread of
  // the exact per-query expectation over uniform ranks, plus the binomial noise of the draws.
  const rng = new Prng(7);
  const dim = 16;
  const pool = 200;
  const n = 20;
  const draws = 30;
  const images = randomRows(rng, pool, dim);
  const brains = randomRows(rng, 2000, dim);
  const queries = queriesFor(brains, images, dim);
  const sampled = meanTopOne(queries, { candidates: n, draws, seed: 3 })!;

  const exact = Array.from({ length: pool }, (_, better) => expectedTopOne({ key: 0, pool, better }, n));
  const mean = exact.reduce((a, b) => a + b, 0) / pool;
  assert.ok(Math.abs(mean - 1 / n) < 1e-12, `the exact expectation over uniform ranks is 1/N (${mean})`);
  const spread = exact.reduce((a, p) => a + (p - mean) ** 2, 0) / pool;
  const drawNoise = exact.reduce((a, p) => a + p * (1 - p), 0) / pool / draws;
  const bound = 4 * Math.sqrt((spread + drawNoise) / queries.length);
  assert.ok(Math.abs(sampled - 1 / n) < bound, `sampled ${sampled} vs 1/N ${1 / n}, bound ${bound}`);
  assert.ok(bound < 0.5 / n, `the bound ${bound} is tight enough to tell 1/N from 1/(2N)`);
});

test('draws converge to the exact expectation', () => {
  // Given the ranks, only the draws are random: the bound is 4 standard deviations of the
  // mean of `draws` Bernoulli trials per query.
  const rng = new Prng(11);
  const pool = 300;
  const draws = 30;
  const queries: RankedQuery[] = Array.from({ length: 400 }, (_, i) => ({ key: i, pool, better: rng.int(40) }));
  for (const n of [2, 10, 50, 300]) {
    const sampled = meanTopOne(queries, { candidates: n, draws, seed: 5 })!;
    const expected = queries.reduce((a, q) => a + expectedTopOne(q, n), 0) / queries.length;
    const variance = queries.reduce((a, q) => {
      const p = expectedTopOne(q, n);
      return a + p * (1 - p);
    }, 0) / draws / queries.length ** 2;
    const bound = 4 * Math.sqrt(variance) + 1e-12;
    assert.ok(Math.abs(sampled - expected) <= bound, `N=${n}: sampled ${sampled} vs expected ${expected}, bound ${bound}`);
  }
});

test('all candidates give the exact top-1', () => {
  const queries: RankedQuery[] = [{ key: 1, pool: 125, better: 0 }, { key: 2, pool: 125, better: 1 }, { key: 3, pool: 125, better: 90 }];
  assert.deepEqual(queries.map((q) => topOneHitRate(q, { candidates: 125, draws: 30, seed: 0 })), [1, 0, 0]);
  // A request above the pool is clamped to the pool.
  assert.deepEqual(queries.map((q) => topOneHitRate(q, { candidates: 1000, draws: 30, seed: 0 })), [1, 0, 0]);
  assert.equal(expectedTopOne(queries[1], 125), 0);
  assert.equal(expectedTopOne(queries[0], 125), 1);
});

test('two candidates match the 2-way fraction', () => {
  // With N = 2, a draw is a hit when the one other candidate is not among the `better` ones.
  const q: RankedQuery = { key: 'x', pool: 101, better: 25 };
  assert.equal(expectedTopOne(q, 2), 0.75);
});

test('same seed gives the same draws', () => {
  const q: RankedQuery = { key: 9, pool: 500, better: 3 };
  const a = topOneHitRate(q, { candidates: 100, draws: 200, seed: 42 });
  const b = topOneHitRate(q, { candidates: 100, draws: 200, seed: 42 });
  assert.equal(a, b);
  const others = [1, 2, 3, 4, 5].map((seed) => topOneHitRate(q, { candidates: 100, draws: 200, seed }));
  assert.ok(others.some((x) => x !== a), 'other seeds draw other subsets');
});

test('query result ignores the other queries', () => {
  const q: RankedQuery = { key: 'trial 4', pool: 300, better: 7 };
  const settings = { candidates: 60, draws: 50, seed: 1 };
  const alone = meanTopOne([q], settings)!;
  const inGroup = [q, { key: 'trial 5', pool: 300, better: 2 }].map((x) => topOneHitRate(x, settings))[0];
  assert.equal(alone, inGroup);
});

test('invalid queries are rejected', () => {
  const settings = { candidates: 10, draws: 5, seed: 0 };
  assert.throws(() => topOneHitRate({ key: 1, pool: 10, better: 10 }, settings), /pool 10, better 10/);
  assert.throws(() => topOneHitRate({ key: 1, pool: 0, better: 0 }, settings), /Invalid ranked query/);
  assert.throws(() => topOneHitRate({ key: 1, pool: 10, better: -1 }, settings), /0 <= better < pool/);
  assert.equal(meanTopOne([], settings), undefined);
});
