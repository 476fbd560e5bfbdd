/**
 * Render settings read from a model manifest's `lowLevel`, `vaeDecoder` and `unet` heads, with
 * their defaults and checks. Fields (see also src/decode/manifest.ts):
 *
 * - lowLevel.latentShape: [C, H, W] of the low-level latents (required).
 * - vaeDecoder.scale: latents are divided by it before decoding (default 1; Stable Diffusion
 *   uses 0.18215). vaeDecoder.outputRange: [-1, 1] (default) or [0, 1]. vaeDecoder.imageSize:
 *   [H, W], checked against the decoder's output when given.
 * - unet is optional. Without it a trial gets its low-level frame and a final frame that
 *   repeats it. Fields: scheduler "ddim", steps (20), strength (0.85), guidance (3.5, MindEye's
 *   reconstruction guidance), trainTimesteps (1000), betaSchedule, betaStart and betaEnd
 *   (required, because they must be the ones the UNet was trained with), condDim (required),
 *   timestepSpacing "leading" (default) or "trailing", stepsOffset (0), setAlphaToOne (true),
 *   prediction "epsilon" (the only one supported), nullCondition "zeros" (default) or a float32
 *   file of condDim values, conditionInput "prior" or "retrieval" (the Decoded embedding that
 *   conditions the UNet; when absent, `input` is used if it names one of them, else the prior
 *   embedding when the event has one, else the retrieval embedding). Tensor names: inputName
 *   (noisy latents), timestepName, conditionName, outputName; see src/render/networks.ts for
 *   how inputs are found when they are absent.
 */
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { readF32, type HeadSpec, type LoadedManifest } from '../decode/manifest.ts';
import type { OutputRange } from './image.ts';
import { BETA_SCHEDULES, TIMESTEP_SPACINGS, type BetaSchedule, type DdimConfig, type TimestepSpacing } from './scheduler.ts';

export type ConditionSource = 'prior' | 'retrieval' | 'auto';

export interface VaeSettings {
  file: string;
  inputName?: string;
  outputName?: string;
  scale: number;
  outputRange: OutputRange;
  imageSize?: [number, number];
}

export interface UnetSettings {
  file: string;
  inputName?: string;
  timestepName?: string;
  conditionName?: string;
  outputName?: string;
  ddim: DdimConfig;
  guidance: number;
  condDim: number;
  nullCondition: Float32Array;
  conditionSource: ConditionSource;
}

export interface RenderSettings {
  latentShape: [number, number, number];
  vae: VaeSettings;
  unet?: UnetSettings;
}

class FieldReader {
  constructor(private readonly manifestPath: string, private readonly head: string, private readonly spec: HeadSpec) {}

  private fail(field: string, value: unknown, expected: string, fix: string): MindeyeError {
    return new MindeyeError('MODEL_MANIFEST_INVALID', 'Invalid render setting in the model manifest.', {
      file: this.manifestPath, field: `heads.${this.head}.${field}`, value: value === undefined ? '(missing)' : value, expected, fix,
    });
  }

  number(field: string, fallback: number | undefined, check: (x: number) => boolean, expected: string): number {
    const value = this.spec[field];
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) {
      throw this.fail(field, value, expected, `set heads.${this.head}.${field} to ${expected}`);
    }
    return value;
  }

  choice<T extends string>(field: string, fallback: T | undefined, allowed: readonly T[]): T {
    const value = this.spec[field];
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== 'string' || !allowed.includes(value as T)) {
      throw this.fail(field, value, `one of ${allowed.map((a) => `"${a}"`).join(', ')}`, `set heads.${this.head}.${field} to a supported value`);
    }
    return value as T;
  }

  boolean(field: string, fallback: boolean): boolean {
    const value = this.spec[field];
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') throw this.fail(field, value, 'true or false', `set heads.${this.head}.${field} to a JSON boolean`);
    return value;
  }

  positiveInts(field: string, length: number, required: boolean): number[] | undefined {
    const value = this.spec[field];
    if (value === undefined && !required) return undefined;
    if (!Array.isArray(value) || value.length !== length || !value.every((x) => Number.isInteger(x) && x > 0)) {
      throw this.fail(field, value, `an array of ${length} positive integers`, `set heads.${this.head}.${field}`);
    }
    return value as number[];
  }

  range(field: string): OutputRange {
    const value = this.spec[field];
    if (value === undefined) return [-1, 1];
    if (Array.isArray(value) && value.length === 2 && value[1] === 1 && (value[0] === -1 || value[0] === 0)) {
      return value[0] === -1 ? [-1, 1] : [0, 1];
    }
    throw this.fail(field, value, '[-1, 1] or [0, 1]', `set heads.${this.head}.${field} to the range of the decoder's output pixels`);
  }
}

function optionalName(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function requireHead(loaded: LoadedManifest, name: string): HeadSpec {
  const head = loaded.manifest.heads[name];
  if (head === undefined) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `The model has no "${name}" head, which rendering needs.`, {
      file: loaded.manifestPath, field: `heads.${name}`, value: '(missing)', expected: 'a head with an ONNX file',
      fix: 'use a model with lowLevel and vaeDecoder heads, or run without frames',
    });
  }
  return head;
}

/** Reads and checks the render settings of a loaded model directory. */
export function readRenderSettings(loaded: LoadedManifest): RenderSettings {
  const path = loaded.manifestPath;
  const lowLevel = new FieldReader(path, 'lowLevel', requireHead(loaded, 'lowLevel'));
  const latentShape = lowLevel.positiveInts('latentShape', 3, true) as [number, number, number];

  const vaeHead = requireHead(loaded, 'vaeDecoder');
  const vaeFields = new FieldReader(path, 'vaeDecoder', vaeHead);
  const vae: VaeSettings = {
    file: join(loaded.dir, vaeHead.file),
    inputName: vaeHead.inputName,
    outputName: vaeHead.outputName,
    scale: vaeFields.number('scale', 1, (x) => x > 0, 'a positive number'),
    outputRange: vaeFields.range('outputRange'),
    imageSize: vaeFields.positiveInts('imageSize', 2, false) as [number, number] | undefined,
  };

  const unetHead = loaded.manifest.heads.unet;
  if (unetHead === undefined) return { latentShape, vae };
  const u = new FieldReader(path, 'unet', unetHead);
  u.choice('scheduler', 'ddim', ['ddim']);
  u.choice('prediction', 'epsilon', ['epsilon']);
  const betaSchedule = u.choice<BetaSchedule>('betaSchedule', undefined, BETA_SCHEDULES);
  const needsRange = betaSchedule !== 'squaredcos_cap_v2';
  const steps = u.number('steps', 20, (x) => Number.isInteger(x) && x >= 1, 'a positive integer');
  const trainTimesteps = u.number('trainTimesteps', 1000, (x) => Number.isInteger(x) && x >= steps, `an integer >= steps (${steps})`);
  const ddim: DdimConfig = {
    trainTimesteps,
    betaSchedule,
    betaStart: needsRange ? u.number('betaStart', undefined, (x) => x > 0 && x < 1, 'a number in (0, 1)') : 0,
    betaEnd: needsRange ? u.number('betaEnd', undefined, (x) => x > 0 && x < 1, 'a number in (0, 1)') : 0,
    steps,
    strength: u.number('strength', 0.85, (x) => x >= 0 && x <= 1, 'a number in [0, 1]'),
    timestepSpacing: u.choice<TimestepSpacing>('timestepSpacing', 'leading', TIMESTEP_SPACINGS),
    stepsOffset: u.number('stepsOffset', 0, (x) => Number.isInteger(x) && x >= 0 && x < Math.floor(trainTimesteps / steps), 'an integer in [0, trainTimesteps / steps)'),
    setAlphaToOne: u.boolean('setAlphaToOne', true),
  };
  const condDim = u.number('condDim', undefined, (x) => Number.isInteger(x) && x > 0, 'a positive integer (the condition width)');
  let nullCondition: Float32Array = new Float32Array(condDim);
  const nullFile = unetHead.nullCondition ?? 'zeros';
  if (typeof nullFile !== 'string') {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'Invalid render setting in the model manifest.', {
      file: path, field: 'heads.unet.nullCondition', value: String(nullFile), expected: '"zeros" or a float32 file name',
      fix: 'name a file in the model directory that holds condDim float32 values',
    });
  }
  if (nullFile !== 'zeros') nullCondition = readF32(join(loaded.dir, nullFile), condDim, 'heads.unet.nullCondition');
  const input = unetHead.input;
  const conditionSource = u.choice<ConditionSource>('conditionInput', input === 'prior' || input === 'retrieval' ? input : 'auto', ['prior', 'retrieval']);
  return {
    latentShape,
    vae,
    unet: {
      file: join(loaded.dir, unetHead.file),
      inputName: unetHead.inputName,
      timestepName: optionalName(unetHead.timestepName),
      conditionName: optionalName(unetHead.conditionName),
      outputName: unetHead.outputName,
      ddim,
      guidance: u.number('guidance', 3.5, (x) => x >= 0, 'a number >= 0'),
      condDim,
      nullCondition,
      conditionSource,
    },
  };
}
