/**
 * Diffusion prior sampling: turns a backbone latent (the brain embedding, [B, T, D]) into an
 * image embedding by running the prior's denoiser once per timestep.
 *
 * This is DALLE2-pytorch's DiffusionPrior loop as MindEye1 uses it. The denoiser predicts the
 * clean embedding (x_start). DDPM runs over all `timesteps`, and DDIM (eta 1 by default) over
 * fewer steps. Classifier-free guidance mixes a conditioned and an unconditioned prediction,
 * `null + (cond - null) * guidance`, both computed in one denoiser call of batch 2B. The
 * schedule coefficients are the float32 values the checkpoint stores (prior_schedule.json).
 *
 * ONNX denoiser tensors (tools/mindeye/me1.py, DenoiserForExport):
 *   image_embed [N, T, D] float32 (the noisy embedding), timestep [N] float32 (integer values),
 *   brain_embed [N, T, D] float32, cond_keep [N] float32 (1 keeps the conditioning, 0 swaps in
 *   the learned null brain and image embeddings) -> pred_x_start [N, T, D] float32.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import type { LoadedManifest } from './manifest.ts';
import { loadHead, ort, runHead, type LoadedHead, type SessionOptions } from './ort.ts';

export interface PriorSchedule {
  numTimesteps: number;
  alphasCumprodPrev: Float64Array;
  sqrtRecipAlphasCumprod: Float64Array;
  sqrtRecipm1AlphasCumprod: Float64Array;
  posteriorLogVarianceClipped: Float64Array;
  posteriorMeanCoef1: Float64Array;
  posteriorMeanCoef2: Float64Array;
}

const SCHEDULE_FIELDS = {
  alphasCumprodPrev: 'alphas_cumprod_prev',
  sqrtRecipAlphasCumprod: 'sqrt_recip_alphas_cumprod',
  sqrtRecipm1AlphasCumprod: 'sqrt_recipm1_alphas_cumprod',
  posteriorLogVarianceClipped: 'posterior_log_variance_clipped',
  posteriorMeanCoef1: 'posterior_mean_coef1',
  posteriorMeanCoef2: 'posterior_mean_coef2',
} as const;

/** Reads prior_schedule.json (arrays named as DALLE2's NoiseScheduler buffers). */
export function loadPriorSchedule(file: string, timesteps?: number): PriorSchedule {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new MindeyeError('MODEL_FILE_MISSING', `The prior schedule could not be read: ${(err as Error).message}`, {
      file, expected: 'a JSON file written by tools/mindeye_export.py', fix: 're-export the model',
    });
  }
  const betas = doc.betas;
  const count = timesteps ?? (Array.isArray(betas) ? betas.length : 0);
  const out: Partial<PriorSchedule> = { numTimesteps: count };
  for (const [field, key] of Object.entries(SCHEDULE_FIELDS)) {
    const values = doc[key];
    if (!Array.isArray(values) || values.length !== count || values.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'A prior schedule array is missing or has the wrong length.', {
        file, field: key, value: Array.isArray(values) ? `${values.length} values` : typeof values,
        expected: `${count} finite numbers (heads.prior.timesteps)`, fix: 're-export the model with tools/mindeye_export.py',
      });
    }
    (out as Record<string, unknown>)[field] = Float64Array.from(values as number[]);
  }
  if (count <= 0) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The prior schedule has no timesteps.', {
      file, field: 'betas', value: count, expected: 'a positive count', fix: 're-export the model',
    });
  }
  return out as PriorSchedule;
}

/**
 * DALLE2's cosine schedule (s = 0.008, betas clipped to 0.999), computed in float64 and rounded
 * to float32 like the buffers PyTorch stores. For heads without a schedule file.
 */
export function cosineSchedule(timesteps: number): PriorSchedule {
  const s = 0.008;
  const ac = (i: number) => Math.cos(((i / timesteps + s) / (1 + s)) * Math.PI * 0.5) ** 2;
  const betas = new Float64Array(timesteps);
  for (let i = 0; i < timesteps; i++) betas[i] = Math.min(Math.max(1 - ac(i + 1) / ac(i), 0), 0.999);
  const alphasCumprod = new Float64Array(timesteps);
  let product = 1;
  for (let i = 0; i < timesteps; i++) {
    product *= 1 - betas[i];
    alphasCumprod[i] = product;
  }
  const prev = (i: number) => (i === 0 ? 1 : alphasCumprod[i - 1]);
  const f32 = (fn: (i: number) => number) => Float64Array.from({ length: timesteps }, (_, i) => Math.fround(fn(i)));
  return {
    numTimesteps: timesteps,
    alphasCumprodPrev: f32(prev),
    sqrtRecipAlphasCumprod: f32((i) => Math.sqrt(1 / alphasCumprod[i])),
    sqrtRecipm1AlphasCumprod: f32((i) => Math.sqrt(1 / alphasCumprod[i] - 1)),
    posteriorLogVarianceClipped: f32((i) => Math.log(Math.max((betas[i] * (1 - prev(i))) / (1 - alphasCumprod[i]), 1e-20))),
    posteriorMeanCoef1: f32((i) => (betas[i] * Math.sqrt(prev(i))) / (1 - alphasCumprod[i])),
    posteriorMeanCoef2: f32((i) => ((1 - prev(i)) * Math.sqrt(1 - betas[i])) / (1 - alphasCumprod[i])),
  };
}

/**
 * DDIM (time, next time) pairs as DALLE2 picks them: `torch.linspace(-1, total, steps + 1)`
 * without its last point, truncated to integers, reversed. The linspace is evaluated the way
 * PyTorch's CPU kernel does in float32, so that truncation agrees near integers.
 */
export function ddimTimePairs(totalTimesteps: number, steps: number): Array<[number, number]> {
  const count = steps + 1;
  const start = -1;
  const end = totalTimesteps;
  const step = Math.fround((end - start) / (count - 1));
  const halfway = Math.floor(count / 2);
  const times: number[] = [];
  for (let i = 0; i < count - 1; i++) {
    const value = i < halfway ? Math.fround(start + Math.fround(step * i)) : Math.fround(end - Math.fround(step * (count - i - 1)));
    times.push(Math.trunc(value));
  }
  times.reverse();
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i + 1 < times.length; i++) pairs.push([times[i], times[i + 1]]);
  return pairs;
}

/** Source of standard normal noise: the initial sample and the noise of update k. */
export interface NoiseSource {
  initial(size: number): Float32Array;
  step(k: number, size: number): Float32Array;
}

/** Seeded standard normal noise (mulberry32 + Box-Muller); not PyTorch's generator. */
export function gaussianNoise(seed: number): NoiseSource {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const fill = (size: number) => {
    const out = new Float32Array(size);
    for (let i = 0; i < size; i += 2) {
      const u1 = Math.max(uniform(), 1e-12);
      const radius = Math.sqrt(-2 * Math.log(u1));
      const angle = 2 * Math.PI * uniform();
      out[i] = radius * Math.cos(angle);
      if (i + 1 < size) out[i + 1] = radius * Math.sin(angle);
    }
    return out;
  };
  return { initial: fill, step: (_k, size) => fill(size) };
}

/** Noise read from arrays (for example written by the PyTorch reference): initial, then one block per update. */
export function arrayNoise(initial: Float32Array, steps: Float32Array): NoiseSource {
  return {
    initial(size) {
      if (initial.length !== size) throw noiseSizeError('initial', initial.length, size);
      return initial;
    },
    step(k, size) {
      if ((k + 1) * size > steps.length) throw noiseSizeError(`step ${k}`, steps.length, (k + 1) * size);
      return steps.subarray(k * size, (k + 1) * size);
    },
  };
}

function noiseSizeError(block: string, length: number, expectedLength: number): MindeyeError {
  return new MindeyeError('MODEL_SHAPE_MISMATCH', 'The noise array is too short for the sampling run.', {
    field: `noise ${block}`, value: `${length} values`, expected: `at least ${expectedLength}`,
    fix: 'pass one [B, T, D] block for the start and one per update',
  });
}

/**
 * One denoiser call on N rows: x, brain [N * T * D], t and keep [N]. Returns x_start [N * T * D].
 */
export type Denoiser = (x: Float32Array, t: Float32Array, brain: Float32Array, keep: Float32Array, rows: number) => Promise<Float32Array>;

/** Wraps the exported prior head (see the tensor list at the top of this file). */
export function onnxDenoiser(head: LoadedHead, tokens: number, dim: number): Denoiser {
  const names = (head.spec.inputNames as string[] | undefined) ?? ['image_embed', 'timestep', 'brain_embed', 'cond_keep'];
  const [xName, tName, brainName, keepName] = names;
  return async (x, t, brain, keep, rows) => {
    const shape = [rows, tokens, dim];
    return runHead(head, {
      [xName]: new ort.Tensor('float32', x, shape),
      [tName]: new ort.Tensor('float32', t, [rows]),
      [brainName]: new ort.Tensor('float32', brain, shape),
      [keepName]: new ort.Tensor('float32', keep, [rows]),
    });
  };
}

export interface SampleOptions {
  denoiser: Denoiser;
  schedule: PriorSchedule;
  /** Backbone latent, [batch, tokens, dim] row-major. */
  brainEmbed: Float32Array;
  batch: number;
  tokens: number;
  dim: number;
  /**
   * DALLE2's `timesteps` argument. `schedule.numTimesteps` (or more) runs DDPM with one denoiser
   * call per timestep. Fewer runs DDIM, which makes steps - 1 calls because its last time point is -1.
   */
  steps: number;
  /** Classifier-free guidance scale; 1 runs only the conditioned prediction. */
  guidance: number;
  /** DDIM eta; DALLE2's default is 1. */
  eta?: number;
  noise: NoiseSource;
  /** Called after each update with the step index and the step count. */
  onStep?: (step: number, count: number) => void;
}

/** Runs the sampling loop and returns the image embedding, [batch, tokens, dim]. */
export async function samplePrior(opts: SampleOptions): Promise<Float32Array> {
  const { schedule, batch, tokens, dim, guidance } = opts;
  const size = batch * tokens * dim;
  if (opts.brainEmbed.length !== size) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The brain embedding does not match the prior shape.', {
      field: 'brainEmbed', value: `${opts.brainEmbed.length} values`, expected: `${size} ([${batch}, ${tokens}, ${dim}])`,
      fix: 'pass the backbone output of the same model',
    });
  }
  if (!Number.isInteger(opts.steps) || opts.steps < 1) {
    throw new MindeyeError('CLI_USAGE', 'Invalid prior step count.', {
      field: 'steps', value: opts.steps, expected: `an integer from 1 to ${schedule.numTimesteps}`, fix: 'pass a positive step count',
    });
  }
  const predict = guidedPredictor(opts);
  // The updates round every operation to float32 in PyTorch's order, because the reference loop
  // runs in float32 and DDIM's noise estimate amplifies rounding differences near t = 0.
  const f = Math.fround;
  const x = Float32Array.from(opts.noise.initial(size));
  if (opts.steps >= schedule.numTimesteps) {
    for (let k = 0; k < schedule.numTimesteps; k++) {
      const i = schedule.numTimesteps - 1 - k;
      const xStart = await predict(x, i);
      const noise = opts.noise.step(k, size);
      const sigma = i === 0 ? 0 : f(Math.exp(f(0.5 * schedule.posteriorLogVarianceClipped[i])));
      const c1 = schedule.posteriorMeanCoef1[i];
      const c2 = schedule.posteriorMeanCoef2[i];
      for (let j = 0; j < size; j++) {
        const mean = f(f(c1 * xStart[j]) + f(c2 * x[j]));
        x[j] = mean + f(sigma * noise[j]);
      }
      opts.onStep?.(k, schedule.numTimesteps);
    }
    return x;
  }
  const eta = opts.eta ?? 1;
  const alphas = schedule.alphasCumprodPrev;
  const pairs = ddimTimePairs(schedule.numTimesteps, opts.steps);
  for (let k = 0; k < pairs.length; k++) {
    const [time, timeNext] = pairs[k];
    const xStart = await predict(x, time);
    if (timeNext < 0) {
      x.set(xStart);
      opts.onStep?.(k, pairs.length);
      continue;
    }
    const a = schedule.sqrtRecipAlphasCumprod[time];
    const b = schedule.sqrtRecipm1AlphasCumprod[time];
    const alpha = alphas[time];
    const alphaNext = alphas[timeNext];
    const oneMinusNext = f(1 - alphaNext);
    const c1 = f(eta * f(Math.sqrt(f(f(f(1 - f(alpha / alphaNext)) * oneMinusNext) / f(1 - alpha)))));
    const c2 = f(Math.sqrt(f(oneMinusNext - f(c1 * c1))));
    const sqrtAlphaNext = f(Math.sqrt(alphaNext));
    const noise = timeNext > 0 ? opts.noise.step(k, size) : undefined;
    for (let j = 0; j < size; j++) {
      const predNoise = f(f(f(a * x[j]) - xStart[j]) / b);
      const withNoise = f(f(xStart[j] * sqrtAlphaNext) + (noise === undefined ? 0 : f(c1 * noise[j])));
      x[j] = withNoise + f(c2 * predNoise);
    }
    opts.onStep?.(k, pairs.length);
  }
  return x;
}

/** Returns x_start for the current sample at one timestep, with guidance in a single denoiser call. */
function guidedPredictor(opts: SampleOptions): (x: Float32Array, time: number) => Promise<Float32Array> {
  const { batch, tokens, dim, guidance, brainEmbed } = opts;
  const size = batch * tokens * dim;
  const guided = guidance !== 1;
  const rows = guided ? 2 * batch : batch;
  const brain = new Float32Array(rows * tokens * dim);
  brain.set(brainEmbed);
  if (guided) brain.set(brainEmbed, size);
  const keep = new Float32Array(rows).fill(1, 0, batch);
  const input = new Float32Array(rows * tokens * dim);
  return async (x, time) => {
    input.set(x);
    if (guided) input.copyWithin(size, 0, size);
    const t = new Float32Array(rows).fill(time);
    const out = await opts.denoiser(input, t, brain, keep, rows);
    if (!guided) return out.slice(0, size);
    const mixed = new Float32Array(size);
    for (let j = 0; j < size; j++) {
      const nullPred = out[size + j];
      mixed[j] = nullPred + Math.fround(Math.fround(out[j] - nullPred) * guidance);
    }
    return mixed;
  };
}

export interface PriorSampler {
  head: LoadedHead;
  schedule: PriorSchedule;
  tokens: number;
  dim: number;
  /** Manifest defaults: `steps` (or all timesteps) and `guidance` (or 1). */
  steps: number;
  guidance: number;
  /** Samples image embeddings for `batch` brain embeddings ([batch, tokens, dim]). */
  sample(brainEmbed: Float32Array, batch: number, overrides?: { steps?: number; guidance?: number; noise?: NoiseSource }): Promise<Float32Array>;
}

function positiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

/**
 * Loads the model's prior head and schedule and returns a sampler with the manifest's settings.
 * The schedule comes from `scheduleFile`, or is DALLE2's cosine schedule when the head has none.
 */
export async function createPriorSampler(model: LoadedManifest, opts: SessionOptions): Promise<PriorSampler> {
  const head = await loadHead(model, 'prior', opts);
  const spec = head.spec;
  for (const field of ['tokens', 'dim', 'timesteps'] as const) {
    if (!positiveInteger(spec[field])) {
      throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The prior head lacks a size field.', {
        file: model.manifestPath, field: `heads.prior.${field}`, value: spec[field] as number | undefined,
        expected: 'a positive integer', fix: 're-export the model with tools/mindeye_export.py',
      });
    }
  }
  const tokens = spec.tokens as number;
  const dim = spec.dim as number;
  const timesteps = spec.timesteps as number;
  const schedule = typeof spec.scheduleFile === 'string'
    ? loadPriorSchedule(join(model.dir, spec.scheduleFile), timesteps)
    : cosineSchedule(timesteps);
  const steps = positiveInteger(spec.steps) ? spec.steps : timesteps;
  const guidance = typeof spec.guidance === 'number' ? spec.guidance : 1;
  const denoiser = onnxDenoiser(head, tokens, dim);
  let seed = 0;
  return {
    head, schedule, tokens, dim, steps, guidance,
    sample: (brainEmbed, batch, overrides = {}) => samplePrior({
      denoiser, schedule, brainEmbed, batch, tokens, dim,
      steps: overrides.steps ?? steps,
      guidance: overrides.guidance ?? guidance,
      noise: overrides.noise ?? gaussianNoise(seed++),
    }),
  };
}
