/**
 * Command dispatch. Each command lives in src/cli/<command>.ts and exports
 * `run(argv: string[]): Promise<number>` (the exit status) and `help: string`.
 */
import { isMindeyeError } from '../errors.ts';
import { logger } from '../log.ts';

const COMMANDS: Record<string, string> = {
  replay: 'Replay a recorded run (NSD layout, BIDS run, embedded demo or a recorded session) as if live',
  watch: 'Watch a scanner export folder (DICOM or NIfTI) and decode volumes as they arrive',
  serve: 'Accept volumes pushed over a WebSocket at /ingest and decode them',
  push: 'Send a series of volume files to a running `serve` (scanner-side sender)',
  convert: 'Convert a folder of scanner files to a 4D NIfTI with a JSON sidecar',
  fit: 'Fit a model on calibration runs (ridge classifier or ridge to embeddings)',
  simulate: 'Write a simulated subject in the NSD layout',
  'train-demo': 'Train the small demo decoder on simulated sessions',
  bank: 'Build an image bank (embeddings and thumbnails) for retrieval',
  export: 'Export MindEye PyTorch checkpoints to a model directory (ONNX + manifest)',
  bench: 'Measure latency and throughput and write a benchmark report',
};

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, text]) => `  ${name.padEnd(width)}  ${text}`);
  return [
    'mindeye-rt: real-time streaming fMRI-to-image decoder',
    '',
    'Usage: mindeye-rt <command> [options]     (mindeye-rt <command> --help for its options)',
    '',
    'Commands:',
    ...lines,
  ].join('\n');
}

interface CommandModule {
  run(argv: string[]): Promise<number>;
  help: string;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(usage() + '\n');
    return command === undefined ? 2 : 0;
  }
  if (!(command in COMMANDS)) {
    process.stderr.write(`mindeye-rt: unknown command "${command}".\n\n${usage()}\n`);
    return 2;
  }
  let mod: CommandModule;
  try {
    mod = (await import(`./${command}.ts`)) as CommandModule;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String(err).includes(`${command}.ts`)) {
      process.stderr.write(`mindeye-rt: the "${command}" command is not available in this build.\n`);
      return 2;
    }
    throw err;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(mod.help.trimEnd() + '\n');
    return 0;
  }
  try {
    return await mod.run(rest);
  } catch (err) {
    if (isMindeyeError(err)) {
      process.stderr.write(`mindeye-rt ${command}: error ${err.code}: ${err.message}\n`);
      return 1;
    }
    logger.error({ err, command }, 'command failed');
    process.stderr.write(`mindeye-rt ${command}: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}
