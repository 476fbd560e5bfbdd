/**
 * Renders a volume as a PNG mosaic of axial slices for the dashboard's volume panel.
 *
 * Up to MAX_TILES axial slices (k) are chosen evenly and tiled row-major from the top left.
 * Each tile shows the (i, j) plane with i to the right and j up (the affine is not applied:
 * for the usual RAS-ish EPI orientation that puts anterior at the top). Intensities are scaled
 * between the 2nd and 98th percentiles of the nonzero voxels, sampled. When a mask on the same
 * grid is given, its in-plane outline is drawn in orange.
 */
import sharp from 'sharp';
import { nowMs, type QualityFlag, type Shape3, type Volume } from '../src/events.ts';
import { logger } from '../src/log.ts';
import { encodeBinaryMessage, type MosaicHeader } from './protocol.ts';

const MAX_TILES = 16;
/** Minimum mosaic width in pixels: small grids are scaled up with nearest-neighbour sampling. */
const MIN_WIDTH_PX = 320;
const OUTLINE_RGB = [255, 140, 0] as const;

export interface MosaicImage {
  png: Uint8Array;
  width: number;
  height: number;
  slices: number[];
  hasMaskOutline: boolean;
}

export function chooseSlices(depth: number, maxTiles = MAX_TILES): number[] {
  if (depth <= maxTiles) return Array.from({ length: depth }, (_, k) => k);
  const out: number[] = [];
  for (let t = 0; t < maxTiles; t++) out.push(Math.round(((t + 0.5) * depth) / maxTiles - 0.5));
  return out;
}

/** Returns the 2nd and 98th percentiles of the nonzero values, from at most about 20k samples. */
export function intensityWindow(data: Float32Array): [number, number] {
  const stride = Math.max(1, Math.floor(data.length / 20000));
  const samples: number[] = [];
  for (let n = 0; n < data.length; n += stride) {
    const v = data[n];
    if (v !== 0 && Number.isFinite(v)) samples.push(v);
  }
  if (samples.length === 0) return [0, 1];
  samples.sort((a, b) => a - b);
  const lo = samples[Math.floor(0.02 * (samples.length - 1))];
  const hi = samples[Math.floor(0.98 * (samples.length - 1))];
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

export async function renderMosaic(data: Float32Array, shape: Shape3, mask?: Uint8Array): Promise<MosaicImage> {
  const [nx, ny, nz] = shape;
  if (data.length !== nx * ny * nz) {
    throw new RangeError(`volume has ${data.length} voxels but its shape ${shape.join('x')} needs ${nx * ny * nz}`);
  }
  const useMask = mask !== undefined && mask.length === data.length;
  const slices = chooseSlices(nz);
  const cols = Math.ceil(Math.sqrt(slices.length));
  const rows = Math.ceil(slices.length / cols);
  const width = cols * nx;
  const height = rows * ny;
  const rgb = Buffer.alloc(width * height * 3);
  const [lo, hi] = intensityWindow(data);
  const scale = 255 / (hi - lo);

  slices.forEach((k, tile) => {
    const x0 = (tile % cols) * nx;
    const y0 = Math.floor(tile / cols) * ny;
    for (let j = 0; j < ny; j++) {
      // Row 0 of the tile is the highest j, so that j points up on screen.
      const y = y0 + (ny - 1 - j);
      for (let i = 0; i < nx; i++) {
        const voxel = i + nx * (j + ny * k);
        const pixel = (y * width + x0 + i) * 3;
        if (useMask && isOutline(mask, i, j, k, nx, ny)) {
          rgb[pixel] = OUTLINE_RGB[0];
          rgb[pixel + 1] = OUTLINE_RGB[1];
          rgb[pixel + 2] = OUTLINE_RGB[2];
          continue;
        }
        const value = data[voxel];
        const gray = Number.isFinite(value) ? Math.max(0, Math.min(255, Math.round((value - lo) * scale))) : 0;
        rgb[pixel] = gray;
        rgb[pixel + 1] = gray;
        rgb[pixel + 2] = gray;
      }
    }
  });

  const factor = Math.max(1, Math.ceil(MIN_WIDTH_PX / width));
  let image = sharp(rgb, { raw: { width, height, channels: 3 } });
  if (factor > 1) image = image.resize(width * factor, height * factor, { kernel: 'nearest' });
  const png = await image.png({ compressionLevel: 3 }).toBuffer();
  return { png, width: width * factor, height: height * factor, slices, hasMaskOutline: useMask };
}

/** Returns true for a mask voxel with one of its four in-plane neighbours outside the mask. */
function isOutline(mask: Uint8Array, i: number, j: number, k: number, nx: number, ny: number): boolean {
  const at = (a: number, b: number): number => (a < 0 || b < 0 || a >= nx || b >= ny ? 0 : mask[a + nx * (b + ny * k)]);
  if (at(i, j) === 0) return false;
  return at(i - 1, j) === 0 || at(i + 1, j) === 0 || at(i, j - 1) === 0 || at(i, j + 1) === 0;
}

/** Renders the newest volume as a mosaic, at most one every `intervalMs`, never queuing more than one. */
export class MosaicScheduler {
  latest?: Buffer;
  private pending?: Volume;
  private busy = false;
  private lastStartMs = -Infinity;

  constructor(
    private readonly mask: Uint8Array | undefined,
    private readonly intervalMs: number,
    /** Returns the quality flags of a volume, once its masked-volume event arrived. */
    private readonly flagsOf: (volIdx: number) => QualityFlag[],
    private readonly publish: (message: Buffer) => void,
  ) {}

  offer(volume: Volume): void {
    this.pending = volume;
    if (!this.busy) void this.run();
  }

  private async run(): Promise<void> {
    this.busy = true;
    try {
      while (this.pending !== undefined) {
        const waitMs = this.lastStartMs + this.intervalMs - nowMs();
        if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
        const volume = this.pending;
        this.pending = undefined;
        if (volume === undefined) break;
        this.lastStartMs = nowMs();
        await this.render(volume);
      }
    } finally {
      this.busy = false;
    }
  }

  private async render(volume: Volume): Promise<void> {
    try {
      const mosaic = await renderMosaic(volume.data, volume.shape, this.mask);
      const flags = this.flagsOf(volume.volIdx);
      const header: MosaicHeader = {
        type: 'mosaic',
        runId: volume.runId,
        volIdx: volume.volIdx,
        mime: 'image/png',
        width: mosaic.width,
        height: mosaic.height,
        slices: mosaic.slices,
        hasMaskOutline: mosaic.hasMaskOutline,
        flags,
      };
      this.latest = encodeBinaryMessage(header, mosaic.png);
      this.publish(this.latest);
    } catch (err) {
      logger.warn({ err, stage: 'dashboard', volIdx: volume.volIdx }, 'volume mosaic failed; the panel keeps the previous volume');
    }
  }
}
