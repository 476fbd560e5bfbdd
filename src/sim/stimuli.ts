/**
 * Stimuli: square crops of the real photographs in data/photos, resized to NSD's 425 x 425.
 *
 * Photos are split into train and test by source photo, so that no test crop comes from a photo
 * seen in training. Image ids are 1-based; test crops take the first ids (1..testCount) so that
 * a test-only dataset needs only the first rows of the imgBrick (row = id - 1).
 */
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { MindeyeError } from '../errors.ts';
import { streamFor } from './prng.ts';

export const PHOTO_DIR = fileURLToPath(new URL('../../data/photos', import.meta.url));
export const STIMULUS_SIZE = 425;
export const TEST_PHOTO_COUNT = 8;
export const TEST_CROPS_PER_PHOTO = 16;
export const TRAIN_CROPS_PER_PHOTO = 24;
/** Crop side as a fraction of the photo's short side. */
export const CROP_SCALE_RANGE: [number, number] = [0.45, 1];

export type Split = 'train' | 'test';

export interface CropSpec {
  id: number;
  photo: string;
  split: Split;
  /** Crop box in the photo's pixels (as stored in data/photos). */
  left: number;
  top: number;
  size: number;
  /** Mirrored left-right after cropping. */
  flip: boolean;
}

export interface Photo {
  name: string;
  file: string;
  width: number;
  height: number;
  /** RGB pixels, row-major, 3 bytes per pixel. */
  rgb: Buffer;
}

export interface StimulusSet {
  crops: CropSpec[];
  testPhotos: string[];
  trainPhotos: string[];
  testCount: number;
}

export function listPhotoFiles(dir = PHOTO_DIR): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', 'The photo folder cannot be read.', {
      file: dir, field: 'data/photos', value: (err as Error).message, fix: 'restore data/photos from the repository',
    });
  }
  const photos = names.filter((n) => /\.(jpe?g|png)$/i.test(n)).sort();
  if (photos.length < TEST_PHOTO_COUNT + 2) {
    throw new MindeyeError('CLI_USAGE', 'Too few photographs for a train/test split.', {
      file: dir, field: 'photo count', value: photos.length, expected: `at least ${TEST_PHOTO_COUNT + 2}`,
      fix: 'restore data/photos from the repository',
    });
  }
  return photos.map((n) => join(dir, n));
}

const photoCache = new Map<string, Promise<Photo>>();

/** Decodes a photo to RGB once per process (grey photos are expanded to three channels). */
export function loadPhoto(file: string): Promise<Photo> {
  let cached = photoCache.get(file);
  if (cached === undefined) {
    cached = (async () => {
      const { data, info } = await sharp(file).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
      let rgb = data;
      if (info.channels === 1) {
        rgb = Buffer.alloc(info.width * info.height * 3);
        for (let i = 0; i < info.width * info.height; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = data[i];
      }
      return { name: basename(file), file, width: info.width, height: info.height, rgb };
    })();
    photoCache.set(file, cached);
  }
  return cached;
}

/**
 * Builds the crop list for a seed: which photos are test photos, and for every photo a set of
 * crops at random positions, scales and mirrorings. Test crops get ids 1..testCount.
 */
export async function buildStimulusSet(seed: number, dir = PHOTO_DIR): Promise<StimulusSet> {
  const files = listPhotoFiles(dir);
  const order = streamFor(seed, 'photo-split').shuffle([...files]);
  const testFiles = order.slice(0, TEST_PHOTO_COUNT).sort();
  const trainFiles = order.slice(TEST_PHOTO_COUNT).sort();
  const crops: CropSpec[] = [];
  let nextId = 1;
  for (const [split, list, perPhoto] of [['test', testFiles, TEST_CROPS_PER_PHOTO], ['train', trainFiles, TRAIN_CROPS_PER_PHOTO]] as const) {
    for (const file of list) {
      const meta = await sharp(file).metadata();
      const width = meta.width ?? 0;
      const height = meta.height ?? 0;
      const rng = streamFor(seed, 'crops', basename(file));
      for (let c = 0; c < perPhoto; c++) {
        // The first crop of each photo is the largest centred square, the others are random.
        const scale = c === 0 ? 1 : rng.range(CROP_SCALE_RANGE[0], CROP_SCALE_RANGE[1]);
        const size = Math.max(16, Math.floor(Math.min(width, height) * scale));
        const left = c === 0 ? Math.floor((width - size) / 2) : rng.int(width - size + 1);
        const top = c === 0 ? Math.floor((height - size) / 2) : rng.int(height - size + 1);
        const flip = c === 0 ? false : rng.uniform() < 0.5;
        crops.push({ id: nextId++, photo: basename(file), split, left, top, size, flip });
      }
    }
  }
  return {
    crops,
    testPhotos: testFiles.map((f) => basename(f)),
    trainPhotos: trainFiles.map((f) => basename(f)),
    testCount: testFiles.length * TEST_CROPS_PER_PHOTO,
  };
}

/** Renders a crop as `size` x `size` RGB bytes (row-major, 3 bytes per pixel). */
export async function renderCrop(spec: CropSpec, size = STIMULUS_SIZE, dir = PHOTO_DIR): Promise<Buffer> {
  const photo = await loadPhoto(join(dir, spec.photo));
  const pixels = await sharp(photo.rgb, { raw: { width: photo.width, height: photo.height, channels: 3 } })
    .extract({ left: spec.left, top: spec.top, width: spec.size, height: spec.size })
    .resize(size, size, { kernel: 'lanczos3' })
    .raw()
    .toBuffer();
  // Mirrored here rather than with sharp's flop(), whose place relative to extract() in
  // sharp's fixed operation order would decide whether the box itself is mirrored.
  if (spec.flip) {
    for (let row = 0; row < size; row++) {
      const base = row * size * 3;
      for (let col = 0; col < size / 2; col++) {
        const a = base + col * 3;
        const b = base + (size - 1 - col) * 3;
        for (let ch = 0; ch < 3; ch++) {
          const tmp = pixels[a + ch];
          pixels[a + ch] = pixels[b + ch];
          pixels[b + ch] = tmp;
        }
      }
    }
  }
  return pixels;
}
