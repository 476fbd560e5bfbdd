import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MindeyeError } from '../../src/errors.ts';
import {
  arrayNoise, cosineSchedule, ddimTimePairs, gaussianNoise, loadPriorSchedule, samplePrior, type Denoiser,
} from '../../src/decode/prior.ts';
import { PYTHON } from './export-fixture.ts';

const TOOLS = new URL('../../tools', import.meta.url).pathname;

/** Runs a Python snippet with tools/ on the path and parses its JSON output. */
function python(code: string): unknown {
  const out = execFileSync(PYTHON, ['-c', `import sys, json; sys.path.insert(0, ${JSON.stringify(TOOLS)})\n${code}`], {
    encoding: 'utf8', env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  return JSON.parse(out);
}

/** Returns a denoiser that predicts `cond` with the conditioning kept and `uncond` without it. */
function constantDenoiser(cond: number, uncond: number, calls: Array<{ rows: number; keep: number[]; t: number[] }>): Denoiser {
  return async (x, t, _brain, keep, rows) => {
    calls.push({ rows, keep: Array.from(keep), t: Array.from(t) });
    const out = new Float32Array(x.length);
    const rowSize = x.length / rows;
    for (let r = 0; r < rows; r++) out.fill(keep[r] > 0.5 ? cond : uncond, r * rowSize, (r + 1) * rowSize);
    return out;
  };
}

describe('prior timestep schedule', () => {
  test('DDIM time pairs match torch.linspace truncation', () => {
    const cases: Array<[number, number]> = [[100, 20], [100, 7], [100, 50], [100, 99], [1000, 20], [1000, 333], [100, 1], [100, 2]];
    const expected = python(`from mindeye.sampling import ddim_time_pairs
print(json.dumps([ddim_time_pairs(t, s) for t, s in ${JSON.stringify(cases)}]))`) as Array<Array<[number, number]>>;
    cases.forEach(([total, steps], i) => assert.deepEqual(ddimTimePairs(total, steps), expected[i], `total ${total}, steps ${steps}`));
  });

  test('cosine schedule matches the PyTorch buffers', () => {
    const buffers = python(`from mindeye.me1 import NoiseSchedule
s = NoiseSchedule(100)
print(json.dumps({k: [float(v) for v in getattr(s, k)] for k in ['alphas_cumprod_prev', 'posterior_mean_coef1', 'posterior_mean_coef2', 'posterior_log_variance_clipped', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod']}))`) as Record<string, number[]>;
    const ours = cosineSchedule(100);
    const pairs: Array<[Float64Array, number[]]> = [
      [ours.alphasCumprodPrev, buffers.alphas_cumprod_prev], [ours.posteriorMeanCoef1, buffers.posterior_mean_coef1],
      [ours.posteriorMeanCoef2, buffers.posterior_mean_coef2], [ours.posteriorLogVarianceClipped, buffers.posterior_log_variance_clipped],
      [ours.sqrtRecipAlphasCumprod, buffers.sqrt_recip_alphas_cumprod], [ours.sqrtRecipm1AlphasCumprod, buffers.sqrt_recipm1_alphas_cumprod],
    ];
    for (const [a, b] of pairs) {
      assert.equal(a.length, b.length);
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 * Math.max(1, Math.abs(b[i])), `index ${i}: ${a[i]} vs ${b[i]}`);
    }
  });
});

describe('prior schedule file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-prior-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('short schedule array is rejected', () => {
    const file = join(dir, 'short.json');
    const arr = (n: number) => Array.from({ length: n }, () => 0.5);
    writeFileSync(file, JSON.stringify({
      betas: arr(10), alphas_cumprod_prev: arr(10), sqrt_recip_alphas_cumprod: arr(10), sqrt_recipm1_alphas_cumprod: arr(9),
      posterior_log_variance_clipped: arr(10), posterior_mean_coef1: arr(10), posterior_mean_coef2: arr(10),
    }));
    assert.throws(() => loadPriorSchedule(file), (err: unknown) => err instanceof MindeyeError
      && err.message.includes('sqrt_recipm1_alphas_cumprod') && err.message.includes('9 values'));
  });

  test('unreadable schedule file is rejected', () => {
    assert.throws(() => loadPriorSchedule(join(dir, 'absent.json')), (err: unknown) => err instanceof MindeyeError && err.code === 'MODEL_FILE_MISSING');
  });
});

describe('prior sampling loop', () => {
  const schedule = cosineSchedule(100);
  const shape = { batch: 2, tokens: 3, dim: 4 };
  const size = 2 * 3 * 4;
  let brain: Float32Array;

  before(() => {
    brain = gaussianNoise(7).initial(size);
  });

  test('DDPM ends on the predicted embedding', async () => {
    const calls: Array<{ rows: number; keep: number[]; t: number[] }> = [];
    const out = await samplePrior({ denoiser: constantDenoiser(0.25, -1, calls), schedule, brainEmbed: brain, ...shape, steps: 100, guidance: 1, noise: gaussianNoise(1) });
    assert.equal(calls.length, 100);
    assert.deepEqual(calls[0].t, [99, 99]);
    assert.deepEqual(calls[99].t, [0, 0]);
    for (const v of out) assert.ok(Math.abs(v - 0.25) < 1e-6, `value ${v}`);
  });

  test('guidance runs both predictions in one call', async () => {
    const calls: Array<{ rows: number; keep: number[]; t: number[] }> = [];
    const out = await samplePrior({ denoiser: constantDenoiser(1, 0.5, calls), schedule, brainEmbed: brain, ...shape, steps: 10, guidance: 3, noise: gaussianNoise(2) });
    assert.equal(calls.length, 9, 'DDIM with 10 points makes 9 calls');
    assert.equal(calls[0].rows, 4);
    assert.deepEqual(calls[0].keep, [1, 1, 0, 0]);
    // x_start = null + (cond - null) * guidance = 0.5 + 0.5 * 3, and DDIM's last step returns x_start.
    for (const v of out) assert.ok(Math.abs(v - 2) < 1e-6, `value ${v}`);
  });

  test('array noise must cover every update', async () => {
    const noise = arrayNoise(new Float32Array(size), new Float32Array(size * 3));
    await assert.rejects(
      samplePrior({ denoiser: constantDenoiser(0, 0, []), schedule, brainEmbed: brain, ...shape, steps: 100, guidance: 1, noise }),
      (err: unknown) => err instanceof MindeyeError && err.message.includes('noise step 3'),
    );
  });

  test('wrong brain embedding size is rejected', async () => {
    await assert.rejects(
      samplePrior({ denoiser: constantDenoiser(0, 0, []), schedule, brainEmbed: new Float32Array(5), ...shape, steps: 5, guidance: 1, noise: gaussianNoise(3) }),
      (err: unknown) => err instanceof MindeyeError && err.code === 'MODEL_SHAPE_MISMATCH' && err.message.includes('[2, 3, 4]'),
    );
  });

  test('zero steps are rejected', async () => {
    await assert.rejects(
      samplePrior({ denoiser: constantDenoiser(0, 0, []), schedule, brainEmbed: brain, ...shape, steps: 0, guidance: 1, noise: gaussianNoise(3) }),
      (err: unknown) => err instanceof MindeyeError && err.code === 'CLI_USAGE',
    );
  });

  test('seeded noise is repeatable and standard normal', () => {
    const a = gaussianNoise(42).initial(20001);
    const b = gaussianNoise(42).initial(20001);
    assert.deepEqual(a, b);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
    assert.ok(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
  });
});
