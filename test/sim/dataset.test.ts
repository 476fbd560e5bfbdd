import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import h5wasm from 'h5wasm/node';
import { readNifti, readNiftiHeader } from '../../src/io/nifti.ts';
import { appliedMotion, datasetPaths, runPaths, simulateDataset, type SimSummary } from '../../src/sim/dataset.ts';
import { renderCrop, type CropSpec } from '../../src/sim/stimuli.ts';

// One training session of one run, then the two held-out test runs (one run per session: sessions 2
// and 3), epi grid.
const BASE = { grid: 'epi' as const, sessions: 1, runsPerSession: 1, testRuns: 2, seed: 7 };

interface StimuliJson {
  testPhotos: string[];
  trainPhotos: string[];
  imgBrickRows: number;
  images: Array<Omit<CropSpec, 'left' | 'top' | 'size'> & { cropBox: { left: number; top: number; width: number; height: number } }>;
}

describe('simulated dataset', () => {
  let root: string;
  let full: SimSummary;
  let alone: SimSummary;
  let otherSeed: SimSummary;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'mindeye-sim-'));
    full = await simulateDataset({ ...BASE, out: join(root, 'full') });
    alone = await simulateDataset({ ...BASE, out: join(root, 'alone'), only: 'test', runs: 1 });
    otherSeed = await simulateDataset({ ...BASE, seed: 8, out: join(root, 'seed8'), only: 'test', runs: 1 });
  });

  after(() => rmSync(root, { recursive: true, force: true }));

  test('writes the NSD file layout', () => {
    assert.deepEqual(full.runs.map((r) => [r.session, r.run, r.split]), [[1, 1, 'train'], [2, 1, 'test'], [3, 1, 'test']]);
    const paths = datasetPaths(full.out);
    for (const file of [paths.roi, paths.stimuli, paths.stimuliJson, paths.marker]) assert.ok(existsSync(file), file);
    for (const run of full.runs) {
      const p = runPaths(full.out, run.session, run.run);
      for (const file of [p.timeseries, p.design, p.betas, p.betasJson, p.motion]) assert.ok(existsSync(file), file);
    }
    assert.match(runPaths(full.out, 2, 1).timeseries, /nsddata_timeseries\/ppdata\/subj01\/func1pt8mm\/timeseries\/timeseries_session02_run01\.nii\.gz$/);
  });

  test('time series are int16 with TR 4/3 s and 226 volumes', () => {
    const header = readNiftiHeader(full.runs[1].timeseries);
    assert.equal(header.datatypeCode, 4);
    assert.equal(header.volumes, 226);
    assert.ok(Math.abs(header.trSec - 4 / 3) < 1e-6, `TR ${header.trSec}`);
    assert.deepEqual(header.shape, [64, 64, 36]);
  });

  test('marker file says simulated and not motion-corrected', () => {
    const marker = JSON.parse(readFileSync(datasetPaths(full.out).marker, 'utf8'));
    assert.equal(marker.simulated, true);
    assert.equal(marker.motionCorrected, false);
    assert.equal(marker.grid, 'epi');
    assert.equal(marker.seed, 7);
    assert.equal(typeof marker.generator, 'string');
    assert.equal(marker.complete, true);
  });

  test('ROI has -1/0/1 values and a posterior visual cortex', () => {
    const roi = readNifti(datasetPaths(full.out).roi);
    const brain = readNifti(datasetPaths(full.out).brainMask);
    const counts = new Map<number, number>();
    for (const v of roi.data) counts.set(v, (counts.get(v) ?? 0) + 1);
    assert.deepEqual([...counts.keys()].sort(), [-1, 0, 1]);
    const ones = counts.get(1) ?? 0;
    assert.ok(ones >= 1000, `${ones} voxels labelled 1`);
    assert.ok(ones <= 5000, `${ones} voxels labelled 1`);
    assert.equal(ones, full.roiVoxels);
    // Mean world y (posterior is negative in RAS+) of the ROI against the whole brain.
    const [nx, ny] = roi.header.shape;
    const a = roi.header.affine;
    const meanY = (select: (i: number) => boolean) => {
      let sum = 0, count = 0;
      for (let index = 0; index < roi.data.length; index++) {
        if (!select(index)) continue;
        const i = index % nx, j = Math.floor(index / nx) % ny, k = Math.floor(index / (nx * ny));
        sum += a[4] * i + a[5] * j + a[6] * k + a[7];
        count++;
      }
      return sum / count;
    };
    const roiY = meanY((i) => roi.data[i] === 1);
    const brainY = meanY((i) => brain.data[i] === 1);
    assert.ok(roiY < brainY - 40, `ROI mean y ${roiY.toFixed(1)} mm vs brain ${brainY.toFixed(1)} mm`);
    for (let i = 0; i < roi.data.length; i++) {
      if (roi.data[i] >= 0) assert.equal(brain.data[i], 1, `labelled voxel ${i} is inside the brain`);
    }
  });

  test('non-brain voxels are zero', () => {
    const first = readNifti(full.runs[1].timeseries);
    const roi = readNifti(datasetPaths(full.out).roi);
    const n = roi.data.length;
    let outsideNonZero = 0, outside = 0;
    const brain = readNifti(datasetPaths(full.out).brainMask);
    // Volume 0 is the motion reference, so its brain is exactly the brain mask.
    for (let i = 0; i < n; i++) {
      if (brain.data[i] === 1) continue;
      outside++;
      if (first.data[i] !== 0) outsideNonZero++;
    }
    assert.equal(outsideNonZero, 0, `${outsideNonZero} of ${outside} non-brain voxels are non-zero`);
  });

  test('same seed gives identical files', () => {
    const a = runPaths(full.out, 2, 1);
    const b = runPaths(alone.out, 2, 1);
    for (const key of ['timeseries', 'design', 'betas', 'motion'] as const) {
      assert.ok(readFileSync(a[key]).equals(readFileSync(b[key])), `${key} differs between a whole dataset and the run alone`);
    }
  });

  test('another seed gives other data', () => {
    const a = runPaths(alone.out, 2, 1);
    const b = runPaths(otherSeed.out, 2, 1);
    assert.ok(!readFileSync(a.design).equals(readFileSync(b.design)));
    assert.ok(!readFileSync(a.timeseries).equals(readFileSync(b.timeseries)));
  });

  test('train and test are split by source photo', () => {
    const stimuli = JSON.parse(readFileSync(datasetPaths(full.out).stimuliJson, 'utf8')) as StimuliJson;
    const testPhotos = new Set(stimuli.testPhotos);
    for (const photo of stimuli.trainPhotos) assert.ok(!testPhotos.has(photo), `${photo} is in both splits`);
    const byId = new Map(stimuli.images.map((image) => [image.id, image]));
    for (const image of stimuli.images) {
      assert.equal(testPhotos.has(image.photo), image.split === 'test', `image ${image.id} from ${image.photo}`);
    }
    const [train, test1, test2] = full.runs;
    for (const id of train.imageIds) assert.equal(byId.get(id)?.split, 'train', `training run shows image ${id}`);
    for (const id of [...test1.imageIds, ...test2.imageIds]) assert.equal(byId.get(id)?.split, 'test', `test run shows image ${id}`);
    const distinctTest = new Set([...test1.imageIds, ...test2.imageIds]);
    assert.ok(distinctTest.size >= 100, `${distinctTest.size} distinct test images`);
  });

  test('design files match the trials', () => {
    for (const run of full.runs) {
      const rows = readFileSync(run.design, 'utf8').trimEnd().split('\n').map(Number);
      assert.equal(rows.length, 225);
      const ids = rows.filter((v) => v > 0);
      assert.deepEqual(ids, run.imageIds);
      assert.equal(ids.length, run.run % 2 === 1 ? 63 : 62);
    }
  });

  test('imgBrick rows are the rendered crops', async () => {
    await h5wasm.ready;
    const stimuli = JSON.parse(readFileSync(datasetPaths(full.out).stimuliJson, 'utf8')) as StimuliJson;
    const h5 = new h5wasm.File(datasetPaths(full.out).stimuli, 'r');
    try {
      const brick = h5.get('imgBrick') as InstanceType<typeof h5wasm.Dataset>;
      assert.deepEqual(brick.shape, [stimuli.images.length, 425, 425, 3]);
      assert.equal(brick.dtype, '<B');
      for (const id of [1, full.runs[0].imageIds[0], stimuli.images.length]) {
        const row = brick.slice([[id - 1, id]]) as Uint8Array;
        const crop = stimuli.images[id - 1];
        const expected = await renderCrop({ ...crop, left: crop.cropBox.left, top: crop.cropBox.top, size: crop.cropBox.width });
        assert.ok(Buffer.from(row).equals(expected), `row ${id - 1} differs from crop ${id}`);
      }
    } finally {
      h5.close();
    }
  });

  test('test-only imgBrick holds the test crops', async () => {
    await h5wasm.ready;
    const h5 = new h5wasm.File(datasetPaths(alone.out).stimuli, 'r');
    try {
      const brick = h5.get('imgBrick') as InstanceType<typeof h5wasm.Dataset>;
      assert.deepEqual(brick.shape, [alone.testImages, 425, 425, 3]);
      for (const id of alone.runs[0].imageIds) assert.ok(id <= alone.testImages, `image ${id} has a row`);
    } finally {
      h5.close();
    }
  });

  test('applied motion is written and small', () => {
    for (const run of full.runs) {
      const lines = readFileSync(run.motion, 'utf8').trimEnd().split('\n');
      assert.equal(lines[0], 'trans_x_mm\ttrans_y_mm\ttrans_z_mm\trot_x_rad\trot_y_rad\trot_z_rad');
      const rows = lines.slice(1).map((line) => line.split('\t').map(Number));
      assert.equal(rows.length, 226);
      assert.deepEqual(rows[0], [0, 0, 0, 0, 0, 0], 'volume 0 is the reference');
      const maxTranslation = Math.max(...rows.flatMap((r) => r.slice(0, 3).map(Math.abs)));
      const maxRotationDeg = (Math.max(...rows.flatMap((r) => r.slice(3).map(Math.abs))) * 180) / Math.PI;
      assert.ok(maxTranslation > 0.05, `max translation ${maxTranslation} mm`);
      assert.ok(maxTranslation < 1, `max translation ${maxTranslation} mm`);
      assert.ok(maxRotationDeg > 0.05, `max rotation ${maxRotationDeg} degrees`);
      assert.ok(maxRotationDeg < 1, `max rotation ${maxRotationDeg} degrees`);
      const exported = appliedMotion(7, run.session, run.run);
      exported.forEach((m, t) => {
        const values = [...m.translationMm, ...m.rotationRad];
        values.forEach((v, c) => assert.ok(Math.abs(v - rows[t][c]) < 1e-6, `volume ${t} column ${c}`));
      });
    }
  });

  test('ground-truth betas have the documented shape', () => {
    const run = full.runs[1];
    const meta = JSON.parse(readFileSync(runPaths(full.out, run.session, run.run).betasJson, 'utf8'));
    assert.deepEqual(meta.shape, [run.trials, full.roiVoxels]);
    assert.equal(meta.dtype, 'float32');
    const bytes = readFileSync(run.betas);
    assert.equal(bytes.byteLength, run.trials * full.roiVoxels * 4);
    assert.deepEqual(meta.trials.map((t: { imageId: number }) => t.imageId), run.imageIds);
  });
});

describe('simulateDataset options', () => {
  test('invalid options are rejected with the flag named', async () => {
    const out = join(tmpdir(), 'mindeye-sim-never-written');
    await assert.rejects(simulateDataset({ out, grid: 'mni' as 'epi' }), /Invalid grid[\s\S]*--grid[\s\S]*"mni"/);
    await assert.rejects(simulateDataset({ out, sessions: -1 }), /--sessions[\s\S]*-1/);
    await assert.rejects(simulateDataset({ out, runsPerSession: 2.5 }), /--runs-per-session/);
    await assert.rejects(simulateDataset({ out, seed: Number.NaN }), /--seed/);
    await assert.rejects(simulateDataset({ out, motionScale: -1 }), /--motion-scale/);
    await assert.rejects(simulateDataset({ out, only: 'validation' as 'test' }), /--only/);
    await assert.rejects(simulateDataset({ out, sessions: 0, testRuns: 0 }), /no run to generate/);
    await assert.rejects(simulateDataset({ out, sessions: 1, testRuns: 0, only: 'test' }), /no run to generate/);
    assert.ok(!existsSync(out), 'nothing was written');
  });
});

describe('simulateDataset output folder', () => {
  test('a file in place of the folder is an error', async () => {
    const root = mkdtempSync(join(tmpdir(), 'mindeye-sim-file-'));
    try {
      const file = join(root, 'taken');
      writeFileSync(file, 'not a folder');
      await assert.rejects(
        simulateDataset({ out: file, sessions: 0, testRuns: 1 }),
        /output folder cannot be created[\s\S]*field: --out[\s\S]*(ENOTDIR|EEXIST)/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
