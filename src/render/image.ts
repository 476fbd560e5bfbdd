/**
 * Conversion of decoder output to 8-bit RGB and to JPEG or WebP bytes with sharp.
 *
 * sharp treats float raw input as 16-bit samples, so decoder output is converted to 8-bit here
 * first: values are mapped from the decoder's output range to [0, 255], rounded and clamped.
 */
import sharp from 'sharp';

/** Value range of a VAE decoder's output image: [-1, 1] (Stable Diffusion) or [0, 1]. */
export type OutputRange = [-1, 1] | [0, 1];

/** Interleaved 8-bit RGB pixels, row-major (HWC). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** JPEG and WebP for the live display; PNG is lossless, for recordings and checks. */
export type ImageFormat = 'jpeg' | 'webp' | 'png';

export interface EncodeOptions {
  format: ImageFormat;
  /** JPEG or WebP quality, 1-100; PNG ignores it. */
  quality: number;
}

export interface EncodedImage {
  bytes: Uint8Array;
  mime: 'image/jpeg' | 'image/webp' | 'image/png';
  width: number;
  height: number;
}

/**
 * Converts one planar image (channels x height x width, as an NCHW decoder writes it for batch
 * item 0) to interleaved 8-bit RGB. One channel is repeated as gray; three are R, G, B.
 */
export function planarToRgb8(planar: Float32Array, channels: number, height: number, width: number, range: OutputRange): RgbImage {
  const plane = height * width;
  const scale = 255 / (range[1] - range[0]);
  const out = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const value = planar[(channels === 1 ? 0 : c) * plane + p];
      const scaled = Math.round((value - range[0]) * scale);
      // NaN fails both comparisons, so it becomes 0 (black).
      let pixel = 0;
      if (scaled >= 255) pixel = 255;
      else if (scaled > 0) pixel = scaled;
      out[p * 3 + c] = pixel;
    }
  }
  return { data: out, width, height };
}

const MIME_TYPES = { jpeg: 'image/jpeg', webp: 'image/webp', png: 'image/png' } as const;

/** Encodes 8-bit RGB pixels as JPEG (4:4:4 chroma, no subsampling), WebP or PNG. */
export async function encodeRgb(image: RgbImage, options: EncodeOptions): Promise<EncodedImage> {
  const input = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  });
  let bytes: Buffer;
  if (options.format === 'webp') bytes = await input.webp({ quality: options.quality }).toBuffer();
  else if (options.format === 'png') bytes = await input.png().toBuffer();
  else bytes = await input.jpeg({ quality: options.quality, chromaSubsampling: '4:4:4' }).toBuffer();
  return {
    bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    mime: MIME_TYPES[options.format],
    width: image.width,
    height: image.height,
  };
}

/** Decodes any image sharp reads (JPEG, WebP, PNG) to 8-bit RGB; gray becomes three equal channels, alpha is dropped. */
export async function decodeToRgb(bytes: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(bytes).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) {
    throw new RangeError(`Decoded image has ${info.channels} channels after conversion to sRGB; expected 3.`);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}
