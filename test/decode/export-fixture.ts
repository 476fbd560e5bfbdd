/**
 * Test fixtures built at run time: random-weight MindEye checkpoints at reduced width written
 * by tools/make_test_checkpoint.py (Debian /usr/bin/python3 with python3-torch), exported with
 * `mindeye-rt export`, and the PyTorch reference outputs that the Python script stores.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportCheckpoint } from '../../src/cli/export.ts';

export const PYTHON = '/usr/bin/python3';
const GENERATOR = fileURLToPath(new URL('../../tools/make_test_checkpoint.py', import.meta.url));

export interface SamplingRun {
  name: string;
  kind: 'ddpm' | 'ddim';
  steps: number;
  guidance: number;
  updates: number;
}

export interface Reference {
  arch: string;
  voxels: number;
  hidden: number;
  tokens: number;
  clip: number;
  batch: number;
  timesteps: number;
  heads: Record<string, number[]>;
  sampling: SamplingRun[];
}

export interface Fixture {
  dir: string;
  checkpoint: string;
  lowlevel: string;
  modelDir: string;
  reference: Reference;
  array(name: string): Float32Array;
}

/** Writes a random checkpoint (and references) with tools/make_test_checkpoint.py. */
export function makeCheckpoint(extraArgs: string[] = [], prefix = 'mindeye-export-'): Omit<Fixture, 'modelDir'> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  execFileSync(PYTHON, [GENERATOR, '--out', dir, ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  const refDir = join(dir, 'reference');
  const reference = JSON.parse(readFileSync(join(refDir, 'reference.json'), 'utf8')) as Reference;
  return {
    dir,
    checkpoint: join(dir, 'checkpoint.pth'),
    lowlevel: join(dir, 'lowlevel.pth'),
    reference,
    array: (name: string) => {
      const buf = readFileSync(join(refDir, `${name}.f32`));
      return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    },
  };
}

/** Builds a checkpoint and exports it with the same code path as `mindeye-rt export`. */
export async function makeExportedModel(generatorArgs: string[], exportArgs: { fp16?: boolean; lowlevel?: boolean; ridgeIndex?: number } = {}): Promise<Fixture> {
  const base = makeCheckpoint(generatorArgs);
  const modelDir = join(base.dir, 'model');
  try {
    await exportCheckpoint({
      checkpoint: base.checkpoint, arch: base.reference.arch as 'mindeye1' | 'mindeye2', subject: 1, out: modelDir,
      width: base.reference.hidden, fp16: exportArgs.fp16, lowlevelCheckpoint: exportArgs.lowlevel ? base.lowlevel : undefined,
      ridgeIndex: exportArgs.ridgeIndex,
    });
  } catch (err) {
    // A fixture that failed here never reaches the suite's after() hook, so clean up now.
    rmSync(base.dir, { recursive: true, force: true });
    throw err;
  }
  return { ...base, modelDir };
}

/** Largest absolute elementwise difference; throws when the lengths differ. */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
