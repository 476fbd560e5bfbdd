/**
 * Writes NSD's stimulus file layout: HDF5 dataset `/imgBrick`, uint8, (N, 425, 425, 3), row =
 * image id - 1, one chunk per image. Rows are streamed to a child process
 * (imgbrick-writer.mjs) as they are rendered. The caller keeps at most one batch of images in
 * memory, and h5wasm's large WebAssembly heap stays out of the caller's process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MindeyeError } from '../errors.ts';

const WRITER = fileURLToPath(new URL('./imgbrick-writer.mjs', import.meta.url));

export class ImgBrickWriter {
  private readonly child: ChildProcess;
  private readonly exited: Promise<{ code: number | null; stderr: string }>;
  private readonly rowBytes: number;

  constructor(readonly file: string, readonly count: number, readonly size: number) {
    this.rowBytes = size * size * 3;
    this.child = spawn(process.execPath, [WRITER, file, String(count), String(size)], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (text: string) => { stderr += text; });
    // A writer that exits early makes stdin fail with EPIPE; close() reports the exit instead.
    this.child.stdin?.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => resolve({ code: null, stderr: `${stderr}${err.message}` }));
      this.child.on('close', (code) => resolve({ code, stderr }));
    });
  }

  /** Sends one image (size x size x 3 RGB bytes) for row `row`, waiting while the pipe is full. */
  async write(row: number, rgb: Uint8Array): Promise<void> {
    if (rgb.byteLength !== this.rowBytes) {
      throw new RangeError(`ImgBrickWriter.write: row ${row} has ${rgb.byteLength} bytes, expected ${this.rowBytes}`);
    }
    const header = Buffer.alloc(4);
    header.writeUInt32LE(row, 0);
    const stdin = this.child.stdin;
    if (stdin === null || stdin.destroyed) throw this.failure('the writer process is not running');
    const flushed = stdin.write(Buffer.concat([header, rgb]));
    if (!flushed) await new Promise<void>((resolve) => stdin.once('drain', () => resolve()));
  }

  /** Ends the stream and waits for the writer to close the file. */
  async close(): Promise<void> {
    this.child.stdin?.end();
    const { code, stderr } = await this.exited;
    if (code !== 0) throw this.failure(stderr.trim() || `exit status ${code}`);
  }

  /** Stops the writer without finishing the file (after an error elsewhere). */
  abort(): void {
    this.child.kill();
  }

  private failure(reason: string): MindeyeError {
    return new MindeyeError('HDF5_INVALID', 'Writing the stimulus file failed.', {
      file: this.file, field: '/imgBrick', value: reason,
      fix: 'check that the output folder is writable and has space (about 0.54 MB per image)',
    });
  }
}
