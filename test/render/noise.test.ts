import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gaussianNoise, trialSeed } from '../../src/render/noise.ts';

test('noise is standard normal', () => {
  const samples = gaussianNoise(200_001, 12345);
  let sum = 0;
  let sumSquares = 0;
  let beyondTwo = 0;
  for (const x of samples) {
    sum += x;
    sumSquares += x * x;
    if (Math.abs(x) > 2) beyondTwo++;
  }
  const mean = sum / samples.length;
  const variance = sumSquares / samples.length - mean * mean;
  // Standard errors at n = 200001: 0.0022 for the mean, 0.0032 for the variance.
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.015, `variance ${variance}`);
  const tail = beyondTwo / samples.length;
  assert.ok(Math.abs(tail - 0.0455) < 0.003, `P(|x| > 2) = ${tail}`);
  assert.ok(samples.every(Number.isFinite));
});

test('noise repeats for the same seed', () => {
  assert.deepEqual(gaussianNoise(101, 7), gaussianNoise(101, 7));
  assert.notDeepEqual(gaussianNoise(101, 7), gaussianNoise(101, 8));
});

test('trial seeds differ across trials and runs', () => {
  const seeds = new Set<number>();
  for (let run = 0; run < 4; run++) for (let trial = 0; trial < 750; trial++) seeds.add(trialSeed(run, trial));
  assert.equal(seeds.size, 4 * 750);
  assert.ok([...seeds].every((s) => Number.isInteger(s) && s >= 0 && s < 2 ** 32));
});
