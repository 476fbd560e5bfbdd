/**
 * One trial's img2img refinement: the low-level latents noised to the plan's first timestep,
 * then one DDIM step per `step()` call with classifier-free guidance. Shared by the renderer
 * and the scheduler parity tests, so the tests check the code path that makes the frames.
 */
import type { UnetSettings } from './config.ts';
import type { Unet } from './networks.ts';
import { gaussianNoise, trialSeed } from './noise.ts';
import { addNoise, applyGuidance, ddimStep, planImg2Img, type Img2ImgPlan } from './scheduler.ts';

export interface Img2ImgStep {
  /** Index of the step that ran, 0-based. */
  index: number;
  timestep: number;
  /** Guided noise prediction. */
  eps: Float32Array;
  /** Predicted clean latents x0 (what a preview shows). */
  predictedOriginal: Float32Array;
  /** Latents at the next timestep (the final latents after the last step). */
  prevSample: Float32Array;
}

export class Img2ImgRun {
  readonly plan: Img2ImgPlan;
  readonly noise: Float32Array;
  /** Latents after the steps run so far; the noised start latents before the first step. */
  sample: Float32Array;
  stepsDone = 0;

  constructor(
    private readonly unet: Unet,
    private readonly settings: UnetSettings,
    lowLevelLatents: Float32Array,
    private readonly condition: Float32Array,
    runSeed: number,
    trialId: number,
  ) {
    this.plan = planImg2Img(settings.ddim);
    this.noise = gaussianNoise(lowLevelLatents.length, trialSeed(runSeed, trialId));
    this.sample = addNoise(lowLevelLatents, this.noise, this.plan.startAlphaProduct);
  }

  get stepCount(): number {
    return this.plan.timesteps.length;
  }

  get done(): boolean {
    return this.stepsDone >= this.plan.timesteps.length;
  }

  /** Runs the next step; guidance 1 skips the null-condition pass, as it has no effect. */
  async step(): Promise<Img2ImgStep> {
    const index = this.stepsDone;
    if (index >= this.plan.timesteps.length) throw new Error(`Img2ImgRun.step() called after all ${index} steps ran.`);
    const timestep = this.plan.timesteps[index];
    const guidance = this.settings.guidance;
    let eps: Float32Array;
    if (guidance === 1) {
      eps = await this.unet.predictConditional(this.sample, timestep, this.condition);
    } else {
      const [epsNull, epsCond] = await this.unet.predictPair(this.sample, timestep, this.condition);
      eps = applyGuidance(epsNull, epsCond, guidance);
    }
    const result = ddimStep(this.sample, eps, this.plan.alphaProducts[index], this.plan.alphaProductsPrev[index]);
    this.sample = result.prevSample;
    this.stepsDone = index + 1;
    return { index, timestep, eps, ...result };
  }
}
