/**
 * `mindeye-rt bank`: builds an image bank for retrieval. Each image is encoded with the
 * `imageEncoder` head of an encoder model directory, and the bank (ids JSON, float32 embeddings,
 * JPEG thumbnails) is written into a model directory whose manifest gains an `imageBank` entry.
 *
 * Encoder input: [B, 3, S, S] float32 RGB (S = imageEncoder.inputSize), resized with sharp
 * (cover, centre crop) and scaled to [0, 1]. imageEncoder.normalize then selects "clip" (OpenAI
 * CLIP mean and std, the default), "unit" (kept in [0, 1]) or "signed" ([-1, 1]).
 * The output is flattened per image, so a [B, 257, 768] encoder gives 197,376-wide rows.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import sharp from 'sharp';
import { MindeyeError } from '../errors.ts';
import { loadManifest, type LoadedManifest, type ModelManifest } from '../decode/manifest.ts';
import { inputShape, loadHead, runBatch, type Device, type LoadedHead } from '../decode/ort.ts';
import { ImgBrick } from '../ingest/stimuli.ts';
import { logger } from '../log.ts';

export const help = `mindeye-rt bank: build an image bank (embeddings and thumbnails) for retrieval

Usage: mindeye-rt bank --images DIR|FILE.hdf5 --encoder MODEL_DIR --out MODEL_DIR
                       [--ids LIST] [--limit N] [--thumb-size PX] [--batch N] [--device cpu|cuda]

  --images DIR|FILE.hdf5  a folder of .jpg/.jpeg/.png/.webp images (id = file name without
                          extension, sorted by name), or an NSD-style HDF5 with /imgBrick
                          (N, H, W, 3) uint8 (id = row + 1, the 73k id)
  --encoder MODEL_DIR     model directory with an imageEncoder head (it may have no other head)
  --out MODEL_DIR         model directory that receives the bank (its manifest.json is updated)
  --ids LIST              HDF5 only: comma-separated 1-based ids to encode (default: all rows)
  --limit N               encode at most N images (default: all)
  --thumb-size PX         thumbnail edge in pixels (default 128)
  --batch N               images per encoder call (default 8)
  --device cpu|cuda       where the encoder runs (default cpu)

Writes bank_ids.json, bank.f32 (row-major [count, dim] little-endian float32) and thumbs/<id>.jpg.`;

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp']);
const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

type Normalize = 'clip' | 'unit' | 'signed';

interface ImageSource {
  ids: string[];
  /** Encoded image file bytes, or raw RGB with its size. */
  read(index: number): Promise<{ input: Buffer; raw?: { width: number; height: number; channels: 3 } }>;
  close(): void;
}

function usage(summary: string, field: string, value: unknown, expected: string): MindeyeError {
  return new MindeyeError('CLI_USAGE', summary, { field, value, expected, fix: 'see mindeye-rt bank --help' });
}

function positiveInt(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw usage(`Invalid ${flag}.`, flag, text, 'a positive integer');
  return n;
}

function folderSource(dir: string): ImageSource {
  const files = readdirSync(dir).filter((name) => IMAGE_EXTENSIONS.has(extname(name).toLowerCase())).sort();
  const ids = files.map((name) => basename(name, extname(name)));
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) {
      throw new MindeyeError('CLI_USAGE', 'Two images in the folder have the same id.', {
        file: dir, field: 'image id', value: id, expected: 'unique file names without extension', fix: 'rename one of the files',
      });
    }
    seen.add(id);
  }
  return {
    ids,
    read: async (index) => ({ input: readFileSync(join(dir, files[index])) }),
    close: () => undefined,
  };
}

async function hdf5Source(file: string, idList: string | undefined): Promise<ImageSource> {
  const brick = await ImgBrick.open(file);
  let ids: string[];
  if (idList === undefined) {
    ids = Array.from({ length: brick.count }, (_, i) => String(i + 1));
  } else {
    ids = idList.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    for (const id of ids) {
      const n = Number(id);
      if (!Number.isInteger(n) || n < 1 || n > brick.count) {
        brick.close();
        throw usage('An id in --ids is outside the HDF5 rows.', '--ids', id, `an integer from 1 to ${brick.count}`);
      }
    }
  }
  return {
    ids,
    read: async (index) => {
      const image = brick.image(ids[index]);
      if (image === undefined) throw usage('Image id not found in the HDF5 file.', '--ids', ids[index], `1..${brick.count}`);
      return { input: Buffer.from(image.rgb.buffer, image.rgb.byteOffset, image.rgb.byteLength), raw: { width: image.width, height: image.height, channels: 3 } };
    },
    close: () => brick.close(),
  };
}

/** Converts one image to the encoder's NCHW float32 row. */
async function toEncoderInput(source: { input: Buffer; raw?: { width: number; height: number; channels: 3 } }, size: number, normalize: Normalize): Promise<Float32Array> {
  const { data } = await sharp(source.input, source.raw ? { raw: source.raw } : {})
    .removeAlpha().toColorspace('srgb').resize(size, size, { fit: 'cover' }).raw().toBuffer({ resolveWithObject: true });
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const unit = data[p * 3 + c] / 255;
      let value = unit;
      if (normalize === 'clip') value = (unit - CLIP_MEAN[c]) / CLIP_STD[c];
      else if (normalize === 'signed') value = unit * 2 - 1;
      out[c * plane + p] = value;
    }
  }
  return out;
}

async function writeThumbnail(source: { input: Buffer; raw?: { width: number; height: number; channels: 3 } }, file: string, size: number): Promise<void> {
  await sharp(source.input, source.raw ? { raw: source.raw } : {}).removeAlpha().resize(size, size, { fit: 'cover' }).jpeg({ quality: 85 }).toFile(file);
}

function encoderSettings(encoderModel: LoadedManifest, head: LoadedHead): { size: number; normalize: Normalize } {
  const spec = head.spec;
  const normalize = (spec.normalize ?? 'clip') as Normalize;
  if (!['clip', 'unit', 'signed'].includes(normalize)) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'Unknown image encoder normalization.', {
      file: encoderModel.manifestPath, field: 'heads.imageEncoder.normalize', value: spec.normalize,
      expected: '"clip", "unit" or "signed"', fix: 'set the normalization the encoder was trained with',
    });
  }
  const shape = inputShape(head, spec.inputName ?? head.inputNames[0], 1);
  const size = Number(spec.inputSize ?? shape[2]);
  if (shape.length !== 4 || shape[1] !== 3 || shape[2] !== size || shape[3] !== size) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The image encoder input is not [batch, 3, inputSize, inputSize].', {
      file: head.file, field: 'imageEncoder input', value: `[${shape.join(', ')}]`, expected: `[batch, 3, ${size}, ${size}]`,
      fix: 'export the encoder with NCHW RGB input and set heads.imageEncoder.inputSize',
    });
  }
  return { size, normalize };
}

/**
 * Reads the encoder model's manifest. An encoder-only directory has no head that takes voxels,
 * which loadManifest requires, so this checks only what the bank needs: the format, the version
 * and the imageEncoder head with its ONNX file.
 */
function loadEncoderManifest(dirArg: string): LoadedManifest {
  const dir = resolve(dirArg);
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'The encoder directory has no manifest.json.', {
      file: manifestPath, field: '--encoder', fix: 'pass a model directory with an imageEncoder head',
    });
  }
  let manifest: ModelManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as ModelManifest;
  } catch (err) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `The encoder manifest is not valid JSON: ${(err as Error).message}`, {
      file: manifestPath, fix: 'rewrite the manifest',
    });
  }
  const head = manifest.heads?.imageEncoder;
  if (manifest.format !== 'mindeye-rt-model' || manifest.version !== 1 || head === undefined) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The encoder model has no imageEncoder head.', {
      file: manifestPath, field: 'heads.imageEncoder', value: Object.keys(manifest.heads ?? {}).join(', ') || '(no heads)',
      expected: 'a mindeye-rt-model version 1 manifest with heads.imageEncoder',
      fix: 'pass a model directory with an imageEncoder head to --encoder',
    });
  }
  if (typeof head.file !== 'string' || !existsSync(join(dir, head.file))) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'The image encoder ONNX file named in the manifest does not exist.', {
      file: manifestPath, field: 'heads.imageEncoder.file', value: head.file, fix: 'copy the ONNX file into the encoder directory',
    });
  }
  return { dir, manifestPath, manifest };
}

export interface BankOptions {
  images: string;
  encoder: string;
  out: string;
  ids?: string;
  limit?: number;
  thumbSize?: number;
  batch?: number;
  device?: Device;
}

/** Builds the bank and returns the number of images and the embedding width. */
export async function buildBank(opts: BankOptions): Promise<{ count: number; dim: number }> {
  if (!existsSync(opts.images)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'The images folder or HDF5 file does not exist.', {
      file: opts.images, field: '--images', fix: 'pass a folder of images or an HDF5 file with /imgBrick',
    });
  }
  const encoderModel = loadEncoderManifest(opts.encoder);
  const outModel = loadManifest(opts.out);
  const head = await loadHead(encoderModel, 'imageEncoder', { device: opts.device ?? 'cpu' });
  const { size, normalize } = encoderSettings(encoderModel, head);
  const isFolder = statSync(opts.images).isDirectory();
  if (isFolder && opts.ids !== undefined) throw usage('--ids applies only to an HDF5 file.', '--ids', opts.ids, 'no --ids with an images folder');
  const source = isFolder ? folderSource(opts.images) : await hdf5Source(opts.images, opts.ids);
  try {
    const count = Math.min(source.ids.length, opts.limit ?? Number.POSITIVE_INFINITY);
    if (count === 0) {
      throw new MindeyeError('CLI_USAGE', 'No images to encode.', {
        file: opts.images, field: '--images', expected: 'at least one .jpg, .jpeg, .png or .webp image', fix: 'check the folder',
      });
    }
    const thumbsDir = join(outModel.dir, 'thumbs');
    mkdirSync(thumbsDir, { recursive: true });
    const batchSize = opts.batch ?? 8;
    const rows: Float32Array[] = [];
    for (let start = 0; start < count; start += batchSize) {
      const inputs: Float32Array[] = [];
      for (let i = start; i < Math.min(start + batchSize, count); i++) {
        const image = await source.read(i);
        inputs.push(await toEncoderInput(image, size, normalize));
        await writeThumbnail(image, join(thumbsDir, `${source.ids[i]}.jpg`), opts.thumbSize ?? 128);
      }
      rows.push(...(await runBatch(head, inputs)));
      logger.debug({ encoded: rows.length, count }, 'bank progress');
    }
    const dim = rows[0].length;
    const embeddings = new Float32Array(count * dim);
    rows.forEach((row, i) => embeddings.set(row, i * dim));
    writeFileSync(join(outModel.dir, 'bank_ids.json'), JSON.stringify(source.ids.slice(0, count)));
    writeFileSync(join(outModel.dir, 'bank.f32'), Buffer.from(embeddings.buffer));
    const manifest = JSON.parse(readFileSync(outModel.manifestPath, 'utf8')) as Record<string, unknown>;
    manifest.imageBank = {
      ids: 'bank_ids.json', embeddings: 'bank.f32', dim, thumbnails: 'thumbs/',
      space: (head.spec.space as string | undefined) ?? encoderModel.manifest.name,
    };
    writeFileSync(outModel.manifestPath, JSON.stringify(manifest, null, 2));
    logger.info({ count, dim, out: outModel.dir }, 'image bank written');
    return { count, dim };
  } finally {
    source.close();
  }
}

/** Parses flags strictly; an unknown flag or a stray argument is a usage error, not a stack trace. */
function parseCommandLine<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', (err as Error).message, { fix: 'see mindeye-rt bank --help' });
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandLine(argv, {
    images: { type: 'string' },
    encoder: { type: 'string' },
    out: { type: 'string' },
    ids: { type: 'string' },
    limit: { type: 'string' },
    'thumb-size': { type: 'string' },
    batch: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
  } as const);
  for (const flag of ['images', 'encoder', 'out'] as const) {
    if (values[flag] === undefined) throw usage(`Missing --${flag}.`, `--${flag}`, undefined, 'a path');
  }
  if (values.device !== 'cpu' && values.device !== 'cuda') throw usage('Invalid --device.', '--device', values.device, 'cpu or cuda');
  const result = await buildBank({
    images: values.images as string, encoder: values.encoder as string, out: values.out as string, ids: values.ids,
    limit: values.limit === undefined ? undefined : positiveInt('--limit', values.limit, 0),
    thumbSize: positiveInt('--thumb-size', values['thumb-size'], 128),
    batch: positiveInt('--batch', values.batch, 8),
    device: values.device,
  });
  process.stdout.write(`${result.count} images, ${result.dim} values each\n`);
  return 0;
}
