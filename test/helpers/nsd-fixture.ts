/**
 * Builds an NSD-layout fixture with NSD's real encodings: 81x104x83 int16 .nii.gz time series
 * with 226 volumes at TR 4/3 s (written volume by volume through a gzip stream), a headerless
 * design TSV with 225 rows, an nsdgeneral ROI with -1/0/1 values and a small /imgBrick HDF5.
 * The signal is synthetic (a brain-shaped baseline, noise and responses in the ROI).
 */
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { createGzip } from 'node:zlib';
import { once } from 'node:events';
import { dirname } from 'node:path';
import h5wasm from 'h5wasm/node';
import { encodeNifti, encodeNiftiHeader } from '../../src/io/nifti.ts';
import { nsdPaths } from '../../src/ingest/nsd.ts';

export const NSD_SHAPE: [number, number, number] = [81, 104, 83];
export const NSD_VOLUMES = 226;
export const NSD_TR = 4 / 3;

function mulberry32(seed: number) {
  return () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const NSD_AFFINE = Float64Array.from([-1.8, 0, 0, 72, 0, 1.8, 0, -93.6, 0, 0, 1.8, -72, 0, 0, 0, 1]);

export interface NsdFixture { root: string; roiVoxels: number; trials: number; images: number }

export async function writeNsdFixture(root: string, opts: { designRows?: number; imageCount?: number } = {}): Promise<NsdFixture> {
  const ref = { root, subject: 1, session: 1, run: 1 };
  const paths = nsdPaths(ref);
  for (const p of [paths.timeseries, paths.design, paths.roi, paths.stimuli]) mkdirSync(dirname(p), { recursive: true });
  const [nx, ny, nz] = NSD_SHAPE;
  const n = nx * ny * nz;
  const rand = mulberry32(7);
  // Brain: an ellipsoid; ROI: a posterior (low y) blob of it.
  const roi = new Float32Array(n);
  const baseline = new Float32Array(n);
  let roiVoxels = 0;
  for (let k = 0; k < nz; k++) for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) {
    const x = (i - nx / 2) / 34, y = (j - ny / 2) / 45, z = (k - nz / 2) / 34;
    const idx = i + nx * (j + ny * k);
    const r2 = x * x + y * y + z * z;
    if (r2 > 1) { roi[idx] = 0; continue; }
    baseline[idx] = 700 + 300 * (1 - r2);
    const inRoi = y < -0.55 && Math.abs(z) < 0.45 && Math.abs(x) < 0.6;
    roi[idx] = inRoi ? 1 : r2 < 0.5 ? 0 : -1;
    if (inRoi) roiVoxels++;
  }
  writeFileSync(paths.roi, encodeNifti(roi, { shape: NSD_SHAPE, voxelSizeMm: [1.8, 1.8, 1.8], affine: NSD_AFFINE, datatype: 'int16', gzip: true }));

  // Design: 75 slots of 3 TRs; 62 stimulus trials.
  const imageCount = opts.imageCount ?? 10;
  const design = new Array<number>(opts.designRows ?? 225).fill(0);
  const blanks = new Set([3, 11, 19, 27, 35, 43, 51, 59, 63, 67, 71, 74, 70]);
  let trials = 0;
  for (let slot = 0; slot < 75; slot++) {
    if (blanks.has(slot) || slot * 3 >= design.length) continue;
    design[slot * 3] = 1 + (trials % imageCount);
    trials++;
  }
  writeFileSync(paths.design, design.map((d) => `${d}\n`).join(''));

  // Time series, one volume at a time through gzip (never the whole run in memory).
  const header = encodeNiftiHeader({ shape: NSD_SHAPE, volumes: NSD_VOLUMES, voxelSizeMm: [1.8, 1.8, 1.8], trSec: NSD_TR, affine: NSD_AFFINE, datatype: 'int16' });
  const gzip = createGzip({ level: 1 });
  const out = createWriteStream(paths.timeseries);
  gzip.pipe(out);
  gzip.write(header);
  const vol = Buffer.alloc(n * 2);
  for (let t = 0; t < NSD_VOLUMES; t++) {
    const slotOn = design[Math.floor(t / 3) * 3] ?? 0;
    const response = slotOn > 0 ? 20 : 0;
    for (let i = 0; i < n; i++) {
      const b = baseline[i];
      const v = b === 0 ? 0 : b + (roi[i] === 1 ? response * ((i % 7) / 7) : 0) + (rand() - 0.5) * 20;
      vol.writeInt16LE(Math.round(v), i * 2);
    }
    if (!gzip.write(vol)) await once(gzip, 'drain');
  }
  gzip.end();
  await once(out, 'finish');

  // Stimuli: a small imgBrick (N, 425, 425, 3) uint8.
  await h5wasm.ready;
  const f = new h5wasm.File(paths.stimuli, 'w');
  const pixels = new Uint8Array(imageCount * 425 * 425 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 31 + Math.floor(i / (425 * 425 * 3)) * 97) & 255;
  f.create_dataset({ name: 'imgBrick', data: pixels, shape: [imageCount, 425, 425, 3], dtype: '<B' });
  f.close();
  return { root, roiVoxels, trials, images: imageCount };
}
