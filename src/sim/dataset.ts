/**
 * `simulateDataset`: writes a simulated subject in the NSD layout (see docs/simulation.md).
 *
 *   OUT/nsddata_timeseries/ppdata/subj01/func1pt8mm/timeseries/timeseries_sessionNN_runCC.nii.gz
 *   OUT/nsddata_timeseries/ppdata/subj01/func1pt8mm/design/design_sessionNN_runCC.tsv
 *   OUT/nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz
 *   OUT/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5                      (/imgBrick)
 *   OUT/simulation/betas_sessionNN_runCC.f32 + .json, motion_sessionNN_runCC.tsv,
 *                  stimuli.json, brainmask.nii.gz
 *   OUT/mindeye-rt.json
 *
 * Training sessions 1..sessions hold `runsPerSession` runs each and show training crops only.
 * The `testRuns` held-out runs follow in sessions sessions+1, ... (at most `runsPerSession` per
 * session) and show test crops only. Every run draws from its own named random streams, so a
 * run generated alone (`only`, `runs`) is identical to the same run in a whole dataset.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import type { MotionParams } from '../events.ts';
import { writeNifti } from '../io/nifti.ts';
import { stageLogger } from '../log.ts';
import { loadAnatomy, type Anatomy, type GridName } from './anatomy.ts';
import { designTsv, layoutRun, trialCountForRun, TR_SEC, VOLUMES_PER_RUN, type SimTrial } from './design.ts';
import { imageFeatures } from './features.ts';
import { ImgBrickWriter } from './imgbrick.ts';
import { motionTsv, runMotion } from './motion.ts';
import { streamFor } from './prng.ts';
import { buildStimulusSet, renderCrop, STIMULUS_SIZE, TRAIN_CROPS_PER_PHOTO, type CropSpec, type StimulusSet } from './stimuli.ts';
import { generateRun } from './timeseries.ts';
import { buildVoxelModel, calibrateVoxelModel, imageBetas, imageDescriptor, type VoxelModel } from './voxels.ts';

/** Names the simulator version in mindeye-rt.json. It changes whenever the same seed would give other data. */
export const GENERATOR = 'mindeye-rt simulate (voxel model version 2)';
export const SUBJECT_DIR = 'subj01';
/** Crops per training photo that join the test crops in the voxel model's reference set. */
const REFERENCE_TRAIN_CROPS = 2;
const RENDER_BATCH = 8;

export interface SimulateOptions {
  out: string;
  grid?: GridName;
  /** Training sessions (default 1). */
  sessions?: number;
  runsPerSession?: number;
  /** Held-out test runs after the training sessions (default 2). */
  testRuns?: number;
  seed?: number;
  /** Generate only the training or only the test runs. */
  only?: 'train' | 'test';
  /** Generate only the first `runs` runs of the selection. */
  runs?: number;
  /** false: no noise and no drift (for checking the GLM). Default true. */
  noise?: boolean;
  /** Multiplies the default head motion; 0 turns it off. Default 1. */
  motionScale?: number;
}

export interface SimRunSummary {
  session: number;
  run: number;
  split: 'train' | 'test';
  timeseries: string;
  design: string;
  betas: string;
  motion: string;
  trials: number;
  imageIds: number[];
}

export interface SimSummary {
  out: string;
  grid: GridName;
  seed: number;
  roiVoxels: number;
  images: number;
  testImages: number;
  runs: SimRunSummary[];
  elapsedMs: number;
}

export interface PlannedRun {
  session: number;
  run: number;
  split: 'train' | 'test';
  /** Index among the runs of the same split, 0-based. */
  splitIndex: number;
}

const pad2 = (n: number) => String(n).padStart(2, '0');

export function runPaths(out: string, session: number, run: number) {
  const tag = `session${pad2(session)}_run${pad2(run)}`;
  const func = join(out, 'nsddata_timeseries', 'ppdata', SUBJECT_DIR, 'func1pt8mm');
  return {
    timeseries: join(func, 'timeseries', `timeseries_${tag}.nii.gz`),
    design: join(func, 'design', `design_${tag}.tsv`),
    betas: join(out, 'simulation', `betas_${tag}.f32`),
    betasJson: join(out, 'simulation', `betas_${tag}.json`),
    motion: join(out, 'simulation', `motion_${tag}.tsv`),
  };
}

export function datasetPaths(out: string) {
  return {
    roi: join(out, 'nsddata', 'ppdata', SUBJECT_DIR, 'func1pt8mm', 'roi', 'nsdgeneral.nii.gz'),
    stimuli: join(out, 'nsddata_stimuli', 'stimuli', 'nsd', 'nsd_stimuli.hdf5'),
    stimuliJson: join(out, 'simulation', 'stimuli.json'),
    brainMask: join(out, 'simulation', 'brainmask.nii.gz'),
    marker: join(out, 'mindeye-rt.json'),
  };
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new MindeyeError('CLI_USAGE', `Invalid ${name}.`, {
      field: name, value, expected: `an integer from ${min} to ${max}`, fix: `pass a value in range, for example ${name} ${min}`,
    });
  }
}

/** Lists the runs of a dataset in order: training sessions first, then the test runs. */
export function planRuns(sessions: number, runsPerSession: number, testRuns: number): PlannedRun[] {
  const plan: PlannedRun[] = [];
  let trainIndex = 0;
  for (let s = 1; s <= sessions; s++) {
    for (let r = 1; r <= runsPerSession; r++) plan.push({ session: s, run: r, split: 'train', splitIndex: trainIndex++ });
  }
  for (let k = 0; k < testRuns; k++) {
    plan.push({ session: sessions + 1 + Math.floor(k / runsPerSession), run: 1 + (k % runsPerSession), split: 'test', splitIndex: k });
  }
  return plan;
}

/**
 * Returns the image ids shown in a run. Each split has one presentation sequence: the split's crops in a
 * fresh random order per pass (as many passes as needed). Run k of a split takes the next
 * trials of that sequence, so its images do not depend on which other runs are generated.
 */
export function runImageIds(seed: number, plan: PlannedRun[], target: PlannedRun, stimuli: StimulusSet): number[] {
  const ids = stimuli.crops.filter((c) => c.split === target.split).map((c) => c.id);
  let offset = 0;
  for (const p of plan) {
    if (p.split === target.split && p.splitIndex < target.splitIndex) offset += trialCountForRun(p.run);
  }
  const count = trialCountForRun(target.run);
  const out: number[] = [];
  let pass = Math.floor(offset / ids.length);
  let order = streamFor(seed, 'presentation', target.split, pass).shuffle([...ids]);
  let position = offset % ids.length;
  while (out.length < count) {
    if (position >= order.length) {
      pass++;
      order = streamFor(seed, 'presentation', target.split, pass).shuffle([...ids]);
      position = 0;
    }
    out.push(order[position++]);
  }
  return out;
}

/** Returns the head motion applied to a run (the same numbers as its motion TSV). */
export function appliedMotion(seed: number, session: number, run: number, motionScale = 1): MotionParams[] {
  return runMotion({ seed, session, run, volumes: VOLUMES_PER_RUN, scale: motionScale });
}

interface ImageStore {
  features: Map<number, Float32Array>;
  descriptors: Map<number, Float32Array>;
}

type ResolvedOptions = Required<Omit<SimulateOptions, 'only' | 'runs'>> & Pick<SimulateOptions, 'only' | 'runs'>;

/** Applies the defaults and rejects invalid values, naming the command-line flag. */
function resolveOptions(options: SimulateOptions): ResolvedOptions {
  const resolved: ResolvedOptions = {
    out: options.out,
    grid: options.grid ?? 'epi',
    sessions: options.sessions ?? 1,
    runsPerSession: options.runsPerSession ?? 12,
    testRuns: options.testRuns ?? 2,
    seed: options.seed ?? 1,
    noise: options.noise ?? true,
    motionScale: options.motionScale ?? 1,
    only: options.only,
    runs: options.runs,
  };
  if (resolved.grid !== 'nsd' && resolved.grid !== 'epi') {
    throw new MindeyeError('CLI_USAGE', 'Invalid grid.', { field: '--grid', value: resolved.grid, expected: 'nsd or epi', fix: 'pass --grid epi or --grid nsd' });
  }
  checkInteger('--sessions', resolved.sessions, 0, 40);
  checkInteger('--runs-per-session', resolved.runsPerSession, 1, 14);
  checkInteger('--test-runs', resolved.testRuns, 0, 28);
  checkInteger('--seed', resolved.seed, 0, 2 ** 32 - 1);
  if (resolved.runs !== undefined) checkInteger('--runs', resolved.runs, 1, 10_000);
  const scale = resolved.motionScale;
  if (!(Number.isFinite(scale) && scale >= 0 && scale <= 5)) {
    throw new MindeyeError('CLI_USAGE', 'Invalid motion scale.', {
      field: '--motion-scale', value: scale, expected: 'a number from 0 to 5 (1 = default motion, 0 = none)', fix: 'pass --motion-scale 1',
    });
  }
  if (resolved.only !== undefined && resolved.only !== 'train' && resolved.only !== 'test') {
    throw new MindeyeError('CLI_USAGE', 'Invalid --only value.', { field: '--only', value: resolved.only, expected: 'train or test', fix: 'pass --only test or leave it out' });
  }
  return resolved;
}

function createOutputFolders(out: string): void {
  const folders = [
    'nsddata_timeseries/ppdata/subj01/func1pt8mm/timeseries', 'nsddata_timeseries/ppdata/subj01/func1pt8mm/design',
    'nsddata/ppdata/subj01/func1pt8mm/roi', 'nsddata_stimuli/stimuli/nsd', 'simulation',
  ];
  for (const folder of folders) {
    try {
      mkdirSync(join(out, folder), { recursive: true });
    } catch (err) {
      throw new MindeyeError('CLI_USAGE', 'The output folder cannot be created.', {
        file: join(out, folder), field: '--out', value: (err as Error).message,
        fix: 'pass a folder path that is not a file and is writable',
      });
    }
  }
}

/**
 * Renders the listed crops, streams those with id <= brickCount to the imgBrick, and returns
 * the features and descriptors of every rendered crop.
 */
async function renderStimuli(stimuli: StimulusSet, ids: number[], brickCount: number, brickFile: string): Promise<ImageStore> {
  const store: ImageStore = { features: new Map(), descriptors: new Map() };
  const brick = new ImgBrickWriter(brickFile, brickCount, STIMULUS_SIZE);
  try {
    // Several crops at a time, so that sharp's worker threads overlap with each other.
    for (let start = 0; start < ids.length; start += RENDER_BATCH) {
      await Promise.all(ids.slice(start, start + RENDER_BATCH).map(async (id) => {
        const rgb = await renderCrop(stimuli.crops[id - 1]);
        if (id <= brickCount) await brick.write(id - 1, rgb);
        const features = await imageFeatures(rgb, STIMULUS_SIZE);
        store.features.set(id, features);
        store.descriptors.set(id, imageDescriptor(features));
      }));
    }
  } catch (err) {
    brick.abort();
    throw err;
  }
  await brick.close();
  return store;
}

interface RunContext {
  options: ResolvedOptions;
  plan: PlannedRun[];
  anatomy: Anatomy;
  model: VoxelModel;
  stimuli: StimulusSet;
  store: ImageStore;
}

/** Generates one run and writes its time series, design, ground-truth betas and motion. */
function writeRun(context: RunContext, planned: PlannedRun): SimRunSummary {
  const { options, anatomy, model, store } = context;
  const { seed } = options;
  const imageIds = runImageIds(seed, context.plan, planned, context.stimuli);
  const trials = layoutRun(seed, planned.session, planned.run, imageIds);
  const betasByImage = new Map<number, Float32Array>();
  for (const id of imageIds) {
    if (!betasByImage.has(id)) betasByImage.set(id, imageBetas(model, store.features.get(id) as Float32Array, store.descriptors.get(id) as Float32Array));
  }
  const motion = runMotion({ seed, session: planned.session, run: planned.run, volumes: VOLUMES_PER_RUN, scale: options.motionScale });
  const data = generateRun({ anatomy, model, trials, betasByImage, motion, seed, session: planned.session, run: planned.run, noise: options.noise });

  const p = runPaths(options.out, planned.session, planned.run);
  writeNifti(p.timeseries, data, {
    shape: anatomy.shape, voxelSizeMm: anatomy.voxelSizeMm, affine: anatomy.affine,
    volumes: VOLUMES_PER_RUN, trSec: TR_SEC, datatype: 'int16', gzipLevel: 1,
    description: `mindeye-rt simulated subject, seed ${seed}, not motion-corrected`,
  });
  writeFileSync(p.design, designTsv(trials));
  writeFileSync(p.motion, motionTsv(motion));
  writeTrialBetas(p.betas, p.betasJson, trials, betasByImage, model.count, planned);
  return {
    session: planned.session, run: planned.run, split: planned.split,
    timeseries: p.timeseries, design: p.design, betas: p.betas, motion: p.motion, trials: trials.length, imageIds,
  };
}

function writeMarker(file: string, options: ResolvedOptions, details: Record<string, unknown>): void {
  writeFileSync(file, JSON.stringify({
    simulated: true,
    motionCorrected: false,
    grid: options.grid,
    seed: options.seed,
    generator: GENERATOR,
    subject: SUBJECT_DIR,
    trSec: TR_SEC,
    volumesPerRun: VOLUMES_PER_RUN,
    sessions: options.sessions,
    runsPerSession: options.runsPerSession,
    testRuns: options.testRuns,
    noise: options.noise,
    motionScale: options.motionScale,
    ...details,
  }, null, 2) + '\n');
}

/** Writes a simulated subject in the NSD layout (see the file header) and lists what it wrote. */
export async function simulateDataset(input: SimulateOptions): Promise<SimSummary> {
  const started = performance.now();
  const log = stageLogger('simulate');
  const options = resolveOptions(input);
  const plan = planRuns(options.sessions, options.runsPerSession, options.testRuns);
  let selected = plan.filter((p) => options.only === undefined || p.split === options.only);
  if (options.runs !== undefined) selected = selected.slice(0, options.runs);
  if (selected.length === 0) {
    throw new MindeyeError('CLI_USAGE', 'The options select no run to generate.', {
      field: '--only/--sessions/--test-runs', value: `sessions ${options.sessions}, test runs ${options.testRuns}, only ${options.only ?? 'all'}`,
      fix: 'ask for at least one training session (--sessions 1) or one test run (--test-runs 1)',
    });
  }

  const anatomy = loadAnatomy(options.grid);
  const stimuli = await buildStimulusSet(options.seed);
  const model = buildVoxelModel(options.seed, anatomy);
  const paths = datasetPaths(options.out);
  createOutputFolders(options.out);
  // Written first, so that even an interrupted dataset is marked as simulated.
  writeMarker(paths.marker, options, { complete: false });
  log.info({ grid: options.grid, roiVoxels: model.count, runs: selected.length }, 'simulating');

  // The test crops are always rendered, because they are the first imgBrick rows and part of the
  // reference set. Every crop is rendered when any training run is generated.
  const brickCount = selected.some((p) => p.split === 'train') ? stimuli.crops.length : stimuli.testCount;
  const reference = referenceIds(stimuli);
  const renderIds = new Set<number>(reference);
  for (let id = 1; id <= brickCount; id++) renderIds.add(id);
  const store = await renderStimuli(stimuli, [...renderIds].sort((a, b) => a - b), brickCount, paths.stimuli);
  calibrateVoxelModel(model, reference.map((id) => store.features.get(id) as Float32Array), reference.map((id) => store.descriptors.get(id) as Float32Array));

  const niftiBase = { shape: anatomy.shape, voxelSizeMm: anatomy.voxelSizeMm, affine: anatomy.affine };
  writeNifti(paths.roi, anatomy.roi, { ...niftiBase, datatype: 'int16', description: 'simulated nsdgeneral: -1 non-cortex, 0 cortex, 1 visual' });
  writeNifti(paths.brainMask, anatomy.brain, { ...niftiBase, datatype: 'uint8', description: 'simulated subject brain mask' });
  writeStimuliJson(paths.stimuliJson, stimuli, brickCount);

  const context: RunContext = { options, plan, anatomy, model, stimuli, store };
  const runs: SimRunSummary[] = [];
  for (const planned of selected) {
    runs.push(writeRun(context, planned));
    log.info({ session: planned.session, run: planned.run, split: planned.split }, 'run written');
  }

  writeMarker(paths.marker, options, {
    complete: true,
    roiVoxels: model.count,
    images: brickCount,
    testImages: stimuli.testCount,
    runs: runs.map((r) => ({ session: r.session, run: r.run, split: r.split, trials: r.trials })),
  });
  return {
    out: options.out, grid: options.grid, seed: options.seed, roiVoxels: model.count, images: brickCount,
    testImages: stimuli.testCount, runs, elapsedMs: performance.now() - started,
  };
}

/** Lists the reference set that standardizes the voxel drives: all test crops and two crops per training photo. */
function referenceIds(stimuli: StimulusSet): number[] {
  const ids = stimuli.crops.filter((c) => c.split === 'test').map((c) => c.id);
  const trainCrops = stimuli.crops.filter((c) => c.split === 'train');
  for (let start = 0; start < trainCrops.length; start += TRAIN_CROPS_PER_PHOTO) {
    for (let c = 0; c < REFERENCE_TRAIN_CROPS; c++) ids.push(trainCrops[start + c].id);
  }
  return ids;
}

function writeStimuliJson(file: string, stimuli: StimulusSet, brickCount: number): void {
  const images = stimuli.crops.map((c: CropSpec) => ({
    id: c.id, photo: c.photo, split: c.split, cropBox: { left: c.left, top: c.top, width: c.size, height: c.size }, flip: c.flip,
    inImgBrick: c.id <= brickCount,
  }));
  writeFileSync(file, JSON.stringify({
    photoDir: 'data/photos', imageSize: STIMULUS_SIZE, testPhotos: stimuli.testPhotos, trainPhotos: stimuli.trainPhotos,
    testImages: stimuli.testCount, imgBrickRows: brickCount, images,
  }, null, 1) + '\n');
}

function writeTrialBetas(file: string, jsonFile: string, trials: SimTrial[], betasByImage: Map<number, Float32Array>, voxels: number, planned: PlannedRun): void {
  const matrix = new Float32Array(trials.length * voxels);
  trials.forEach((trial, t) => matrix.set(betasByImage.get(trial.imageId) as Float32Array, t * voxels));
  writeFileSync(file, Buffer.from(matrix.buffer, matrix.byteOffset, matrix.byteLength));
  writeFileSync(jsonFile, JSON.stringify({
    file: file.split('/').pop(),
    dtype: 'float32',
    byteOrder: 'little',
    shape: [trials.length, voxels],
    units: 'percent signal change at the peak of the trial response (regressor peak = 1)',
    voxelOrder: 'nsdgeneral.nii.gz == 1, NIfTI order (x fastest)',
    session: planned.session,
    run: planned.run,
    split: planned.split,
    trials: trials.map((t) => ({ trialIndex: t.trialIndex, slot: t.slot, onsetVolume: t.onsetVolume, onsetSec: t.onsetSec, durationSec: t.durationSec, imageId: t.imageId })),
  }, null, 1) + '\n');
}

export type { Anatomy, VoxelModel };
