/**
 * `mindeye-rt simulate`: writes a simulated subject in the NSD layout (src/sim/dataset.ts).
 */
import { parseArgs } from 'node:util';
import { MindeyeError } from '../errors.ts';
import { simulateDataset } from '../sim/dataset.ts';

export const help = `Usage: mindeye-rt simulate --out DIR [options]

Writes a simulated subject in the NSD layout: time series (int16, TR 4/3 s, 226 volumes per
run, not motion-corrected), design TSVs, an nsdgeneral-style ROI, the stimuli as
nsd_stimuli.hdf5 /imgBrick, and the ground truth (betas, head motion, stimulus split) under
DIR/simulation. The anatomy is a real EPI; the responses are simulated (docs/simulation.md).
The same seed and options always give the same files.

Options:
  --out DIR               output folder (created if missing; files in it are overwritten)
  --grid nsd|epi          nsd: NSD's 81x104x83 grid at 1.8 mm; epi: the EPI's native
                          64x64x36 grid at 3.2x3.2x3.6 mm (default: epi)
  --sessions N            training sessions, each with --runs-per-session runs of training
                          images (default: 1; 0 for test runs only)
  --runs-per-session R    runs per session, 1 to 14 (default: 12, as in NSD)
  --test-runs T           held-out runs of test images after the training sessions, in
                          session N+1 onwards (default: 2)
  --only train|test       write only the training runs or only the test runs
  --runs K                write only the first K runs of the selection
  --seed S                random seed, an integer from 0 to 4294967295 (default: 1)
  --motion-scale F        multiplies the head motion (default 1: at most 0.6 mm and
                          0.5 degrees; 0: no motion)
  --no-noise              leave out the noise and the drift (for checking a GLM)
  --help                  show this help
`;

function parseNumber(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) {
    throw new MindeyeError('CLI_USAGE', `Invalid value for ${flag}.`, { field: flag, value: text, expected: 'a number', fix: `pass a number, for example ${flag} 1` });
  }
  return value;
}

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' },
        grid: { type: 'string' },
        sessions: { type: 'string' },
        'runs-per-session': { type: 'string' },
        'test-runs': { type: 'string' },
        only: { type: 'string' },
        runs: { type: 'string' },
        seed: { type: 'string' },
        'motion-scale': { type: 'string' },
        'no-noise': { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', 'Invalid command line.', { value: (err as Error).message, fix: 'see mindeye-rt simulate --help' });
  }
  if (values.out === undefined || values.out === '') {
    throw new MindeyeError('CLI_USAGE', 'Missing --out.', { field: '--out', fix: 'pass an output folder, for example --out sim-data' });
  }
  const summary = await simulateDataset({
    out: values.out,
    grid: values.grid as 'nsd' | 'epi' | undefined,
    sessions: parseNumber('--sessions', values.sessions),
    runsPerSession: parseNumber('--runs-per-session', values['runs-per-session']),
    testRuns: parseNumber('--test-runs', values['test-runs']),
    only: values.only as 'train' | 'test' | undefined,
    runs: parseNumber('--runs', values.runs),
    seed: parseNumber('--seed', values.seed),
    motionScale: parseNumber('--motion-scale', values['motion-scale']),
    noise: values['no-noise'] === true ? false : true,
  });
  const lines = [
    `Simulated subject written to ${summary.out} (grid ${summary.grid}, seed ${summary.seed}, simulated data).`,
    `  ROI voxels: ${summary.roiVoxels}; imgBrick images: ${summary.images} (test images: ${summary.testImages})`,
    ...summary.runs.map((r) => `  session ${r.session} run ${r.run} (${r.split}): ${r.trials} trials -> ${r.timeseries}`),
    `  took ${(summary.elapsedMs / 1000).toFixed(1)} s`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
