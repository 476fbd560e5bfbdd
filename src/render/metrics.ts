/**
 * Image metrics for the run report, with MindEye's settings (Scotti et al. 2023):
 *
 * - PixCorr: Pearson correlation of the flattened RGB pixels, both images resized to 425x425.
 * - SSIM: grayscale images resized to 425x425 in [0, 1], Gaussian weights (sigma 1.5, an 11-tap
 *   window), population covariance, data range 1. This equals scikit-image 0.19's
 *   `structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
 *   data_range=1)` on `rgb2gray` images: scipy `gaussian_filter` with truncate 3.5 and 'reflect'
 *   borders, and the mean over the image less a 5-pixel border.
 *
 * Images are encoded bytes (any format sharp reads) or raw 8-bit RGB. Resizing uses sharp's
 * bilinear kernel; images already 425x425 are used as they are.
 */
import sharp from 'sharp';
import { decodeToRgb, type RgbImage } from './image.ts';

export type MetricImage = Uint8Array | RgbImage;

export const METRIC_SIZE = 425;

/** Returns 425x425 8-bit RGB pixels of an encoded or raw image. */
export async function toMetricRgb(image: MetricImage): Promise<Uint8Array> {
  const rgb = image instanceof Uint8Array ? await decodeToRgb(image) : image;
  if (rgb.data.length !== rgb.width * rgb.height * 3) {
    throw new RangeError(`RGB image has ${rgb.data.length} bytes; ${rgb.width}x${rgb.height}x3 needs ${rgb.width * rgb.height * 3}.`);
  }
  if (rgb.width === METRIC_SIZE && rgb.height === METRIC_SIZE) return rgb.data;
  const resized = await sharp(Buffer.from(rgb.data.buffer, rgb.data.byteOffset, rgb.data.byteLength), {
    raw: { width: rgb.width, height: rgb.height, channels: 3 },
  })
    .resize(METRIC_SIZE, METRIC_SIZE, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer();
  return new Uint8Array(resized.buffer, resized.byteOffset, resized.byteLength);
}

/** Pearson correlation of two equal-length pixel arrays; NaN when either is constant. */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let meanA = 0;
  let meanB = 0;
  for (let i = 0; i < n; i++) {
    meanA += a[i];
    meanB += b[i];
  }
  meanA /= n;
  meanB /= n;
  let cov = 0;
  let varA = 0;
  let varB = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i] - meanA;
    const db = b[i] - meanB;
    cov += da * db;
    varA += da * da;
    varB += db * db;
  }
  return cov / Math.sqrt(varA * varB);
}

/** PixCorr of two images (NaN when either image is one flat color). */
export async function pixCorr(a: MetricImage, b: MetricImage): Promise<number> {
  const [pa, pb] = await Promise.all([toMetricRgb(a), toMetricRgb(b)]);
  return pearson(pa, pb);
}

/** Converts interleaved 8-bit RGB to gray in [0, 1] with scikit-image's rgb2gray weights. */
export function rgbToGray(rgb: Uint8Array): Float64Array {
  const out = new Float64Array(rgb.length / 3);
  for (let p = 0; p < out.length; p++) {
    out[p] = (0.2125 * rgb[p * 3] + 0.7154 * rgb[p * 3 + 1] + 0.0721 * rgb[p * 3 + 2]) / 255;
  }
  return out;
}

function gaussianKernel(sigma: number, truncate: number): Float64Array {
  const radius = Math.floor(truncate * sigma + 0.5);
  const kernel = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    kernel[i + radius] = Math.exp(-0.5 * (i * i) / (sigma * sigma));
    sum += kernel[i + radius];
  }
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  return kernel;
}

/** Maps an out-of-range index the way scipy.ndimage's 'reflect' mode does (d c b a | a b c d | d c b a). */
function reflectIndex(i: number, n: number): number {
  let j = i;
  for (;;) {
    if (j < 0) j = -j - 1;
    else if (j >= n) j = 2 * n - j - 1;
    else return j;
  }
}

/** Separable Gaussian filter of a row-major height x width image. */
export function gaussianFilter(image: Float64Array, height: number, width: number, sigma = 1.5, truncate = 3.5): Float64Array {
  const kernel = gaussianKernel(sigma, truncate);
  const radius = (kernel.length - 1) / 2;
  const rows = new Float64Array(image.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let k = -radius; k <= radius; k++) acc += kernel[k + radius] * image[y * width + reflectIndex(x + k, width)];
      rows[y * width + x] = acc;
    }
  }
  const out = new Float64Array(image.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let k = -radius; k <= radius; k++) acc += kernel[k + radius] * rows[reflectIndex(y + k, height) * width + x];
      out[y * width + x] = acc;
    }
  }
  return out;
}

/** SSIM of two grayscale images in [0, 1] (row-major, same size), with the settings above. */
export function ssimGray(a: Float64Array, b: Float64Array, height: number, width: number): number {
  const sigma = 1.5;
  const radius = Math.floor(3.5 * sigma + 0.5);
  if (height < 2 * radius + 1 || width < 2 * radius + 1) {
    throw new RangeError(`SSIM needs images of at least ${2 * radius + 1}x${2 * radius + 1} pixels; got ${width}x${height}.`);
  }
  const n = a.length;
  const aa = new Float64Array(n);
  const bb = new Float64Array(n);
  const ab = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    aa[i] = a[i] * a[i];
    bb[i] = b[i] * b[i];
    ab[i] = a[i] * b[i];
  }

  const ux = gaussianFilter(a, height, width, sigma);
  const uy = gaussianFilter(b, height, width, sigma);
  const uxx = gaussianFilter(aa, height, width, sigma);
  const uyy = gaussianFilter(bb, height, width, sigma);
  const uxy = gaussianFilter(ab, height, width, sigma);

  const c1 = 0.01 ** 2;
  const c2 = 0.03 ** 2;
  let sum = 0;
  let count = 0;
  for (let y = radius; y < height - radius; y++) {
    for (let x = radius; x < width - radius; x++) {
      const i = y * width + x;
      const vx = uxx[i] - ux[i] * ux[i];
      const vy = uyy[i] - uy[i] * uy[i];
      const vxy = uxy[i] - ux[i] * uy[i];
      const numerator = (2 * ux[i] * uy[i] + c1) * (2 * vxy + c2);
      const denominator = (ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2);
      sum += numerator / denominator;
      count++;
    }
  }
  return sum / count;
}

/** SSIM of two images on 425x425 grayscale, as MindEye reports it. */
export async function ssim(a: MetricImage, b: MetricImage): Promise<number> {
  const [pa, pb] = await Promise.all([toMetricRgb(a), toMetricRgb(b)]);
  return ssimGray(rgbToGray(pa), rgbToGray(pb), METRIC_SIZE, METRIC_SIZE);
}
