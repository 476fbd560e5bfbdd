/**
 * `mindeye-rt export`: wraps the Python exporter (tools/mindeye_export.py, run with Debian's
 * /usr/bin/python3) that rebuilds MindEye networks from a PyTorch checkpoint and writes a model
 * directory. The exporter reports its errors as one `MINDEYE_EXPORT_ERROR <json>` line on
 * stderr, which becomes a MindeyeError here.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MindeyeError, type ErrorCode } from '../errors.ts';
import { loadManifest } from '../decode/manifest.ts';
import { logger } from '../log.ts';

export const help = `mindeye-rt export: export MindEye PyTorch checkpoints to a model directory (ONNX + manifest.json)

Usage: mindeye-rt export --checkpoint FILE --arch mindeye1|mindeye2 --subject N --out DIR
                         [--lowlevel-checkpoint FILE] [--fp16] [--width W]

  --checkpoint FILE           MindEye1: the prior checkpoint with voxel2clip inside (or a bare
                              voxel2clip checkpoint); MindEye2: the model checkpoint
  --arch mindeye1|mindeye2    network family of the checkpoint
  --subject N                 NSD subject (1-8); fixes the expected voxel count
  --out DIR                   model directory to write (created when missing)
  --lowlevel-checkpoint FILE  MindEye1 low-level autoencoder checkpoint (adds the lowLevel head)
  --fp16                      store weights in float16 (the model then runs only with --device cuda)
  --width W                   hidden width of a reduced test model (default: the published 4096);
                              with it any voxel count is accepted
  --ridge-index I             MindEye2: which ridge layer (ridge.linears.I) to export; by default
                              the only one, or the one whose width is the subject's voxel count
  --python PATH               Python interpreter (default: /usr/bin/python3, which has python3-torch)

Needs python3-torch and python3-onnx (apt-get install python3-torch python3-onnx).
See docs/models.md for the checkpoints and what each head does.`;

const EXPORTER = fileURLToPath(new URL('../../tools/mindeye_export.py', import.meta.url));
const DEFAULT_PYTHON = '/usr/bin/python3';
const MISSING_TORCH_FIX = 'apt-get install python3-torch python3-onnx';

export interface ExportOptions {
  checkpoint: string;
  arch: 'mindeye1' | 'mindeye2';
  subject: number;
  out: string;
  lowlevelCheckpoint?: string;
  fp16?: boolean;
  width?: number;
  ridgeIndex?: number;
  python?: string;
}

interface ExporterError {
  code?: string;
  summary?: string;
  file?: string;
  field?: string;
  value?: unknown;
  expected?: string;
  fix?: string;
}

const KNOWN_CODES: Record<string, ErrorCode> = {
  MODEL_FILE_MISSING: 'MODEL_FILE_MISSING',
  MODEL_VOXELS_MISMATCH: 'MODEL_VOXELS_MISMATCH',
  CLI_USAGE: 'CLI_USAGE',
  // NOTE: checkpoint and dependency problems reuse the nearest codes of src/errors.ts until it
  // has CHECKPOINT_INVALID and PYTHON_DEPENDENCY_MISSING.
  CHECKPOINT_KEYS: 'MODEL_SHAPE_MISMATCH',
  CHECKPOINT_SHAPE: 'MODEL_SHAPE_MISMATCH',
  CHECKPOINT_INVALID: 'MODEL_MANIFEST_INVALID',
  PYTHON_DEPENDENCY_MISSING: 'DEVICE_UNAVAILABLE',
};

/** Runs the exporter and returns the loaded manifest path of the written model directory. */
export async function exportCheckpoint(opts: ExportOptions): Promise<string> {
  const python = opts.python ?? DEFAULT_PYTHON;
  if (!existsSync(python)) {
    throw new MindeyeError('DEVICE_UNAVAILABLE', 'The Python interpreter for the exporter was not found.', {
      field: '--python', value: python, expected: 'Debian python3 with python3-torch and python3-onnx', fix: MISSING_TORCH_FIX,
    });
  }
  const args = [EXPORTER, '--checkpoint', resolve(opts.checkpoint), '--arch', opts.arch, '--subject', String(opts.subject),
    '--out', resolve(opts.out)];
  if (opts.lowlevelCheckpoint !== undefined) args.push('--lowlevel-checkpoint', resolve(opts.lowlevelCheckpoint));
  if (opts.fp16) args.push('--fp16');
  if (opts.width !== undefined) args.push('--width', String(opts.width));
  if (opts.ridgeIndex !== undefined) args.push('--ridge-index', String(opts.ridgeIndex));
  const started = performance.now();
  logger.info({ python, checkpoint: opts.checkpoint, arch: opts.arch, out: opts.out }, 'export started');
  const { status, stderr } = await runPython(python, args);
  if (status !== 0) throw exporterError(status, stderr, opts);
  for (const line of stderr.split('\n')) {
    if (line.startsWith('mindeye_export: ')) logger.warn({ checkpoint: opts.checkpoint }, line.slice('mindeye_export: '.length));
  }
  const loaded = loadManifest(opts.out);
  logger.info({ out: loaded.dir, heads: Object.keys(loaded.manifest.heads), seconds: (performance.now() - started) / 1000 }, 'export finished');
  return loaded.manifestPath;
}

function runPython(python: string, args: string[]): Promise<{ status: number; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    // No __pycache__ folders inside tools/ in the user's checkout.
    const child = spawn(python, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise({ status: code ?? (signal ? 128 : 1), stderr }));
  });
}

function exporterError(status: number, stderr: string, opts: ExportOptions): MindeyeError {
  const line = stderr.split('\n').find((l) => l.startsWith('MINDEYE_EXPORT_ERROR '));
  if (line !== undefined) {
    const e = JSON.parse(line.slice('MINDEYE_EXPORT_ERROR '.length)) as ExporterError;
    const code = KNOWN_CODES[e.code ?? ''] ?? 'MODEL_MANIFEST_INVALID';
    return new MindeyeError(code, `Export failed (${e.code}): ${e.summary}`, {
      file: e.file, field: e.field, value: e.value, expected: e.expected, fix: e.fix,
    });
  }
  if (/ModuleNotFoundError|ImportError/.test(stderr)) {
    return new MindeyeError('DEVICE_UNAVAILABLE', 'The exporter could not import a Python module.', {
      value: lastLines(stderr), expected: 'python3-torch and python3-onnx', fix: MISSING_TORCH_FIX,
    });
  }
  return new MindeyeError('MODEL_MANIFEST_INVALID', `The exporter failed with exit status ${status}.`, {
    file: opts.checkpoint, value: lastLines(stderr),
    fix: 'read the Python error above; check free disk space and memory for full-size checkpoints',
  });
}

function lastLines(text: string, count = 6): string {
  return text.trim().split('\n').slice(-count).join(' | ');
}

function usage(summary: string, field: string, value: unknown, expected: string): MindeyeError {
  return new MindeyeError('CLI_USAGE', summary, { field, value, expected, fix: 'see mindeye-rt export --help' });
}

/** Parses flags strictly; an unknown flag or a stray argument is a usage error, not a stack trace. */
function parseCommandLine<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', (err as Error).message, { fix: 'see mindeye-rt export --help' });
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandLine(argv, {
    checkpoint: { type: 'string' },
    arch: { type: 'string' },
    subject: { type: 'string' },
    out: { type: 'string' },
    'lowlevel-checkpoint': { type: 'string' },
    fp16: { type: 'boolean', default: false },
    width: { type: 'string' },
    'ridge-index': { type: 'string' },
    python: { type: 'string' },
  } as const);
  for (const flag of ['checkpoint', 'arch', 'subject', 'out'] as const) {
    if (values[flag] === undefined) throw usage(`Missing --${flag}.`, `--${flag}`, undefined, 'a value');
  }
  if (values.arch !== 'mindeye1' && values.arch !== 'mindeye2') throw usage('Invalid --arch.', '--arch', values.arch, 'mindeye1 or mindeye2');
  const subject = Number(values.subject);
  if (!Number.isInteger(subject) || subject < 1 || subject > 8) throw usage('Invalid --subject.', '--subject', values.subject, 'an integer from 1 to 8');
  let width: number | undefined;
  if (values.width !== undefined) {
    width = Number(values.width);
    if (!Number.isInteger(width) || width <= 0) throw usage('Invalid --width.', '--width', values.width, 'a positive integer');
  }
  let ridgeIndex: number | undefined;
  if (values['ridge-index'] !== undefined) {
    ridgeIndex = Number(values['ridge-index']);
    if (!Number.isInteger(ridgeIndex) || ridgeIndex < 0) throw usage('Invalid --ridge-index.', '--ridge-index', values['ridge-index'], 'an integer >= 0');
  }
  const manifestPath = await exportCheckpoint({
    checkpoint: values.checkpoint as string, arch: values.arch, subject, out: values.out as string,
    lowlevelCheckpoint: values['lowlevel-checkpoint'], fp16: values.fp16, width, ridgeIndex, python: values.python,
  });
  process.stdout.write(`${manifestPath}\n`);
  return 0;
}
