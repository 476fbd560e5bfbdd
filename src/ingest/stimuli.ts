/**
 * Stimulus images for ground truth: NSD's `imgBrick` HDF5 (N, 425, 425, 3) uint8, read one row at
 * a time with h5wasm (HDF5 row = 73k id - 1).
 */
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import h5wasm from 'h5wasm/node';
import { MindeyeError } from '../errors.ts';

export interface StimulusImage {
  width: number;
  height: number;
  /** RGB, 8 bits per channel, row-major. */
  rgb: Uint8Array;
}

export class ImgBrick {
  private readonly file: InstanceType<typeof h5wasm.File>;
  private readonly dataset: InstanceType<typeof h5wasm.Dataset>;
  readonly count: number;
  readonly height: number;
  readonly width: number;
  private readonly jpegCache = new Map<string, Uint8Array>();

  private constructor(readonly path: string, file: InstanceType<typeof h5wasm.File>, dataset: InstanceType<typeof h5wasm.Dataset>) {
    this.file = file;
    this.dataset = dataset;
    const shape = dataset.shape ?? [];
    if (shape.length !== 4 || shape[3] !== 3) {
      throw new MindeyeError('HDF5_INVALID', 'The stimulus dataset has an unexpected shape.', {
        file: path, field: '/imgBrick shape', value: shape, expected: '(N, H, W, 3) uint8', fix: 'point --nsd-root at an NSD-layout dataset',
      });
    }
    [this.count, this.height, this.width] = shape as number[];
  }

  static async open(path: string): Promise<ImgBrick> {
    if (!existsSync(path)) {
      throw new MindeyeError('HDF5_INVALID', 'The stimulus HDF5 file is missing.', { file: path, fix: 'ground-truth images are optional; add the file to compare reconstructions' });
    }
    await h5wasm.ready;
    const file = new h5wasm.File(path, 'r');
    const dataset = file.get('imgBrick');
    if (!(dataset instanceof h5wasm.Dataset)) {
      file.close();
      throw new MindeyeError('HDF5_INVALID', 'The stimulus HDF5 file has no /imgBrick dataset.', {
        file: path, field: '/imgBrick', expected: 'a dataset (N, 425, 425, 3) uint8', fix: 'check the file',
      });
    }
    return new ImgBrick(path, file, dataset);
  }

  /** Returns the image of a 1-based 73k-style id, or undefined when out of range. */
  image(id: string | number): StimulusImage | undefined {
    const row = Number(id) - 1;
    if (!Number.isInteger(row) || row < 0 || row >= this.count) return undefined;
    const data = this.dataset.slice([[row, row + 1], [], [], []]) as Uint8Array;
    return { width: this.width, height: this.height, rgb: Uint8Array.from(data) };
  }

  async jpeg(id: string | number, size = 212): Promise<Uint8Array | undefined> {
    const key = `${id}@${size}`;
    const cached = this.jpegCache.get(key);
    if (cached) return cached;
    const img = this.image(id);
    if (!img) return undefined;
    const out = await sharp(Buffer.from(img.rgb), { raw: { width: img.width, height: img.height, channels: 3 } })
      .resize(size, size).jpeg({ quality: 85 }).toBuffer();
    const bytes = new Uint8Array(out);
    this.jpegCache.set(key, bytes);
    return bytes;
  }

  close(): void {
    this.file.close();
  }
}
