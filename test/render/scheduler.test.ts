import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addNoise, applyGuidance, ddimStep, makeAlphasCumprod, makeBetas, makeTimesteps, planImg2Img, type DdimConfig } from '../../src/render/scheduler.ts';

const SD: DdimConfig = {
  trainTimesteps: 1000, betaSchedule: 'scaled_linear', betaStart: 0.00085, betaEnd: 0.012,
  steps: 20, strength: 0.85, timestepSpacing: 'leading', stepsOffset: 1, setAlphaToOne: false,
};

test('leading spacing matches diffusers for Stable Diffusion', () => {
  const expected = Array.from({ length: 20 }, (_, i) => 951 - 50 * i);
  assert.deepEqual(makeTimesteps(SD), expected);
});

test('trailing spacing ends at the step before zero', () => {
  const timesteps = makeTimesteps({ ...SD, timestepSpacing: 'trailing' });
  assert.equal(timesteps[0], 999);
  assert.equal(timesteps.at(-1), 49);
  assert.equal(timesteps.length, 20);
  // Non-integer step ratio: numpy rounds 666.67 and 333.33.
  assert.deepEqual(makeTimesteps({ ...SD, steps: 3, timestepSpacing: 'trailing' }), [999, 666, 332]);
});

test('img2img keeps floor(steps * strength) timesteps', () => {
  const plan = planImg2Img(SD);
  assert.equal(plan.timesteps.length, 17);
  assert.equal(plan.timesteps[0], 801);
  assert.equal(plan.timesteps.at(-1), 1);
  assert.equal(planImg2Img({ ...SD, strength: 1 }).timesteps.length, 20);
  assert.equal(planImg2Img({ ...SD, strength: 0.04 }).timesteps.length, 0);
});

test('last step uses the final alpha product', () => {
  const alphas = makeAlphasCumprod(makeBetas(SD));
  const plan = planImg2Img(SD);
  assert.equal(plan.alphaProductsPrev.at(-1), alphas[0]);
  assert.equal(planImg2Img({ ...SD, setAlphaToOne: true }).alphaProductsPrev.at(-1), 1);
  assert.equal(plan.alphaProductsPrev[0], alphas[751]);
  assert.equal(plan.startAlphaProduct, alphas[801]);
});

test('beta schedules have their defining values', () => {
  const linear = makeBetas({ ...SD, betaSchedule: 'linear', betaStart: 0.0001, betaEnd: 0.02 });
  assert.equal(linear[0], 0.0001);
  assert.ok(Math.abs(linear[999] - 0.02) < 1e-15);
  const scaled = makeBetas(SD);
  assert.ok(Math.abs(scaled[0] - 0.00085) < 1e-15);
  assert.ok(Math.abs(scaled[999] - 0.012) < 1e-15);
  const cosine = makeBetas({ ...SD, betaSchedule: 'squaredcos_cap_v2' });
  assert.equal(cosine[999], 0.999);
  assert.ok(cosine.every((b) => b > 0 && b <= 0.999));
});

test('DDIM step with zero noise prediction rescales the sample', () => {
  const sample = Float32Array.of(1, -2, 0.5);
  const { prevSample, predictedOriginal } = ddimStep(sample, new Float32Array(3), 0.25, 0.64);
  assert.deepEqual(Array.from(predictedOriginal), [2, -4, 1]);
  assert.deepEqual(Array.from(prevSample), [1.6, -3.2, 0.8].map(Math.fround));
});

test('guidance 1 returns the conditional prediction', () => {
  const epsNull = Float32Array.of(1, 2);
  const epsCond = Float32Array.of(3, -1);
  assert.deepEqual(Array.from(applyGuidance(epsNull, epsCond, 1)), [3, -1]);
  assert.deepEqual(Array.from(applyGuidance(epsNull, epsCond, 0)), [1, 2]);
  assert.deepEqual(Array.from(applyGuidance(epsNull, epsCond, 3)), [7, -7]);
});

test('noising to alpha product 1 keeps the latents', () => {
  const latents = Float32Array.of(0.5, -0.25);
  assert.deepEqual(Array.from(addNoise(latents, Float32Array.of(9, 9), 1)), [0.5, -0.25]);
});
