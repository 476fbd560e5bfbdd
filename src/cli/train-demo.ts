/**
 * `mindeye-rt train-demo`: retrain the small demo decoder shipped in models/demo.
 *
 * Steps:
 * 1. Simulate training and test sessions (`mindeye-rt simulate`), unless --data names a dataset.
 * 2. Record each run's final trial betas through the live pipeline (`replay --record-to`), so
 *    that the decoder trains on the betas that it decodes live.
 * 3. Train the networks with tools/demo/train_demo.py. It uses PyTorch from Debian's
 *    python3-torch because TensorFlow.js's pure-JavaScript CPU backend is about a thousand
 *    times slower on these convolutions (docs/demo-model.md gives the measurement).
 * 4. Check the written model directory with the manifest loader and onnxruntime-node.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadManifest } from '../decode/manifest.ts';
import { createSession } from '../decode/ort.ts';
import { MindeyeError } from '../errors.ts';
import { stageLogger } from '../log.ts';

const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(PROJECT_ROOT, 'bin', 'mindeye-rt.js');
const TRAINER = join(PROJECT_ROOT, 'tools', 'demo', 'train_demo.py');
const DEFAULT_PYTHON = '/usr/bin/python3';
const PYTHON_MODULES = ['torch', 'onnx', 'nibabel', 'h5py', 'skimage', 'scipy', 'PIL'];

/** Dataset sizes passed to `simulate`; --quick is for the end-to-end test. */
const SIMULATION = {
  full: { sessions: 4, runsPerSession: 12, testRuns: 2 },
  quick: { sessions: 1, runsPerSession: 2, testRuns: 1 },
};
/** The default seed is simulate's default, so the shipped model decodes the demo's subject. */
const DEFAULT_SEED = 1;

export const help = `Usage: mindeye-rt train-demo [--out DIR] [--seed S] [--data DIR] [--quick] [options]

Trains the demo decoder (backbone, retrieval and low-level heads), its image autoencoder,
image encoder and conditional latent denoiser on a simulated subject, evaluates it on the
held-out test runs and writes a model directory (ONNX files, manifest.json, image bank,
thumbnails). The full run takes about 20 minutes on 2 CPU cores.

Options:
  --out DIR            model directory to write (default: models/demo in the project);
                       an existing directory is replaced
  --seed S             seed of the simulation and of the training (integer >= 0, default 1,
                       the simulator's default: the simulated subject depends on the seed,
                       and the demo replays the subject of seed 1)
  --data DIR           use this dataset written by \`mindeye-rt simulate --grid epi\` instead
                       of simulating one (4 training sessions of 12 runs and 2 test runs;
                       with --quick 1 session of 2 runs and 1 test run)
  --quick              small simulation and short training (about 2 minutes; a poor model,
                       for tests; needs --out)
  --betas record|lss   record: final betas recorded from \`replay --record-to\` for every run
                       (default, the betas the live pipeline produces); lss: least-squares-
                       separate betas computed in numpy from the time series (faster)
  --photos DIR         source photographs for the image models (default: data/photos)
  --work DIR           keep the simulation, recorded betas and checkpoints here (default: a
                       temporary folder, removed at the end)
  --threads N          PyTorch CPU threads (default 2)
  --python PATH        Python with torch, onnx, nibabel, h5py, scikit-image, scipy and Pillow
                       (default /usr/bin/python3)
`;

interface TrainDemoOptions {
  out: string;
  seed: number;
  data?: string;
  quick: boolean;
  betas: 'record' | 'lss';
  photos: string;
  work?: string;
  threads: number;
  python: string;
}

function usageError(field: string, value: unknown, expected: string): MindeyeError {
  return new MindeyeError('CLI_USAGE', `Invalid value for ${field}.`, { field, value, expected, fix: 'see mindeye-rt train-demo --help' });
}

function parseInteger(value: string, field: string, min: number): number {
  const x = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(x) || x < min) throw usageError(field, value, `an integer >= ${min}`);
  return x;
}

export function parseOptions(argv: string[]): TrainDemoOptions {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' }, seed: { type: 'string', default: String(DEFAULT_SEED) }, data: { type: 'string' },
        quick: { type: 'boolean', default: false }, betas: { type: 'string', default: 'record' },
        photos: { type: 'string' }, work: { type: 'string' }, threads: { type: 'string', default: '2' },
        python: { type: 'string', default: DEFAULT_PYTHON },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', (err as Error).message, { fix: 'see mindeye-rt train-demo --help' });
  }

  if (positionals.length > 0) throw usageError('(positional)', positionals.join(' '), 'no positional arguments');
  const betas = String(values.betas);
  if (betas !== 'record' && betas !== 'lss') throw usageError('--betas', betas, 'record or lss');
  const options: TrainDemoOptions = {
    out: resolve(String(values.out ?? join(PROJECT_ROOT, 'models', 'demo'))),
    seed: parseInteger(String(values.seed), '--seed', 0),
    data: values.data === undefined ? undefined : resolve(String(values.data)),
    quick: values.quick === true,
    betas,
    photos: resolve(String(values.photos ?? join(PROJECT_ROOT, 'data', 'photos'))),
    work: values.work === undefined ? undefined : resolve(String(values.work)),
    threads: parseInteger(String(values.threads), '--threads', 1),
    python: String(values.python),
  };

  if (options.quick && values.out === undefined) {
    throw new MindeyeError('CLI_USAGE', '--quick needs --out: its poor model would replace the shipped models/demo.', {
      field: '--out', expected: 'a model directory for the quick model', fix: 'add --out DIR, e.g. --out /tmp/demo-quick',
    });
  }
  if (existsSync(options.out) && !statSync(options.out).isDirectory()) {
    throw usageError('--out', options.out, 'a directory (it is replaced) or a path that does not exist');
  }
  if (!existsSync(options.photos) || !statSync(options.photos).isDirectory()) {
    throw new MindeyeError('CLI_USAGE', 'The photo folder does not exist.', {
      file: options.photos, field: '--photos', expected: 'a folder of *.jpg / *.png photographs', fix: 'restore data/photos from the repository or pass --photos DIR',
    });
  }
  if (options.data !== undefined) checkDataset(options.data);
  return options;
}

function roiPath(dataDir: string): string {
  return join(dataDir, 'nsddata', 'ppdata', 'subj01', 'func1pt8mm', 'roi', 'nsdgeneral.nii.gz');
}

function designDir(dataDir: string): string {
  return join(dataDir, 'nsddata_timeseries', 'ppdata', 'subj01', 'func1pt8mm', 'design');
}

function checkDataset(dataDir: string): void {
  for (const path of [roiPath(dataDir), designDir(dataDir)]) {
    if (!existsSync(path)) {
      throw new MindeyeError('CLI_USAGE', 'The dataset is not in the NSD layout written by `mindeye-rt simulate`.', {
        file: path, field: '--data', value: dataDir, expected: 'a folder written by `mindeye-rt simulate --grid epi`',
        fix: 'run mindeye-rt simulate --out DIR --grid epi, or leave out --data to simulate one',
      });
    }
  }
}

/** (session, run) pairs of a dataset, from its design file names. */
export function listRuns(dataDir: string): Array<{ session: number; run: number }> {
  const runs: Array<{ session: number; run: number }> = [];
  for (const name of readdirSync(designDir(dataDir))) {
    const match = /^design_session(\d+)_run(\d+)\.tsv$/.exec(name);
    if (match) runs.push({ session: Number(match[1]), run: Number(match[2]) });
  }
  return runs.sort((a, b) => a.session - b.session || a.run - b.run);
}

function checkPython(python: string): void {
  const probe = spawnSync(python, ['-c', `import ${PYTHON_MODULES.join(', ')}`], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new MindeyeError('FIT_INVALID', 'The Python used for training is missing or lacks a module.', {
      field: '--python', value: python,
      expected: `a Python 3 with ${PYTHON_MODULES.join(', ')}`,
      fix: `run scripts/setup.sh (Debian: apt-get install python3-torch python3-onnx python3-nibabel python3-h5py python3-skimage python3-scipy python3-pil); ${(probe.error?.message ?? probe.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}`,
    });
  }
}

/** Runs a child process with inherited stderr; rejects with a MindeyeError on failure. */
function runChild(command: string, args: string[], description: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', (err) => reject(new MindeyeError('FIT_INVALID', `${description} could not start: ${err.message}`, { value: command, fix: 'check the installation (scripts/setup.sh)' })));
    child.on('exit', (code, signal) => {
      if (code === 0) resolvePromise();
      else {
        reject(new MindeyeError('FIT_INVALID', `${description} failed.`, {
          value: `${[command, ...args].join(' ')} exited with ${signal ?? `status ${code}`}`,
          fix: 'read the error printed above',
        }));
      }
    });
  });
}

/** Loads every ONNX file of the model with onnxruntime-node and checks the tensor names. */
async function checkModelDir(outDir: string): Promise<void> {
  const { manifest } = loadManifest(outDir);
  for (const [name, head] of Object.entries(manifest.heads)) {
    const session = await createSession(join(outDir, head.file), { device: 'cpu', threads: 1 });
    if (head.inputName !== undefined && !session.inputNames.includes(head.inputName)) {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'An exported head lacks the input named in the manifest.', {
        file: join(outDir, head.file), field: `heads.${name}.inputName`, value: session.inputNames, expected: head.inputName,
        fix: 'rerun train-demo; the exporter and the manifest disagree',
      });
    }
    if (head.outputName !== undefined && !session.outputNames.includes(head.outputName)) {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'An exported head lacks the output named in the manifest.', {
        file: join(outDir, head.file), field: `heads.${name}.outputName`, value: session.outputNames, expected: head.outputName,
        fix: 'rerun train-demo; the exporter and the manifest disagree',
      });
    }
    await session.release();
  }
}

export async function trainDemo(options: TrainDemoOptions): Promise<void> {
  const log = stageLogger('train-demo', { seed: options.seed, quick: options.quick });
  checkPython(options.python);
  const work = options.work ?? mkdtempSync(join(tmpdir(), 'mindeye-rt-train-demo-'));
  mkdirSync(work, { recursive: true });
  try {
    let dataDir = options.data;
    if (dataDir === undefined) {
      dataDir = join(work, 'sim');
      const size = SIMULATION[options.quick ? 'quick' : 'full'];
      log.info({ out: dataDir, ...size }, 'simulating the training and test sessions');
      await runChild(process.execPath, [BIN, 'simulate', '--out', dataDir, '--grid', 'epi', '--seed', String(options.seed),
        '--sessions', String(size.sessions), '--runs-per-session', String(size.runsPerSession), '--test-runs', String(size.testRuns)],
      'mindeye-rt simulate');
      checkDataset(dataDir);
    }

    const betasDir = join(work, 'betas');
    if (options.betas === 'record') {
      const runs = listRuns(dataDir);
      log.info({ runs: runs.length }, 'recording final trial betas through the live pipeline');
      for (const { session, run } of runs) {
        const recordDir = join(betasDir, `session${String(session).padStart(2, '0')}_run${String(run).padStart(2, '0')}`);
        // A partial recording from an interrupted run would be resumed by --record-to; start over.
        rmSync(recordDir, { recursive: true, force: true });
        await runChild(process.execPath, [BIN, 'replay', '--nsd-root', dataDir, '--subject', '1', '--session', String(session),
          '--run', String(run), '--mask', roiPath(dataDir), '--mask-rule', 'value == 1', '--speed', 'max', '--no-dashboard',
          '--motion', 'on', '--record-to', recordDir], `mindeye-rt replay of session ${session} run ${run}`);
      }
    }

    log.info({ out: options.out, python: options.python }, 'training (tools/demo/train_demo.py)');
    const trainArgs = [TRAINER, '--data', dataDir, '--photos', options.photos, '--out', options.out, '--work', join(work, 'train'),
      '--betas', options.betas, '--seed', String(options.seed), '--threads', String(options.threads),
      '--command', ['mindeye-rt train-demo', ...process.argv.slice(3)].join(' ')];
    if (options.betas === 'record') trainArgs.push('--betas-dir', betasDir);
    if (options.quick) trainArgs.push('--quick');
    await runChild(options.python, trainArgs, 'tools/demo/train_demo.py');

    await checkModelDir(options.out);
    log.info({ out: options.out }, 'model directory written and checked with onnxruntime-node');
  } finally {
    if (options.work === undefined) rmSync(work, { recursive: true, force: true });
  }
}

export async function run(argv: string[]): Promise<number> {
  await trainDemo(parseOptions(argv));
  return 0;
}
