/**
 * Builds one run's 4D time series from the anatomy, the voxel model's true betas and the design.
 *
 * For brain voxel v at volume t (acquired at t x TR):
 *   clean_v(t) = B_v * (1 + (drift_v(t) + sum_trials beta_v(trial) x_trial(t)) / 100)
 * where B_v is the EPI baseline, x_trial the trial's regressor (3 s boxcar convolved with the
 * SPM canonical HRF, peak 1; only ROI voxels respond) and drift_v a sum of the three slowest
 * DCT components (periods 603, 301 and 201 s). The clean volume is then moved by the run's rigid
 * motion (trilinear resampling), and voxels whose moved brain weight falls below 0.5 are set to
 * 0. Last, AR(1) noise is added in scanner space at the noise level of the scanner voxel. Values are rounded to int16.
 */
import type { MotionParams } from '../events.ts';
import type { Anatomy } from './anatomy.ts';
import { TR_SEC, VOLUMES_PER_RUN, type SimTrial } from './design.ts';
import { trialRegressor } from './hrf.ts';
import { dilatedIndices, motionVoxelMap, resampleTrilinearAt } from './motion.ts';
import { streamFor } from './prng.ts';
import type { VoxelModel } from './voxels.ts';

/** AR(1) coefficient of the noise at TR 4/3 s. */
export const NOISE_AR1 = 0.3;
/** Noise standard deviation outside the ROI, percent of baseline (a temporal SNR of 50). */
export const BACKGROUND_NOISE_PCT = 2;
/** Standard deviations (PSC) of the drift's DCT components 1..3: shared across voxels, and per voxel. */
export const DRIFT_SHARED_PCT = [1.0, 0.5, 0.3];
export const DRIFT_LOCAL_PCT = [0.5, 0.3, 0.2];

export interface RunInputs {
  anatomy: Anatomy;
  model: VoxelModel;
  trials: SimTrial[];
  /** True betas (PSC, ROI order) by image id. */
  betasByImage: Map<number, Float32Array>;
  motion: MotionParams[];
  seed: number;
  session: number;
  run: number;
  noise: boolean;
  volumes?: number;
}

/**
 * Returns the time-series noise (PSC) that gives a single-trial beta noise of `betaNoisePct` for an isolated
 * trial fitted by OLS: var(beta) = sigma^2 (1 + rho) / ((1 - rho) x'x) for a smooth regressor x
 * under AR(1) noise, solved for sigma. Overlapping neighbouring trials make real single-trial
 * estimates noisier than this.
 */
export function timeSeriesNoisePct(betaNoisePct: number): number {
  const x = trialRegressor(40, 3, TR_SEC, VOLUMES_PER_RUN);
  let xx = 0;
  for (const value of x) xx += value * value;
  return betaNoisePct * Math.sqrt(xx) * Math.sqrt((1 - NOISE_AR1) / (1 + NOISE_AR1));
}

export function generateRun(inputs: RunInputs): Int16Array {
  const { anatomy, model, trials, noise } = inputs;
  const volumes = inputs.volumes ?? VOLUMES_PER_RUN;
  const n = anatomy.baseline.length;
  const roiCount = model.count;

  // Stimulus-driven signal, PSC, volumes x ROI voxels.
  const signal = new Float32Array(volumes * roiCount);
  for (const trial of trials) {
    const betas = inputs.betasByImage.get(trial.imageId);
    if (betas === undefined) throw new Error(`generateRun: no betas for image ${trial.imageId}`);
    const x = trialRegressor(trial.onsetSec, trial.durationSec, TR_SEC, volumes);
    for (let t = trial.onsetVolume; t < volumes; t++) {
      if (x[t] === 0) continue;
      const row = t * roiCount;
      for (let r = 0; r < roiCount; r++) signal[row + r] += x[t] * betas[r];
    }
  }

  // Drift coefficients per brain voxel (PSC), and the noise standard deviation map (int16 units).
  const brainList: number[] = [];
  for (let i = 0; i < n; i++) if (anatomy.brain[i] === 1) brainList.push(i);
  const driftRng = streamFor(inputs.seed, 'drift', inputs.session, inputs.run);
  const driftCoef = DRIFT_SHARED_PCT.map((shared, k) => {
    const common = noise ? driftRng.normal() * shared : 0;
    const coef = new Float32Array(brainList.length);
    if (noise) for (let b = 0; b < brainList.length; b++) coef[b] = common + driftRng.normal() * DRIFT_LOCAL_PCT[k];
    return coef;
  });
  const sdMap = new Float32Array(n);
  if (noise) {
    for (const i of brainList) sdMap[i] = (anatomy.baseline[i] * BACKGROUND_NOISE_PCT) / 100;
    const noisePerBetaPct = timeSeriesNoisePct(1);
    for (let r = 0; r < roiCount; r++) {
      const betaNoisePct = model.imageSdPct[r] / model.ncsnr[r];
      const index = anatomy.roiIndices[r];
      sdMap[index] = (anatomy.baseline[index] * betaNoisePct * noisePerBetaPct) / 100;
    }
  }
  const roiSlot = new Int32Array(n).fill(-1);
  anatomy.roiIndices.forEach((index, r) => { roiSlot[index] = r; });

  const out = new Int16Array(volumes * n);
  const clean = new Float32Array(n);
  const moved = new Float32Array(n);
  const brainMoved = new Float32Array(n);
  const brainFloat = Float32Array.from(anatomy.brain);
  // Motion stays under a voxel or two, so only the brain and a 3-voxel margin can be non-zero.
  const reach = dilatedIndices(anatomy.brain, anatomy.shape, 3);
  const arState = new Float32Array(n);
  const noiseRng = streamFor(inputs.seed, 'noise', inputs.session, inputs.run);
  const innovation = Math.sqrt(1 - NOISE_AR1 * NOISE_AR1);

  for (let t = 0; t < volumes; t++) {
    const phase = (t + 0.5) / volumes;
    const basis = [1, 2, 3].map((k) => Math.cos(Math.PI * k * phase));
    for (let b = 0; b < brainList.length; b++) {
      const i = brainList[b];
      let pct = driftCoef[0][b] * basis[0] + driftCoef[1][b] * basis[1] + driftCoef[2][b] * basis[2];
      const r = roiSlot[i];
      if (r >= 0) pct += signal[t * roiCount + r];
      clean[i] = anatomy.baseline[i] * (1 + pct / 100);
    }

    const m = inputs.motion[t];
    const still = m === undefined || [...m.translationMm, ...m.rotationRad].every((p) => p === 0);
    let value = clean, mask = brainFloat;
    if (!still) {
      // The noise level stays with the scanner voxel (thermal noise does not move with the head).
      resampleTrilinearAt(reach, [clean, brainFloat], [moved, brainMoved], anatomy.shape, motionVoxelMap(anatomy.affine, anatomy.shape, m));
      value = moved;
      mask = brainMoved;
    }

    const row = t * n;
    for (let c = 0; c < reach.length; c++) {
      const q = reach[c];
      if (mask[q] < 0.5) continue;
      let v = value[q];
      if (noise) {
        // The first volume starts each voxel's AR(1) process in its stationary distribution.
        const e = t === 0 ? noiseRng.normal() : NOISE_AR1 * arState[q] + innovation * noiseRng.normal();
        arState[q] = e;
        v += sdMap[q] * e;
      }
      out[row + q] = Math.round(Math.min(32767, Math.max(-32768, v)));
    }
  }
  return out;
}
