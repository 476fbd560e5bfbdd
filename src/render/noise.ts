/**
 * Deterministic standard-normal noise for img2img, so a replay with the same seed gives the same
 * images. Uniforms come from mulberry32 (a 32-bit generator by Tommy Ettinger, good enough for
 * image noise, not for cryptography); normals from the Box-Muller transform.
 */

/** Derives a per-trial 32-bit seed from the run's seed and the trial id (integer hash mixing). */
export function trialSeed(runSeed: number, trialId: number): number {
  let h = Math.imul((runSeed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13) ^ (trialId >>> 0), 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Draws `length` independent standard-normal samples from a 32-bit seed. */
export function gaussianNoise(length: number, seed: number): Float32Array {
  const uniform = mulberry32(seed);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i += 2) {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    const radius = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < length) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}
