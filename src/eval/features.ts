/**
 * Feature metrics of reconstructions, with user-supplied image -> feature ONNX networks (the
 * input contract is in src/eval/options.ts), as MindEye defines them (Scotti et al. 2023,
 * arXiv 2305.18274, and its Reconstruction_Metrics evaluation script):
 *
 * - two-way identification (AlexNet(2), AlexNet(5), Inception, CLIP): for each reconstruction,
 *   the fraction of the other ground-truth images whose features correlate less with the
 *   reconstruction's features than its own ground truth's do (Pearson correlation of the
 *   flattened feature vectors, strict comparison). Chance is 0.5.
 * - correlation distance (EfficientNet-B1, SwAV): 1 minus the Pearson correlation between a
 *   reconstruction's features and its ground truth's, averaged. Lower is better.
 *
 * The ground-truth set is the distinct images of the evaluated trials, so a repeated image is
 * never compared with itself.
 */
import sharp from 'sharp';
import { MindeyeError } from '../errors.ts';
import { createSession, ort, type Device } from '../decode/ort.ts';
import { pearson } from '../render/metrics.ts';
import type { RgbImage } from '../render/image.ts';
import type { FeatureNetSpec } from './options.ts';

export interface FeatureNet {
  spec: FeatureNetSpec;
  height: number;
  width: number;
  /** Returns the flattened first output for one image. */
  features(image: RgbImage): Promise<Float32Array>;
  release(): Promise<void>;
}

function staticDim(value: number | string | undefined): number | undefined {
  return typeof value === 'number' && value > 0 ? value : undefined;
}

/** Loads a feature network and checks its input against the spec's size and layout. */
export async function loadFeatureNet(spec: FeatureNetSpec, device: Device): Promise<FeatureNet> {
  const session = await createSession(spec.file, { device });
  const inputName = session.inputNames[0];
  const meta = session.inputMetadata[0] as { isTensor?: boolean; shape?: readonly (number | string)[] } | undefined;
  const shape = meta?.isTensor ? meta.shape : undefined;
  const fail = (field: string, value: unknown, expected: string, fix: string) => {
    void session.release();
    return new MindeyeError('MODEL_SHAPE_MISMATCH', `The feature network ${spec.name} does not take the documented input.`, {
      file: spec.file, field, value, expected, fix,
    });
  };
  if (shape === undefined || shape.length !== 4) {
    throw fail(`input ${inputName}`, shape ? `[${shape.join(', ')}]` : 'not a tensor', 'float32 [1, 3, size, size] (NCHW)', 'export the network with one NCHW image input');
  }
  const channels = staticDim(shape[1]);
  if (channels !== undefined && channels !== 3) {
    throw fail(`input ${inputName}`, `[${shape.join(', ')}]`, '3 channels (RGB) in dimension 1', 'export the network with NCHW RGB input');
  }
  const batch = staticDim(shape[0]);
  if (batch !== undefined && batch !== 1) {
    throw fail(`input ${inputName}`, `[${shape.join(', ')}]`, 'batch 1 or a dynamic batch', 'export the network with batch size 1 or a dynamic batch axis');
  }
  const fixedHeight = staticDim(shape[2]);
  const fixedWidth = staticDim(shape[3]);
  if (spec.size !== undefined && ((fixedHeight !== undefined && fixedHeight !== spec.size) || (fixedWidth !== undefined && fixedWidth !== spec.size))) {
    throw fail('size', spec.size, `${fixedHeight}x${fixedWidth} (the ONNX input's fixed size)`, `pass ,size=${fixedHeight ?? fixedWidth} or export the network with another input size`);
  }
  const height = spec.size ?? fixedHeight;
  const width = spec.size ?? fixedWidth;
  if (height === undefined || width === undefined) {
    throw fail('size', 'none', 'a size: the ONNX input has no fixed height and width', `add ,size=S to --feature-net ${spec.name}=...`);
  }

  return {
    spec, height, width,
    async features(image) {
      const input = await toInputTensor(image, height, width, spec);
      const results = await session.run({ [inputName]: input });
      const out = results[session.outputNames[0]];
      if (out.type !== 'float32' || (out.dims[0] !== undefined && out.dims[0] !== 1)) {
        throw new MindeyeError('MODEL_SHAPE_MISMATCH', `The feature network ${spec.name} returned an unexpected output.`, {
          file: spec.file, field: `output ${session.outputNames[0]}`, value: `${out.type} [${out.dims.join(', ')}]`,
          expected: 'float32 [1, ...features]', fix: 'export the network with a float32 feature output',
        });
      }
      const data = out.data as Float32Array;
      if (!data.every(Number.isFinite)) {
        throw new MindeyeError('MODEL_SHAPE_MISMATCH', `The feature network ${spec.name} returned NaN or infinite features.`, {
          file: spec.file, field: `output ${session.outputNames[0]}`, expected: 'finite values', fix: 'check the exported network',
        });
      }
      return data;
    },
    release: () => session.release(),
  };
}

/** Resizes (bilinear, to height x width) and normalizes an image into a [1, 3, H, W] tensor. */
export async function toInputTensor(image: RgbImage, height: number, width: number, spec: Pick<FeatureNetSpec, 'mean' | 'std'>): Promise<ort.Tensor> {
  let pixels = image.data;
  if (image.width !== width || image.height !== height) {
    const resized = await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
      raw: { width: image.width, height: image.height, channels: 3 },
    }).resize(width, height, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
    pixels = new Uint8Array(resized.buffer, resized.byteOffset, resized.byteLength);
  }
  const plane = height * width;
  const data = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) data[c * plane + p] = (pixels[p * 3 + c] / 255 - spec.mean[c]) / spec.std[c];
  }
  return new ort.Tensor('float32', data, [1, 3, height, width]);
}

/**
 * Two-way identification: `truthIndex[i]` is the row of `truths` that reconstruction i shows.
 * Returns the mean over reconstructions, or undefined with fewer than 2 ground truths.
 */
export function twoWayIdentification(recons: Float32Array[], truths: Float32Array[], truthIndex: number[]): number | undefined {
  if (truths.length < 2 || recons.length === 0) return undefined;
  let sum = 0;
  for (let i = 0; i < recons.length; i++) {
    const correlations = truths.map((t) => pearson(recons[i], t));
    const own = correlations[truthIndex[i]];
    let less = 0;
    correlations.forEach((r, j) => { if (j !== truthIndex[i] && r < own) less++; });
    sum += less / (truths.length - 1);
  }
  return sum / recons.length;
}

/** Mean correlation distance (1 - Pearson r) between each reconstruction and its ground truth. */
export function meanCorrelationDistance(recons: Float32Array[], truths: Float32Array[], truthIndex: number[]): number | undefined {
  if (recons.length === 0) return undefined;
  let sum = 0;
  for (let i = 0; i < recons.length; i++) sum += 1 - pearson(recons[i], truths[truthIndex[i]]);
  return sum / recons.length;
}

export interface FeatureMetricResult {
  metric: 'two-way' | 'correlation-distance';
  value: number;
  /** Reconstructions evaluated. */
  images: number;
  /** Distinct ground-truth images they were compared with. */
  groundTruths: number;
  size: number;
}

/**
 * Computes one feature metric for reconstructions against their ground truths with a loaded
 * network. Returns undefined when the metric needs more images than there are.
 */
export async function featureMetric(net: FeatureNet, recons: RgbImage[], truths: RgbImage[], truthIndex: number[]): Promise<FeatureMetricResult | undefined> {
  const reconFeatures: Float32Array[] = [];
  for (const image of recons) reconFeatures.push(await net.features(image));
  const truthFeatures: Float32Array[] = [];
  for (const image of truths) truthFeatures.push(await net.features(image));
  const value = net.spec.metric === 'two-way'
    ? twoWayIdentification(reconFeatures, truthFeatures, truthIndex)
    : meanCorrelationDistance(reconFeatures, truthFeatures, truthIndex);
  if (value === undefined || !Number.isFinite(value)) return undefined;
  return { metric: net.spec.metric, value, images: recons.length, groundTruths: truths.length, size: net.height };
}
