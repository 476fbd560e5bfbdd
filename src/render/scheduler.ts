/**
 * DDIM scheduler for img2img (Song et al. 2021, "Denoising Diffusion Implicit Models", eta = 0),
 * written to give the same numbers as diffusers' `DDIMScheduler` and the img2img pipelines'
 * `get_timesteps` (diffusers 0.2x) for epsilon-predicting UNets:
 *
 * - Beta schedules `linear`, `scaled_linear` (Stable Diffusion) and `squaredcos_cap_v2`
 *   (Nichol and Dhariwal 2021, betas capped at 0.999). Schedule scalars are float64.
 * - Timestep spacing `leading` (the diffusers default: t = i * floor(T / steps) + offset,
 *   largest first) or `trailing` (t = round(T - i * T / steps) - 1). Both step to
 *   `t - floor(T / steps)`. Below t = 0 the scheduler uses the final alpha product: 1 when
 *   `setAlphaToOne`, else alphas_cumprod[0].
 * - img2img keeps the last `floor(steps * strength)` timesteps and noises the initial latents to
 *   the first of them: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.
 * - Classifier-free guidance: eps = eps_null + guidance * (eps_cond - eps_null).
 *
 * tools/render_reference.py implements the same formulas in numpy and torch; the tests compare
 * the two on a tiny UNet.
 */

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type TimestepSpacing = 'leading' | 'trailing';

export interface DdimConfig {
  /** Diffusion steps the UNet was trained with (T), usually 1000. */
  trainTimesteps: number;
  betaSchedule: BetaSchedule;
  betaStart: number;
  betaEnd: number;
  /** Inference steps for strength 1; img2img runs floor(steps * strength) of them. */
  steps: number;
  /** Fraction of the schedule that img2img runs, in [0, 1]; 1 starts from pure noise. */
  strength: number;
  timestepSpacing: TimestepSpacing;
  /** Added to every `leading` timestep (Stable Diffusion's scheduler config uses 1). */
  stepsOffset: number;
  /** Use an alpha product of 1 below t = 0 (true) or alphas_cumprod[0] (false). */
  setAlphaToOne: boolean;
}

export const BETA_SCHEDULES: readonly BetaSchedule[] = ['linear', 'scaled_linear', 'squaredcos_cap_v2'];
export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ['leading', 'trailing'];

/** Computes the T betas of a schedule, as diffusers' DDIMScheduler does. */
export function makeBetas(config: Pick<DdimConfig, 'trainTimesteps' | 'betaSchedule' | 'betaStart' | 'betaEnd'>): Float64Array {
  const n = config.trainTimesteps;
  const betas = new Float64Array(n);
  const fraction = (i: number) => (n === 1 ? 0 : i / (n - 1));
  switch (config.betaSchedule) {
    case 'linear':
      for (let i = 0; i < n; i++) betas[i] = config.betaStart + (config.betaEnd - config.betaStart) * fraction(i);
      break;
    case 'scaled_linear': {
      const a = Math.sqrt(config.betaStart);
      const b = Math.sqrt(config.betaEnd);
      for (let i = 0; i < n; i++) betas[i] = (a + (b - a) * fraction(i)) ** 2;
      break;
    }
    case 'squaredcos_cap_v2': {
      const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
      for (let i = 0; i < n; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999);
      break;
    }
  }
  return betas;
}

/** Computes the cumulative products of (1 - beta), abar_t, for t = 0..T-1. */
export function makeAlphasCumprod(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let product = 1;
  for (let i = 0; i < betas.length; i++) {
    product *= 1 - betas[i];
    out[i] = product;
  }
  return out;
}

/** Lists the full inference timesteps (strength 1), largest first. */
export function makeTimesteps(config: Pick<DdimConfig, 'trainTimesteps' | 'steps' | 'timestepSpacing' | 'stepsOffset'>): number[] {
  const { trainTimesteps: total, steps } = config;
  const out: number[] = [];
  if (config.timestepSpacing === 'leading') {
    const ratio = Math.floor(total / steps);
    for (let i = steps - 1; i >= 0; i--) out.push(i * ratio + config.stepsOffset);
  } else {
    const ratio = total / steps;
    // numpy's arange(T, 0, -T/steps) followed by round (half to even) and minus 1.
    for (let i = 0; i < steps; i++) out.push(roundHalfEven(total - i * ratio) - 1);
  }
  return out;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Schedule of one img2img run: the timesteps it denoises and the alpha products it uses. */
export interface Img2ImgPlan {
  /** Timesteps run, largest first; empty when strength * steps < 1. */
  timesteps: number[];
  /** Alpha product at each timestep in `timesteps`. */
  alphaProducts: Float64Array;
  /** Alpha product of the timestep each step moves to (the final alpha product after the last). */
  alphaProductsPrev: Float64Array;
  /** Alpha product the initial latents are noised to (that of timesteps[0]); 1 when there are no steps. */
  startAlphaProduct: number;
}

/** Plans an img2img run from the config, as diffusers' img2img `get_timesteps` does. */
export function planImg2Img(config: DdimConfig): Img2ImgPlan {
  const alphasCumprod = makeAlphasCumprod(makeBetas(config));
  const finalAlphaProduct = config.setAlphaToOne ? 1 : alphasCumprod[0];
  const all = makeTimesteps(config);
  const initSteps = Math.min(Math.floor(config.steps * config.strength), config.steps);
  const timesteps = all.slice(Math.max(config.steps - initSteps, 0));
  const stride = Math.floor(config.trainTimesteps / config.steps);
  const alphaProducts = new Float64Array(timesteps.length);
  const alphaProductsPrev = new Float64Array(timesteps.length);
  timesteps.forEach((t, i) => {
    alphaProducts[i] = alphasCumprod[t];
    const prev = t - stride;
    alphaProductsPrev[i] = prev >= 0 ? alphasCumprod[prev] : finalAlphaProduct;
  });
  return {
    timesteps,
    alphaProducts,
    alphaProductsPrev,
    startAlphaProduct: timesteps.length > 0 ? alphasCumprod[timesteps[0]] : 1,
  };
}

/** Noises clean latents to alpha product `alphaProduct`: sqrt(a) x0 + sqrt(1 - a) noise. */
export function addNoise(latents: Float32Array, noise: Float32Array, alphaProduct: number): Float32Array {
  const a = Math.sqrt(alphaProduct);
  const b = Math.sqrt(1 - alphaProduct);
  const out = new Float32Array(latents.length);
  for (let i = 0; i < latents.length; i++) out[i] = a * latents[i] + b * noise[i];
  return out;
}

/** Combines the null and conditional noise predictions with classifier-free guidance. */
export function applyGuidance(epsNull: Float32Array, epsCond: Float32Array, guidance: number): Float32Array {
  const out = new Float32Array(epsCond.length);
  for (let i = 0; i < out.length; i++) out[i] = epsNull[i] + guidance * (epsCond[i] - epsNull[i]);
  return out;
}

/** Result of one DDIM update: the latents at the next timestep and the predicted clean latents. */
export interface DdimStepResult {
  prevSample: Float32Array;
  predictedOriginal: Float32Array;
}

/**
 * Runs one deterministic DDIM update (eta = 0) from x_t with noise prediction eps:
 * x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps.
 */
export function ddimStep(sample: Float32Array, eps: Float32Array, alphaProduct: number, alphaProductPrev: number): DdimStepResult {
  const sqrtA = Math.sqrt(alphaProduct);
  const sqrtOneMinusA = Math.sqrt(1 - alphaProduct);
  const sqrtPrev = Math.sqrt(alphaProductPrev);
  const sqrtOneMinusPrev = Math.sqrt(1 - alphaProductPrev);
  const prevSample = new Float32Array(sample.length);
  const predictedOriginal = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) {
    const x0 = (sample[i] - sqrtOneMinusA * eps[i]) / sqrtA;
    predictedOriginal[i] = x0;
    prevSample[i] = sqrtPrev * x0 + sqrtOneMinusPrev * eps[i];
  }
  return { prevSample, predictedOriginal };
}
