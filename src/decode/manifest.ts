/**
 * The model directory format: `manifest.json` plus ONNX files and raw little-endian arrays.
 * This file is the one place where the schema is documented; `fit`, `train-demo` and the
 * Python exporter (tools/) all write it and `loadManifest` validates it.
 *
 * ```
 * { "format": "mindeye-rt-model", "version": 1, "name": string, "subject": string,
 *   "provenance": { free-form: tool, date, data, seed, ... },
 *   "simulated": bool,                                 // trained on simulated data
 *   "voxels": { "count": V, "mask": "mask.nii.gz", "maskRule": "value == 1" | "value > 0" },
 *   "normalization": { "kind": "calibration", "mean": "norm_mean.f32", "std": "norm_std.f32" }
 *                  | { "kind": "running" } | { "kind": "none" },
 *   "hrf": { "kind": "canonical" } | { "kind": "library", "index": "hrf_index.u8", "library": "hrfs.f32",
 *            "count": H, "samples": S, "dtSec": number },
 *   "heads": { "<name>": Head, ... },
 *   "imageBank": { "ids": "bank_ids.json", "embeddings": "bank.f32", "dim": D,
 *                  "thumbnails": "thumbs/", "space": "demo-encoder" } }
 * ```
 * A Head is `{ "file": "x.onnx", "input": "voxels" | "<other head>", "inputName": tensor,
 * "outputName": tensor, ...head-specific fields }`. Optional on every head: `externalData`
 * (the ONNX external weight file beside `file`, written for graphs over 2 GB) and `dtype`
 * ("float16" when exported with --fp16; such heads run only on CUDA). Known heads and their
 * extra fields:
 * - backbone: `dim` (latent width), `tokens` (latent is [B, tokens, dim]; MindEye1 257 x 768).
 * - retrieval: `dim`, `tokens`, `space` (embedding space of the image bank it is compared with).
 * - classifier: `labels` (string[]); output is one score per label.
 * - prior: `timesteps`, `guidance`, `schedule`, `dim`, `tokens`; from the MindEye exporter also
 *   `steps` (sampling steps: `timesteps` runs DDPM, fewer run DDIM),
 *   `inputNames` ([image_embed, timestep, brain_embed, cond_keep]), `scheduleFile` (JSON of the
 *   noise-schedule buffers, see src/decode/prior.ts), `predict` ("x_start") and
 *   `nullConditioning` ("brain+image": the unconditioned pass swaps in both null embeddings).
 * - lowLevel: `latentShape` ([C, H, W]).
 * - vaeDecoder: `scale` (latents are divided by it before decoding), `imageSize` ([H, W]),
 *   `outputRange` ([-1, 1] or [0, 1]: the pixel range of the decoded image; default [-1, 1]).
 * - unet: `scheduler`, `steps`, `strength`, `guidance`, `trainTimesteps`, `betaSchedule`,
 *   `betaStart`, `betaEnd`, `condDim`, `timestepSpacing` ("leading" | "trailing"),
 *   `stepsOffset`, `setAlphaToOne`, `prediction` ("epsilon"), `nullCondition` ("zeros" or a
 *   float32 file), `conditionInput` ("prior" | "retrieval"), `latentShape`, `timestepType`
 *   ("float32" | "int64"), and the tensor names `inputName`, `timestepName`, `conditionName`.
 * - imageEncoder: `inputSize`, `dim`, `space`, `normalize` ("clip" (default), "unit" or
 *   "signed"); its `input` is "image" (NCHW RGB), read by `mindeye-rt bank` (src/cli/bank.ts).
 *   NOTE: loadManifest still rejects "image" as an input, so an imageEncoder head belongs in
 *   an encoder directory that `bank` reads on its own.
 * Optional on any head: `parameters` (count, for information); on retrieval and imageEncoder
 * `normalized` (outputs are unit-norm); on imageEncoder `inputRange`. `imageBank.count` gives the
 * bank size. `provenance.simulate` ({ seed, sessions, runsPerSession, testRuns, grid }) names the
 * simulated subject a demo model was trained on (src/demo/prepare.ts reads it).
 * Every head is optional, but at least one takes `voxels`. Raw arrays (`.f32`, `.u8`) are
 * little-endian without a header; their shapes follow from the fields above.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { isInsideDir } from '../io/paths.ts';

export interface HeadSpec {
  file: string;
  input: string;
  inputName?: string;
  outputName?: string;
  [key: string]: unknown;
}

export interface ModelManifest {
  format: 'mindeye-rt-model';
  version: 1;
  name: string;
  subject?: string;
  provenance?: Record<string, unknown>;
  simulated?: boolean;
  voxels: { count: number; mask?: string; maskRule?: 'value == 1' | 'value > 0' };
  normalization?:
    | { kind: 'calibration'; mean: string; std: string }
    | { kind: 'running' }
    | { kind: 'none' };
  hrf?:
    | { kind: 'canonical' }
    | { kind: 'library'; index: string; library: string; count: number; samples: number; dtSec: number };
  heads: Record<string, HeadSpec>;
  imageBank?: { ids: string; embeddings: string; dim: number; thumbnails?: string; space?: string };
}

export const KNOWN_HEADS = ['backbone', 'retrieval', 'classifier', 'prior', 'lowLevel', 'vaeDecoder', 'unet', 'imageEncoder'] as const;

export interface LoadedManifest {
  dir: string;
  manifestPath: string;
  manifest: ModelManifest;
}

function invalid(manifestPath: string, field: string, value: unknown, expected: string, fix: string): MindeyeError {
  return new MindeyeError('MODEL_MANIFEST_INVALID', 'Invalid model manifest.', { file: manifestPath, field, value, expected, fix });
}

/** Reads and validates `<dir>/manifest.json`, including that every file it names exists. */
export function loadManifest(dirArg: string): LoadedManifest {
  const dir = resolve(dirArg);
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'Model directory has no manifest.json.', {
      file: manifestPath, fix: 'pass a directory written by `mindeye-rt fit`, `train-demo` or `export`',
    });
  }
  let m: ModelManifest;
  try {
    m = JSON.parse(readFileSync(manifestPath, 'utf8')) as ModelManifest;
  } catch (err) {
    throw invalid(manifestPath, '(JSON)', (err as Error).message, 'valid JSON', 'rewrite the manifest');
  }
  if (m.format !== 'mindeye-rt-model') {
    throw invalid(manifestPath, 'format', m.format, '"mindeye-rt-model"', 'this is not a mindeye-rt model directory');
  }
  if (m.version !== 1) {
    throw invalid(manifestPath, 'version', m.version, '1', 'upgrade mindeye-rt or re-export the model');
  }
  if (!m.voxels || !Number.isInteger(m.voxels.count) || m.voxels.count <= 0) {
    throw invalid(manifestPath, 'voxels.count', m.voxels?.count, 'a positive integer', 'set it to the number of voxels in the mask');
  }
  if (!m.heads || typeof m.heads !== 'object' || Object.keys(m.heads).length === 0) {
    throw invalid(manifestPath, 'heads', m.heads, 'at least one head', 'add a head that takes "voxels"');
  }
  const mustExist = (field: string, rel: string | undefined) => {
    if (rel === undefined) return;
    if (typeof rel !== 'string' || rel === '') {
      throw invalid(manifestPath, field, rel, 'a file name relative to the model directory', 'name the file as a string');
    }
    const p = resolve(dir, rel);
    // A manifest may come from elsewhere, so its file names must not reach outside the directory.
    if (!isInsideDir(dir, p)) {
      throw invalid(manifestPath, field, rel, `a path inside the model directory ${dir}`,
        'copy the file into the model directory and name it relative to manifest.json');
    }
    if (!existsSync(p)) {
      throw new MindeyeError('MODEL_FILE_MISSING', 'A file named in the model manifest does not exist.', {
        file: manifestPath, field, value: rel, expected: `a file at ${p}`,
        fix: 'copy the missing file into the model directory or fix the path in manifest.json',
      });
    }
  };
  let takesVoxels = false;
  for (const [name, head] of Object.entries(m.heads)) {
    if (typeof head.file !== 'string') {
      throw invalid(manifestPath, `heads.${name}.file`, head.file, 'an ONNX file name', 'name the head\'s ONNX file');
    }
    mustExist(`heads.${name}.file`, head.file);
    if (head.input === 'voxels') takesVoxels = true;
    else if (name === 'imageEncoder' && head.input === 'image') {
      // RGB images, read by `mindeye-rt bank`.
    } else if (!(head.input in m.heads)) {
      throw invalid(manifestPath, `heads.${name}.input`, head.input, `"voxels" or one of ${Object.keys(m.heads).join(', ')}`,
        'name the head whose output this head takes');
    }
  }
  if (!takesVoxels) {
    throw invalid(manifestPath, 'heads.*.input', 'no head takes "voxels"', 'at least one head with input "voxels"', 'add a backbone or classifier on voxels');
  }
  mustExist('voxels.mask', m.voxels.mask);
  if (m.normalization?.kind === 'calibration') {
    mustExist('normalization.mean', m.normalization.mean);
    mustExist('normalization.std', m.normalization.std);
    for (const field of ['mean', 'std'] as const) {
      const size = statSync(join(dir, m.normalization[field])).size;
      if (size !== m.voxels.count * 4) {
        throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'A normalization array does not match the voxel count.', {
          file: join(dir, m.normalization[field]), field: `normalization.${field}`, value: `${size / 4} float32 values`,
          expected: `${m.voxels.count} (voxels.count)`, fix: 'write one float32 per voxel, in mask order',
        });
      }
    }
  }
  if (m.hrf?.kind === 'library') {
    mustExist('hrf.index', m.hrf.index);
    mustExist('hrf.library', m.hrf.library);
  }
  if (m.imageBank) {
    mustExist('imageBank.ids', m.imageBank.ids);
    mustExist('imageBank.embeddings', m.imageBank.embeddings);
  }
  return { dir, manifestPath, manifest: m };
}

/** Reads a little-endian float32 file into a Float32Array, checking its length when given. */
export function readF32(file: string, expectedLength?: number, field = '(array)'): Float32Array {
  const buf = readFileSync(file);
  if (buf.byteLength % 4 !== 0 || (expectedLength !== undefined && buf.byteLength !== expectedLength * 4)) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'A raw float32 array has the wrong length.', {
      file, field, value: `${buf.byteLength} bytes`, expected: expectedLength === undefined ? 'a multiple of 4 bytes' : `${expectedLength * 4} bytes (${expectedLength} float32)`,
      fix: 'rewrite the array with the shape the manifest gives',
    });
  }
  const out = new Float32Array(buf.byteLength / 4);
  Buffer.from(out.buffer).set(buf);
  return out;
}
