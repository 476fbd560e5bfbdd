/**
 * Haemodynamic response and task regressors.
 *
 * The SPM canonical HRF is a difference of two gamma densities: a response peaking near 5 s
 * (shape 6, scale 1 s) minus 1/6 of an undershoot (shape 16, scale 1 s), sampled over 32 s and
 * normalised to unit sum, as spm_hrf.m does. A trial's regressor is that HRF convolved with the
 * trial's boxcar (onset, duration), computed on a fine grid of `oversampling` points per TR and
 * read at the volume acquisition times (volume i at i x TR, no slice-timing shift).
 */

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const xm = x - 1;
  let a = c[0];
  const t = xm + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (xm + i);
  return 0.5 * Math.log(2 * Math.PI) + (xm + 0.5) * Math.log(t) - t + Math.log(a);
}

function gammaPdf(t: number, shape: number, scale: number): number {
  if (t <= 0) return 0;
  return Math.exp((shape - 1) * Math.log(t) - t / scale - logGamma(shape) - shape * Math.log(scale));
}

export interface HrfParams {
  peakShape: number;
  undershootShape: number;
  undershootRatio: number;
  lengthSec: number;
}

export const SPM_CANONICAL: HrfParams = { peakShape: 6, undershootShape: 16, undershootRatio: 1 / 6, lengthSec: 32 };

/** Samples the HRF every `dtSec` seconds from 0 to its length, normalised to unit sum. */
export function canonicalHrf(dtSec: number, params: HrfParams = SPM_CANONICAL): Float64Array {
  const n = Math.floor(params.lengthSec / dtSec) + 1;
  const h = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const t = i * dtSec;
    h[i] = gammaPdf(t, params.peakShape, 1) - params.undershootRatio * gammaPdf(t, params.undershootShape, 1);
    sum += h[i];
  }
  for (let i = 0; i < n; i++) h[i] /= sum;
  return h;
}

/**
 * Returns the regressor value at time `tSec` of a boxcar [onsetSec, onsetSec + durationSec)
 * convolved with the HRF sampled at `dtSec`. Zero before the onset, so regressor rows for
 * volumes acquired before a trial never change once the trial starts (the online GLM relies on
 * this). Events with zero duration are treated as one fine-grid sample long.
 */
export function trialRegressorAt(hrf: Float64Array, dtSec: number, onsetSec: number, durationSec: number, tSec: number): number {
  if (tSec < onsetSec) return 0;
  const samples = Math.max(1, Math.round(durationSec / dtSec));
  // value(t) = sum over boxcar samples s of hrf[(t - onset)/dt - s]
  const lag = Math.round((tSec - onsetSec) / dtSec);
  let value = 0;
  for (let s = 0; s < samples; s++) {
    const k = lag - s;
    if (k < 0) break;
    if (k < hrf.length) value += hrf[k];
  }
  return value;
}
