/**
 * Stimulus images for ground truth: NSD's `imgBrick` HDF5 (N, 425, 425, 3) uint8, read one row at
 * a time with h5wasm (HDF5 row = 73k id - 1).
 */
import { existsSync } from 'node:fs';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type h5wasmModule from 'h5wasm/node';
import { MindeyeError } from '../errors.ts';

export interface StimulusImage {
  width: number;
  height: number;
  /** RGB, 8 bits per channel, row-major. */
  rgb: Uint8Array;
}

type H5 = typeof h5wasmModule;

// h5wasm is imported on first use: loading its WebAssembly module raises the process RSS by
// about 600 MB (measured with h5wasm 0.10.3 on Node 20), which a run without ground-truth images
// should not pay.
let h5: H5 | undefined;
async function loadH5(): Promise<H5> {
  if (!h5) {
    h5 = (await import('h5wasm/node')).default;
    await h5.ready;
  }
  return h5;
}

/** Encodes a stimulus as a square JPEG thumbnail of `size` pixels. */
export async function encodeJpeg(img: StimulusImage, size: number): Promise<Uint8Array> {
  const out = await sharp(Buffer.from(img.rgb), { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(size, size).jpeg({ quality: 85 }).toBuffer();
  return new Uint8Array(out);
}

export class ImgBrick {
  private readonly file: InstanceType<H5['File']>;
  private readonly dataset: InstanceType<H5['Dataset']>;
  readonly count: number;
  readonly height: number;
  readonly width: number;
  private readonly jpegCache = new Map<string, Uint8Array>();

  private constructor(readonly path: string, file: InstanceType<H5['File']>, dataset: InstanceType<H5['Dataset']>) {
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
    const h5wasm = await loadH5();
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
    const bytes = await encodeJpeg(img, size);
    this.jpegCache.set(key, bytes);
    return bytes;
  }

  close(): void {
    this.file.close();
  }
}

/**
 * Reads stimulus rows in a child process (src/ingest/imgbrick-reader.mjs), started on the first
 * request: h5wasm's heap (about 650 MB resident) then never counts against the replay process.
 */
export class LazyImgBrick {
  private child?: ChildProcess;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private info?: Promise<{ count: number; height: number; width: number; channels: number; rank: number }>;
  private readonly jpegCache = new Map<string, Uint8Array>();

  constructor(readonly path: string) {}

  private request<T>(msg: object): Promise<T> {
    if (!this.child) {
      const script = fileURLToPath(new URL('./imgbrick-reader.mjs', import.meta.url));
      // stderr is dropped: HDF5's own diagnostics would repeat the errors that come back over IPC.
      const child = fork(script, [this.path], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
      child.on('message', (reply: { id: number; error?: string }) => {
        const waiter = this.pending.get(reply.id);
        this.pending.delete(reply.id);
        if (reply.error) waiter?.reject(new MindeyeError('HDF5_INVALID', `Could not read the stimulus file: ${reply.error}`, { file: this.path, field: '/imgBrick' }));
        else waiter?.resolve(reply);
      });
      child.on('exit', () => {
        for (const w of this.pending.values()) w.reject(new MindeyeError('HDF5_INVALID', 'The stimulus reader process exited.', { file: this.path }));
        this.pending.clear();
        this.child = undefined;
      });
      this.child = child;
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child!.send({ id, ...msg });
    });
  }

  /** Returns the image of a 1-based 73k-style id, or undefined when the id is out of range. */
  async image(id: string): Promise<StimulusImage | undefined> {
    if (!existsSync(this.path)) return undefined;
    this.info ??= this.request({ info: true });
    const info = await this.info;
    if (info.rank !== 4 || info.channels !== 3) {
      throw new MindeyeError('HDF5_INVALID', 'The stimulus dataset has an unexpected shape.', {
        file: this.path, field: '/imgBrick shape', value: `rank ${info.rank}`, expected: '(N, H, W, 3) uint8', fix: 'point --nsd-root at an NSD-layout dataset',
      });
    }
    const row = Number(id) - 1;
    if (!Number.isInteger(row) || row < 0 || row >= info.count) return undefined;
    const reply = await this.request<{ width: number; height: number; rgb: Uint8Array }>({ row });
    return { width: reply.width, height: reply.height, rgb: reply.rgb };
  }

  async jpeg(id: string, size = 212): Promise<Uint8Array | undefined> {
    const key = `${id}@${size}`;
    const cached = this.jpegCache.get(key);
    if (cached) return cached;
    const img = await this.image(id);
    if (!img) return undefined;
    const bytes = await encodeJpeg(img, size);
    this.jpegCache.set(key, bytes);
    return bytes;
  }

  async close(): Promise<void> {
    this.child?.disconnect();
  }
}
