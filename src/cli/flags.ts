/**
 * Flags shared by replay, watch, serve and fit: processing (so calibration betas match live
 * betas), model, dashboard and report flags, with their help text and parsing.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MindeyeError } from '../errors.ts';
import { parseSpeed, type Speed } from '../ingest/source.ts';
import type { Device } from '../decode/ort.ts';
import { DEFAULT_PROCESSING, type ProcessingOptions } from '../session/options.ts';
import { EVAL_FLAGS, EVAL_HELP, evalFromFlags, type EvalOptions } from '../eval/options.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

export const PROCESSING_FLAGS: Options = {
  mask: { type: 'string' },
  'mask-rule': { type: 'string' },
  motion: { type: 'string', default: 'auto' },
  'motion-reference': { type: 'string' },
  glm: { type: 'string', default: 'lss' },
  'window-sec': { type: 'string' },
  drift: { type: 'string', default: 'poly2' },
  'motion-regressors': { type: 'boolean', default: false },
  censor: { type: 'boolean', default: false },
  'fd-threshold': { type: 'string' },
  normalize: { type: 'string', default: 'auto' },
  'label-column': { type: 'string' },
};

export const PROCESSING_HELP = `Processing (shared by replay, watch, serve and fit):
  --mask ROI.nii.gz        ROI mask on the data's grid (default: the model's mask)
  --mask-rule RULE         "value > 0" (default) or "value == 1" (NSD nsdgeneral; default for nsdgeneral files)
  --motion auto|on|off     rigid motion correction (auto: on for scanner input and simulated runs,
                           off for NSD prepared time series and BIDS runs)
  --motion-reference N|F   reference volume index (default 0) or a reference NIfTI on the same grid
  --glm lss|lsa            least-squares-separate (default) or least-squares-all trial GLM
  --window-sec S           seconds after a trial's offset its estimate keeps improving (default 5)
  --drift polyN|dctS       drift regressors: Legendre polynomials up to order N (default poly2)
                           or a DCT high-pass basis with cutoff period S seconds (e.g. dct128)
  --motion-regressors      add the 6 motion parameters to the GLM
  --censor                 leave flagged volumes (FD over threshold, spikes, NaN) out of the GLM
  --fd-threshold MM        framewise displacement flag threshold in mm (default 0.5)
  --normalize K            calibration | running | none | auto (default: calibration when the model
                           has calibration statistics, else running)
  --label-column NAME      events.tsv column with the stimulus label (default trial_type)`;

export const SESSION_FLAGS: Options = {
  model: { type: 'string' },
  device: { type: 'string', default: 'cpu' },
  'no-dashboard': { type: 'boolean', default: false },
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  token: { type: 'string' },
  report: { type: 'string' },
  'record-to': { type: 'string' },
  'top-k': { type: 'string', default: '5' },
  ...EVAL_FLAGS,
};

export const SESSION_HELP = `Model, output and dashboard:
  --model DIR              model directory (manifest.json + ONNX heads)
  --device cpu|cuda        onnxruntime execution provider (default cpu)
  --top-k K                retrieval candidates kept per trial (default 5)
  --report FILE.json       write the run report (counts, metrics, latency percentiles)
  --record-to DIR          record the session (volumes, events, final betas, frames, report) to DIR;
                           watch and serve resume an existing record (docs/record.md)
  --no-dashboard           run headless (exits when the run ends)
  --host H                 dashboard address (default 127.0.0.1)
  --port P                 dashboard port (default 8080; 0 picks a free port)
  --token T                session token for control and input (default: random)

${EVAL_HELP}`;

/** Pacing of a replay. Live input (watch, serve) comes at the scanner's pace, so only replay takes it. */
export const SPEED_FLAGS: Options = {
  speed: { type: 'string', default: 'realtime' },
};

export const SPEED_HELP = `Pacing:
  --speed S                realtime (default: one volume per TR), a factor F (F times faster),
                           max (as fast as possible), or recorded (--record only: the recorded
                           gaps between receive times)`;

export function parseFlags(argv: string[], options: Options, command: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', (err as Error).message, { fix: `see mindeye-rt ${command} --help` });
  }
}

function num(value: unknown, flag: string, check: (x: number) => boolean, expected: string): number {
  const x = Number(value);
  if (!Number.isFinite(x) || !check(x)) {
    throw new MindeyeError('CLI_USAGE', `Invalid value for ${flag}.`, { field: flag, value, expected, fix: `see --help` });
  }
  return x;
}

function oneOf<T extends string>(value: unknown, flag: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new MindeyeError('CLI_USAGE', `Invalid value for ${flag}.`, { field: flag, value, expected: allowed.join(', '), fix: 'see --help' });
  }
  return value as T;
}

export function processingFromFlags(v: Record<string, unknown>): ProcessingOptions {
  const p: ProcessingOptions = { ...DEFAULT_PROCESSING };
  p.motion = oneOf(v.motion ?? 'auto', '--motion', ['auto', 'on', 'off'] as const);
  if (v['motion-reference'] !== undefined) {
    const ref = String(v['motion-reference']);
    p.motionReference = /^\d+$/.test(ref) ? Number(ref) : ref;
  }
  p.glm = oneOf(v.glm ?? 'lss', '--glm', ['lss', 'lsa'] as const);
  if (v['window-sec'] !== undefined) p.windowSec = num(v['window-sec'], '--window-sec', (x) => x >= 0, 'seconds >= 0');
  const drift = String(v.drift ?? 'poly2');
  const poly = /^poly(\d)$/.exec(drift);
  const dct = /^dct(\d+(?:\.\d+)?)$/.exec(drift);
  if (poly) p.drift = { kind: 'poly', order: Number(poly[1]) };
  else if (dct) p.drift = { kind: 'dct', cutoffSec: Number(dct[1]) };
  else throw new MindeyeError('CLI_USAGE', 'Invalid value for --drift.', { field: '--drift', value: drift, expected: 'polyN (N = 0..9) or dctS (cutoff in seconds)', fix: 'e.g. --drift poly2 or --drift dct128' });
  p.motionRegressors = v['motion-regressors'] === true;
  p.censor = v.censor === true;
  if (v['fd-threshold'] !== undefined) p.fdThresholdMm = num(v['fd-threshold'], '--fd-threshold', (x) => x > 0, 'mm > 0');
  p.normalize = oneOf(v.normalize ?? 'auto', '--normalize', ['auto', 'calibration', 'running', 'none'] as const);
  if (v.mask !== undefined) p.maskFile = String(v.mask);
  if (v['mask-rule'] !== undefined) p.maskRule = oneOf(v['mask-rule'], '--mask-rule', ['value > 0', 'value == 1'] as const);
  return p;
}

/** Processing flags and the ProcessingOptions field each one sets. */
export const PROCESSING_FLAG_KEYS: readonly (readonly [string, keyof ProcessingOptions])[] = [
  ['mask', 'maskFile'], ['mask-rule', 'maskRule'], ['motion', 'motion'], ['motion-reference', 'motionReference'], ['glm', 'glm'],
  ['window-sec', 'windowSec'], ['drift', 'drift'], ['motion-regressors', 'motionRegressors'], ['censor', 'censor'],
  ['fd-threshold', 'fdThresholdMm'], ['normalize', 'normalize'],
];

/** Keeps the processing options whose flag is on the command line (the rest come from the record). */
export function explicitProcessing(argv: string[], parsed: ProcessingOptions): Partial<ProcessingOptions> {
  const isOnCommandLine = (flag: string) => argv.some((a) => a === `--${flag}` || a.startsWith(`--${flag}=`));
  const out: Partial<ProcessingOptions> = {};
  for (const [flag, key] of PROCESSING_FLAG_KEYS) {
    if (isOnCommandLine(flag)) (out as Record<string, unknown>)[key] = parsed[key];
  }
  return out;
}

export interface SessionFlags {
  modelDir?: string;
  device: Device;
  speed: Speed;
  dashboard: boolean;
  host: string;
  port: number;
  token?: string;
  reportFile?: string;
  recordTo?: string;
  topK: number;
  evaluation: EvalOptions;
}

export function sessionFromFlags(v: Record<string, unknown>): SessionFlags {
  let speed: Speed;
  try {
    speed = parseSpeed(String(v.speed ?? 'realtime'));
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --speed.', { field: '--speed', value: v.speed, expected: 'realtime, max, a positive factor, or recorded (with --record)', fix: 'e.g. --speed 10, or --speed max' });
  }
  return {
    modelDir: v.model as string | undefined,
    device: oneOf(v.device ?? 'cpu', '--device', ['cpu', 'cuda'] as const),
    speed,
    dashboard: v['no-dashboard'] !== true,
    host: String(v.host ?? '127.0.0.1'),
    port: num(v.port ?? 8080, '--port', (x) => Number.isInteger(x) && x >= 0 && x < 65536, 'an integer port 0-65535'),
    token: v.token as string | undefined,
    reportFile: v.report as string | undefined,
    recordTo: v['record-to'] as string | undefined,
    topK: num(v['top-k'] ?? 5, '--top-k', (x) => Number.isInteger(x) && x > 0, 'a positive integer'),
    evaluation: evalFromFlags(v),
  };
}
