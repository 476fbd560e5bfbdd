/**
 * Image features that drive the simulated voxels, on a coarse grid over the stimulus field.
 *
 * The 425 x 425 stimulus is reduced to 64 x 64 (cubic kernel, sharp). Eleven non-negative
 * feature maps are computed from it and pooled 2 x 2 to a 32 x 32 grid, whose cells are 0.2625
 * degrees wide when the image spans NSD's 8.4 degrees:
 *   0      local luminance contrast (squared deviation from the 3 x 3 mean), square-rooted,
 *   1-4    orientation energy at 0, 45, 90 and 135 degrees (squared directional derivative),
 *          square-rooted so that it scales with contrast amplitude as an energy model's output,
 *   5, 6   luminance above and below mid-grey (ON and OFF channels, half-wave rectified),
 *   7-10   red, green, blue and yellow (half-wave rectified red-green and blue-yellow opponent
 *          signals).
 * The rectified channels keep the sign of luminance and colour, which lets a decoder recover the
 * coarse layout of an image, as low-level reconstructions from early visual cortex do. These
 * features are not meant to model any one visual area exactly.
 */
import sharp from 'sharp';

export const FEATURE_NAMES = [
  'contrast', 'orient0', 'orient45', 'orient90', 'orient135', 'luminanceOn', 'luminanceOff', 'red', 'green', 'blue', 'yellow',
] as const;
/** Features whose pooled value is square-rooted (energies); the others are rectified amplitudes. */
const ENERGY_FEATURES = 5;
export const FEATURE_COUNT = FEATURE_NAMES.length;
export const FEATURE_GRID = 32;
const WORK = 64;

/** Computes the feature maps of an RGB image, [feature][row][col] flattened (FEATURE_COUNT x 32 x 32). */
export async function imageFeatures(rgb: Buffer, size: number): Promise<Float32Array> {
  const small = await sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).resize(WORK, WORK, { kernel: 'cubic' }).raw().toBuffer();
  const n = WORK * WORK;
  const lum = new Float32Array(n), rg = new Float32Array(n), by = new Float32Array(n);
  for (let p = 0; p < n; p++) {
    const r = small[p * 3] / 255, g = small[p * 3 + 1] / 255, b = small[p * 3 + 2] / 255;
    lum[p] = 0.299 * r + 0.587 * g + 0.114 * b;
    rg[p] = r - g;
    by[p] = b - (r + g) / 2;
  }
  const work = new Float32Array(FEATURE_COUNT * n);
  const at = (img: Float32Array, x: number, y: number) => img[Math.min(WORK - 1, Math.max(0, y)) * WORK + Math.min(WORK - 1, Math.max(0, x))];
  const diag = Math.SQRT1_2;
  for (let y = 0; y < WORK; y++) {
    for (let x = 0; x < WORK; x++) {
      const p = y * WORK + x;
      let local = 0;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) local += at(lum, x + dx, y + dy);
      local /= 9;
      const gx = (at(lum, x + 1, y) - at(lum, x - 1, y)) / 2;
      const gy = (at(lum, x, y + 1) - at(lum, x, y - 1)) / 2;
      work[p] = (lum[p] - local) ** 2;
      work[n + p] = gx * gx;
      work[2 * n + p] = ((gx + gy) * diag) ** 2;
      work[3 * n + p] = gy * gy;
      work[4 * n + p] = ((gx - gy) * diag) ** 2;
      work[5 * n + p] = Math.max(0, lum[p] - 0.5);
      work[6 * n + p] = Math.max(0, 0.5 - lum[p]);
      work[7 * n + p] = Math.max(0, rg[p]);
      work[8 * n + p] = Math.max(0, -rg[p]);
      work[9 * n + p] = Math.max(0, by[p]);
      work[10 * n + p] = Math.max(0, -by[p]);
    }
  }
  const out = new Float32Array(FEATURE_COUNT * FEATURE_GRID * FEATURE_GRID);
  for (let f = 0; f < FEATURE_COUNT; f++) {
    for (let y = 0; y < FEATURE_GRID; y++) {
      for (let x = 0; x < FEATURE_GRID; x++) {
        const base = f * n + 2 * y * WORK + 2 * x;
        const pooled = (work[base] + work[base + 1] + work[base + WORK] + work[base + WORK + 1]) / 4;
        out[(f * FEATURE_GRID + y) * FEATURE_GRID + x] = f < ENERGY_FEATURES ? Math.sqrt(pooled) : pooled;
      }
    }
  }
  return out;
}
