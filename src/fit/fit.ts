/**
 * Calibration fits: run each calibration run through the same live pipeline (preprocess and
 * trial GLM, at max speed), collect the final betas, and fit a ridge classifier on them.
 * The ridge penalty is chosen by leave-one-run-out cross-validation unless given. The z-score
 * statistics are refitted inside every fold, so the held-out run never leaks into them.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import type { PipelineEvent } from '../events.ts';
import { bidsSource } from '../ingest/bids.ts';
import { logger } from '../log.ts';
import { runSession } from '../session/run.ts';
import type { ProcessingOptions } from '../session/options.ts';
import type { ModelManifest } from '../decode/manifest.ts';
import { writeLinearModel } from './onnx-linear.ts';
import { fitRidge, predictRidge } from './ridge.ts';

export interface CalibrationRun {
  bold: string;
  events: string;
}

export interface TrialBetas {
  run: number;
  label: string;
  betas: Float64Array;
}

export const ALPHA_GRID = [0.01, 0.1, 1, 10, 100, 1e3, 1e4, 1e5];

/** Final betas of every trial of every run, computed by the live pipeline at max speed. */
export async function collectFinalBetas(runs: CalibrationRun[], processing: ProcessingOptions, labelColumn?: string): Promise<TrialBetas[]> {
  const out: TrialBetas[] = [];
  for (let r = 0; r < runs.length; r++) {
    const source = bidsSource({ bold: runs[r].bold, events: runs[r].events, labelColumn });
    await runSession({
      source, processing: { ...processing, normalize: 'none' }, device: 'cpu', speed: { kind: 'max' },
      onEvent: (e: PipelineEvent) => {
        if (e.type === 'trial-estimate' && e.final) out.push({ run: r, label: e.stimulusId, betas: e.betas });
      },
    });
  }
  return out;
}

function zscoreStats(rows: Float64Array[], d: number) {
  const mean = new Float64Array(d);
  const std = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j] += r[j] / rows.length;
  for (const r of rows) for (let j = 0; j < d; j++) std[j] += (r[j] - mean[j]) ** 2 / Math.max(1, rows.length - 1);
  for (let j = 0; j < d; j++) std[j] = Math.sqrt(std[j]);
  return { mean, std };
}

function design(rows: Float64Array[], stats: { mean: Float64Array; std: Float64Array }, d: number): Float64Array {
  const X = new Float64Array(rows.length * d);
  rows.forEach((r, i) => {
    for (let j = 0; j < d; j++) X[i * d + j] = stats.std[j] > 0 ? (r[j] - stats.mean[j]) / stats.std[j] : 0;
  });
  return X;
}

function targets(labels: string[], classes: string[]): Float64Array {
  const Y = new Float64Array(labels.length * classes.length).fill(-1);
  labels.forEach((l, i) => (Y[i * classes.length + classes.indexOf(l)] = 1));
  return Y;
}

export function fitClassifier(trials: TrialBetas[], alpha: number, classes: string[]) {
  const d = trials[0].betas.length;
  const stats = zscoreStats(trials.map((t) => t.betas), d);
  const X = design(trials.map((t) => t.betas), stats, d);
  const model = fitRidge(X, targets(trials.map((t) => t.label), classes), trials.length, d, classes.length, alpha);
  return { model, stats };
}

/** Leave-one-run-out accuracy of the ridge classifier for one penalty. */
export function crossValidate(trials: TrialBetas[], alpha: number, classes: string[]): number {
  const runs = [...new Set(trials.map((t) => t.run))];
  let correct = 0;
  let total = 0;
  for (const held of runs) {
    const train = trials.filter((t) => t.run !== held);
    const test = trials.filter((t) => t.run === held);
    const { model, stats } = fitClassifier(train, alpha, classes);
    const d = train[0].betas.length;
    for (const t of test) {
      const x = design([t.betas], stats, d);
      const scores = predictRidge(model, x);
      let best = 0;
      for (let c = 1; c < classes.length; c++) if (scores[c] > scores[best]) best = c;
      if (classes[best] === t.label) correct++;
      total++;
    }
  }
  return correct / total;
}

export interface FitResult {
  alpha: number;
  cvAccuracy?: number;
  classes: string[];
  trials: number;
  outDir: string;
}

export async function fitLabelModel(opts: {
  runs: CalibrationRun[];
  processing: ProcessingOptions;
  maskFile: string;
  outDir: string;
  alpha: number | 'auto';
  labelColumn?: string;
}): Promise<FitResult> {
  const log = logger.child({ stage: 'fit' });
  const trials = await collectFinalBetas(opts.runs, opts.processing, opts.labelColumn);
  if (trials.length < 2) {
    throw new MindeyeError('FIT_INVALID', 'Too few trials to fit a classifier.', {
      field: '--bids/--events', value: `${trials.length} trials`, expected: 'at least 2 trials with labels', fix: 'add calibration runs',
    });
  }
  const classes = [...new Set(trials.map((t) => t.label))].sort();
  if (classes.length < 2) {
    throw new MindeyeError('FIT_INVALID', 'A classifier needs at least two labels.', {
      field: opts.labelColumn ?? 'trial_type', value: classes.join(', '), fix: 'check the label column of the events files',
    });
  }
  let alpha: number;
  let cvAccuracy: number | undefined;
  const runCount = new Set(trials.map((t) => t.run)).size;
  if (opts.alpha === 'auto') {
    if (runCount < 2) {
      throw new MindeyeError('FIT_INVALID', 'Choosing the ridge penalty by cross-validation needs at least two runs.', {
        field: '--alpha', value: 'auto', fix: 'give more calibration runs or a fixed --alpha',
      });
    }
    let best = { alpha: ALPHA_GRID[0], acc: -1 };
    for (const a of ALPHA_GRID) {
      const acc = crossValidate(trials, a, classes);
      log.info({ alpha: a, accuracy: acc }, 'cross-validation');
      if (acc > best.acc) best = { alpha: a, acc };
    }
    alpha = best.alpha;
    cvAccuracy = best.acc;
  } else {
    alpha = opts.alpha;
  }
  const { model, stats } = fitClassifier(trials, alpha, classes);
  const d = trials[0].betas.length;
  mkdirSync(opts.outDir, { recursive: true });
  writeLinearModel(join(opts.outDir, 'classifier.onnx'), {
    inputName: 'voxels', outputName: 'scores', inDim: d, outDim: classes.length,
    weights: Float32Array.from(model.weights), bias: Float32Array.from(model.bias),
    docString: `ridge classifier (alpha ${alpha}) over ${classes.length} labels`,
  });
  writeFileSync(join(opts.outDir, 'norm_mean.f32'), Buffer.from(Float32Array.from(stats.mean).buffer));
  writeFileSync(join(opts.outDir, 'norm_std.f32'), Buffer.from(Float32Array.from(stats.std).buffer));
  const maskName = basename(opts.maskFile).endsWith('.gz') ? 'mask.nii.gz' : 'mask.nii';
  copyFileSync(opts.maskFile, join(opts.outDir, maskName));
  const manifest: ModelManifest = {
    format: 'mindeye-rt-model',
    version: 1,
    name: 'ridge-classifier',
    provenance: {
      tool: 'mindeye-rt fit --target labels', date: new Date().toISOString(), runs: opts.runs, alpha, cvAccuracy,
      trials: trials.length, glm: opts.processing.glm, windowSec: opts.processing.windowSec,
    },
    voxels: { count: d, mask: maskName, maskRule: opts.processing.maskRule ?? 'value > 0' },
    normalization: { kind: 'calibration', mean: 'norm_mean.f32', std: 'norm_std.f32' },
    hrf: { kind: 'canonical' },
    heads: { classifier: { file: 'classifier.onnx', input: 'voxels', inputName: 'voxels', outputName: 'scores', labels: classes } },
  };
  writeFileSync(join(opts.outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  return { alpha, cvAccuracy, classes, trials: trials.length, outDir: opts.outDir };
}
