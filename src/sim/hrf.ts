/**
 * The SPM canonical haemodynamic response function and trial regressors built from it.
 *
 * SPM's canonical HRF (spm_hrf.m defaults: response delay 6 s, undershoot delay 16 s, both
 * dispersions 1 s, response-to-undershoot ratio 6, kernel length 32 s) is a difference of two
 * gamma densities:
 *
 *   h(t) = g(t; 6, 1) - g(t; 16, 1) / 6,   g(t; k, 1) = t^(k-1) e^(-t) / (k-1)!
 *
 * Its peak is at about 5 s, its undershoot is deepest at about 15.8 s and its integral over
 * 0..infinity is 1 - 1/6 = 5/6. Because both shapes are integers, the integral of h has a
 * closed form (the Erlang distribution function), so a boxcar convolved with h is exact and
 * needs no time grid.
 */

const RESPONSE_SHAPE = 6;
const UNDERSHOOT_SHAPE = 16;
const UNDERSHOOT_RATIO = 6;

/** Length of the canonical kernel in seconds (SPM's default); h is set to 0 beyond it. */
export const HRF_LENGTH_SEC = 32;

function factorial(n: number): number {
  let f = 1;
  for (let i = 2; i <= n; i++) f *= i;
  return f;
}

function gammaDensity(tSec: number, shape: number): number {
  if (tSec <= 0) return 0;
  return (Math.pow(tSec, shape - 1) * Math.exp(-tSec)) / factorial(shape - 1);
}

/** Erlang distribution function: P(T <= t) for T ~ Gamma(shape, 1) with integer shape. */
function erlangCdf(tSec: number, shape: number): number {
  if (tSec <= 0) return 0;
  let term = 1;
  let sum = 1;
  for (let i = 1; i < shape; i++) {
    term *= tSec / i;
    sum += term;
  }
  return 1 - Math.exp(-tSec) * sum;
}

/** Evaluates the canonical HRF `tSec` after an impulse (1/s; 0 before 0 and after 32 s). */
export function spmHrf(tSec: number): number {
  if (tSec <= 0 || tSec > HRF_LENGTH_SEC) return 0;
  return gammaDensity(tSec, RESPONSE_SHAPE) - gammaDensity(tSec, UNDERSHOOT_SHAPE) / UNDERSHOOT_RATIO;
}

/** Integrates the canonical HRF from 0 to `tSec` (unitless; tends to 5/6). */
export function spmHrfIntegral(tSec: number): number {
  const t = Math.min(tSec, HRF_LENGTH_SEC);
  return erlangCdf(t, RESPONSE_SHAPE) - erlangCdf(t, UNDERSHOOT_SHAPE) / UNDERSHOOT_RATIO;
}

/** Evaluates the response to a boxcar of `durationSec` starting at 0, `tSec` after its start. */
export function boxcarResponse(tSec: number, durationSec: number): number {
  if (tSec <= 0) return 0;
  return spmHrfIntegral(tSec) - (tSec > durationSec ? spmHrfIntegral(tSec - durationSec) : 0);
}

const peakCache = new Map<number, number>();

/** Finds the peak of `boxcarResponse` for a duration on a 1 ms grid (cached per duration). */
export function boxcarResponsePeak(durationSec: number): number {
  const cached = peakCache.get(durationSec);
  if (cached !== undefined) return cached;
  let peak = 0;
  for (let t = 0; t <= HRF_LENGTH_SEC + durationSec; t += 0.001) peak = Math.max(peak, boxcarResponse(t, durationSec));
  peakCache.set(durationSec, peak);
  return peak;
}

/**
 * Samples a trial regressor at the volume acquisition times `volIdx * trSec`: the boxcar
 * response, scaled so that its peak is 1. With this scaling a beta is the peak response of the trial, as
 * in GLMsingle, whose HRFs are also normalized to a peak of 1.
 */
export function trialRegressor(onsetSec: number, durationSec: number, trSec: number, volumes: number): Float64Array {
  const peak = boxcarResponsePeak(durationSec);
  const x = new Float64Array(volumes);
  for (let i = 0; i < volumes; i++) x[i] = boxcarResponse(i * trSec - onsetSec, durationSec) / peak;
  return x;
}
