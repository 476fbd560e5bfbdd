/**
 * Side-by-side peers for `mindeye-rt bench` on the same inputs as ours, each reported with the
 * ratio peer time / our time (above 1: the peer is slower). A peer that is not installed
 * returns `{ skipped: reason }`; other failures (an ONNX error) throw.
 *
 * - numpy OLS (tools/bench/numpy_glm.py): one trial's least-squares-separate fit on the masked
 *   volumes of the replay, rows from the run start to the volume that closes the trial's
 *   window, solved by numpy.linalg.lstsq. Ours is the online GLM's update at that volume
 *   (one row added, then the estimates of every open window), which is the work the pipeline
 *   does to make the trial's final betas. The betas of both are compared.
 * - PyTorch (tools/bench/torch_backbone.py): the model's backbone ONNX graph run by torch with
 *   the same weights (onnx.numpy_helper), against onnxruntime-node, batch 1. The latents of
 *   both are compared.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadManifest } from '../decode/manifest.ts';
import { createSession, ort } from '../decode/ort.ts';
import type { TrialSpec } from '../events.ts';
import { OnlineTrialGlm, type GlmOptions } from '../preprocess/glm.ts';
import type { ProcessingOptions } from '../session/options.ts';
import type { MaskedRow } from './replay.ts';

const NUMPY_TOOL = new URL('../../tools/bench/numpy_glm.py', import.meta.url).pathname;
const TORCH_TOOL = new URL('../../tools/bench/torch_backbone.py', import.meta.url).pathname;
const PYTHON = '/usr/bin/python3';

export type PeerResult = Record<string, unknown> & { skipped?: string };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Runs a peer script; returns its JSON output, or the reason it could not run. */
function runPython(tool: string, args: string[], missing: string): Record<string, unknown> | string {
  const result = spawnSync(PYTHON, [tool, ...args], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (result.error !== undefined) return `could not run ${PYTHON}: ${result.error.message}`;
  if (result.status === 3) return `${missing} (${result.stderr.trim()})`;
  if (result.status !== 0) return `${tool.split('/').slice(-2).join('/')} failed with status ${result.status}: ${result.stderr.trim().slice(-300)}`;
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

/** Reads a raw little-endian float file; copies, because a small Buffer shares Node's pool. */
function readFloats<T extends Float32Array | Float64Array>(file: string, type: { new (b: ArrayBuffer): T; BYTES_PER_ELEMENT: number }): T {
  const bytes = readFileSync(file);
  return new type(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
}

/** Largest absolute difference, relative to the largest absolute value of `reference`. */
function relativeMaxDifference(ours: ArrayLike<number>, reference: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < reference.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - reference[i]));
    scale = Math.max(scale, Math.abs(reference[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

export interface GlmPeerInput {
  trials: TrialSpec[];
  trSec: number;
  masked: MaskedRow[];
  processing: ProcessingOptions;
  /** The run's expected duration (volumes x TR), which spans the drift basis as in the pipeline. */
  expectedDurationSec?: number;
  /** Times each side runs (median reported); default 7. */
  repeats?: number;
}

/** Compares our online GLM with numpy's lstsq on one trial of the replayed run. */
export function benchNumpyGlm(input: GlmPeerInput): PeerResult {
  const { trials, trSec, masked, processing } = input;
  const repeats = input.repeats ?? 7;
  if (processing.glm !== 'lss' || processing.motionRegressors || processing.censor) {
    return { skipped: 'the numpy comparison builds the default design only (--glm lss, no motion regressors, no censoring)' };
  }
  if (trials.length === 0 || masked.length === 0) return { skipped: 'the replay produced no trials or no masked volumes' };
  const voxels = masked[0].values.length;
  const options: GlmOptions = {
    method: 'lss', trSec, windowSec: processing.windowSec, drift: processing.drift,
    expectedDurationSec: input.expectedDurationSec, motionRegressors: false,
  };
  // The middle trial whose window closes inside the replayed volumes.
  const closing = trials
    .map((trial) => ({ trial, row: masked.findIndex((m) => m.acqTimeSec + trSec > trial.onsetSec + trial.durationSec + processing.windowSec + 1e-9) }))
    .filter((c) => c.row >= 0 && masked[c.row].acqTimeSec >= c.trial.onsetSec);
  if (closing.length === 0) return { skipped: 'no trial window closes inside the replayed volumes' };
  const { trial, row: closeRow } = closing[Math.floor(closing.length / 2)];
  const rows = masked.slice(0, closeRow + 1);

  // Ours: repeat the run up to the closing volume and time the update at that volume.
  const oursMs: number[] = [];
  let oursBetas: Float64Array | undefined;
  let glm: OnlineTrialGlm | undefined;
  for (let r = 0; r <= repeats; r++) {
    glm = new OnlineTrialGlm(trials, voxels, options);
    for (let i = 0; i < rows.length - 1; i++) glm.addVolume(rows[i].volIdx, rows[i].acqTimeSec, rows[i].values);
    const last = rows[rows.length - 1];
    const t0 = performance.now();
    const estimates = glm.addVolume(last.volIdx, last.acqTimeSec, last.values);
    const elapsed = performance.now() - t0;
    if (r > 0) oursMs.push(elapsed);
    oursBetas = estimates.find((e) => e.trialId === trial.trialId && e.final)?.betas;
  }
  if (oursBetas === undefined || glm === undefined) return { skipped: `our GLM gave no final estimate for trial ${trial.trialId} at volume ${rows[rows.length - 1].volIdx}` };

  // The same LSS design: [this trial, all other trials, drift].
  const driftColumns = glm.driftRow(0).length;
  const columns = 2 + driftColumns;
  const design = new Float64Array(rows.length * columns);
  const data = new Float32Array(rows.length * voxels);
  rows.forEach((m, i) => {
    const tSec = m.acqTimeSec;
    let others = 0;
    for (const t of trials) if (t !== trial) others += glm!.trialRegressor(t, tSec);
    design[i * columns] = glm!.trialRegressor(trial, tSec);
    design[i * columns + 1] = others;
    design.set(glm!.driftRow(tSec), i * columns + 2);
    data.set(m.values, i * voxels);
  });

  const work = mkdtempSync(join(tmpdir(), 'mindeye-bench-glm-'));
  try {
    const designFile = join(work, 'x.f64');
    const dataFile = join(work, 'y.f32');
    const outFile = join(work, 'betas.f64');
    writeFileSync(designFile, new Uint8Array(design.buffer));
    writeFileSync(dataFile, new Uint8Array(data.buffer));
    const peer = runPython(NUMPY_TOOL, [designFile, dataFile, String(rows.length), String(columns), String(voxels), outFile, '--repeats', String(repeats)],
      'numpy is not installed (apt-get install python3-numpy)');
    if (typeof peer === 'string') return { skipped: peer };
    const theirBetas = readFloats(outFile, Float64Array);
    const ours = median(oursMs);
    const theirs = median(peer.lstsqMs as number[]);
    return {
      trialId: trial.trialId,
      rows: rows.length,
      designColumns: columns,
      voxels,
      oursUpdateMs: round(ours),
      numpyLstsqMs: round(theirs),
      numpyVersion: peer.numpy,
      ratio: round(theirs / ours, 2),
      betasMaxRelativeDifference: Number(relativeMaxDifference(oursBetas, theirBetas).toExponential(2)),
      repeats,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Deterministic input in [-2, 2) so that both sides see the same voxels. */
function fixedInput(length: number): Float32Array {
  const out = new Float32Array(length);
  let state = 12345;
  for (let i = 0; i < length; i++) {
    state = (state * 16807) % 2147483647;
    out[i] = (state / 2147483647) * 4 - 2;
  }
  return out;
}

/** Compares onnxruntime-node with PyTorch on the model's backbone head, batch 1. */
export async function benchTorchBackbone(modelDir: string, opts: { repeats?: number; input?: Float32Array } = {}): Promise<PeerResult> {
  const repeats = opts.repeats ?? 30;
  const loaded = loadManifest(modelDir);
  const spec = loaded.manifest.heads.backbone;
  if (spec === undefined) return { skipped: `the model in ${modelDir} has no backbone head` };
  const file = join(loaded.dir, spec.file);
  const voxels = loaded.manifest.voxels.count;
  const input = opts.input ?? fixedInput(voxels);

  const session = await createSession(file, { device: 'cpu' });
  let latent: Float32Array;
  const oursMs: number[] = [];
  try {
    const inputName = spec.inputName ?? session.inputNames[0];
    const outputName = spec.outputName ?? session.outputNames[0];
    const feed = () => ({ [inputName]: new ort.Tensor('float32', input, [1, voxels]) });
    latent = (await session.run(feed()))[outputName].data as Float32Array;
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      latent = (await session.run(feed()))[outputName].data as Float32Array;
      oursMs.push(performance.now() - t0);
    }
  } finally {
    await session.release();
  }

  const work = mkdtempSync(join(tmpdir(), 'mindeye-bench-torch-'));
  try {
    const inputFile = join(work, 'input.f32');
    const outFile = join(work, 'latent.f32');
    writeFileSync(inputFile, new Uint8Array(input.buffer, input.byteOffset, input.byteLength));
    const peer = runPython(TORCH_TOOL, [file, inputFile, outFile, '--repeats', String(repeats)],
      'PyTorch or onnx is not installed (apt-get install python3-torch python3-onnx)');
    if (typeof peer === 'string') return { skipped: peer };
    const theirLatent = readFloats(outFile, Float32Array);
    const ours = median(oursMs);
    const theirs = median(peer.forwardMs as number[]);
    return {
      head: `backbone (${spec.file}, ${voxels} voxels -> ${theirLatent.length})`,
      batch: 1,
      oursMs: round(ours),
      torchMs: round(theirs),
      torchVersion: peer.torch,
      torchThreads: peer.threads,
      ratio: round(theirs / ours, 2),
      latentMaxRelativeDifference: Number(relativeMaxDifference(latent, theirLatent).toExponential(2)),
      repeats,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
