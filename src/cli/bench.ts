/**
 * `mindeye-rt bench`: latency and throughput on this machine, written as JSON and printed.
 * Performance lives here, never in timed tests.
 */
import { cpus } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { DEMO_MODEL_DIR, REPO_ROOT, demoSimulation, simulatedRunIsCurrent } from '../demo/prepare.ts';
import { nsdSource } from '../ingest/nsd.ts';
import { DEFAULT_PROCESSING } from '../session/options.ts';
import { runSession } from '../session/run.ts';
import { addImageMetrics, registrarFactory, renderStageFor } from './live.ts';
import { LazyImgBrick } from '../ingest/stimuli.ts';
import { parseFlags } from './flags.ts';
import type { Speed } from '../ingest/source.ts';
import type { RunReport } from '../session/report.ts';

export const help = `Usage: mindeye-rt bench [--model DIR] [--device cpu|cuda] [--grid epi|nsd]
                        [--realtime-volumes N] [--full-width] [--soak MINUTES] [--out DIR]

Measures, on this machine, within a few minutes by default:
  - the demo replay at max speed (img2img cut short by the 'latest' policy) on the chosen grid:
    preprocess, decode and render latency percentiles, final betas -> first frame, real-time factor
    (on the nsd grid, 81x104x83, the demo model does not fit the mask: preprocessing only)
  - the first N volumes at realtime speed (--realtime-volumes, default 40): whether every trial
    gets its full img2img sequence
  - motion correction against Debian's nipy, and the mosaic DICOM decoder against dcm2niix
    (when those benchmarks are installed in this build)
  --full-width             add the full-size MindEye1 backbone + heads: onnxruntime vs PyTorch
  --soak MINUTES           add a long replay at max speed, repeating the demo run
  --out DIR                write DIR/bench.json (default bench-results/)
`;

export async function demoReplay(grid: 'epi' | 'nsd', speed: Speed, device: 'cpu' | 'cuda', modelDir: string | undefined, maxVolumes?: number): Promise<RunReport> {
  const sim = demoSimulation(DEMO_MODEL_DIR);
  const { planRuns, simulateDataset } = await import('../sim/dataset.ts');
  const root = join(REPO_ROOT, '.cache', `bench-${grid}-seed${sim.seed}`);
  const target = planRuns(sim.sessions, sim.runsPerSession, sim.testRuns).filter((p) => p.split === 'test')[0];
  const ref = { root, subject: 1, session: target.session, run: target.run };
  const { runPaths } = await import('../sim/dataset.ts');
  if (!(await simulatedRunIsCurrent(root, runPaths(root, target.session, target.run).timeseries))) {
    await simulateDataset({ out: root, grid, sessions: sim.sessions, runsPerSession: sim.runsPerSession, testRuns: sim.testRuns, seed: sim.seed, only: 'test', runs: 1 });
  }
  const nsd = nsdSource(ref);
  const stimuli = new LazyImgBrick(nsd.paths.stimuli);
  const useModel = grid === 'epi' ? modelDir : undefined;
  const abort = new AbortController();
  let volumes = 0;
  try {
    const result = await runSession({
      source: nsd.source, device, speed, modelDir: useModel, signal: abort.signal,
      processing: { ...DEFAULT_PROCESSING, motion: 'on', maskFile: useModel ? undefined : nsd.paths.roi, maskRule: 'value == 1' },
      createRegistrar: registrarFactory(DEFAULT_PROCESSING),
      render: renderStageFor(device),
      finishReport: (c) => addImageMetrics(c, stimuli),
      onEvent: (e) => {
        if (e.type === 'masked-volume' && maxVolumes !== undefined && ++volumes >= maxVolumes) abort.abort();
      },
    });
    await result.model?.close();
    return result.report;
  } finally {
    await stimuli.close();
  }
}

function pick(report: RunReport) {
  const s = report.summary as Record<string, unknown>;
  return {
    volumes: s.volumesProcessed, trialsDecoded: s.trialsDecoded, realtimeFactor: s.realtimeFactor, peakRssMb: s.peakRssMb,
    latencyMs: s.latencyMs, skipped: s.skipped, retrievalTop1: s.retrievalTop1, retrievalCandidates: s.retrievalCandidates,
    trialsWithFullImg2img: (s.trialsDecoded as number) - ((s.skipped as { img2img: number }).img2img ?? 0),
  };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    model: { type: 'string' }, device: { type: 'string', default: 'cpu' }, grid: { type: 'string', default: 'epi' },
    'realtime-volumes': { type: 'string', default: '40' }, 'full-width': { type: 'boolean', default: false },
    soak: { type: 'string' }, out: { type: 'string', default: 'bench-results' },
  }, 'bench');
  const grid = values.grid as 'epi' | 'nsd';
  if (grid !== 'epi' && grid !== 'nsd') {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --grid.', { field: '--grid', value: grid, expected: 'epi or nsd', fix: 'see --help' });
  }
  const device = values.device as 'cpu' | 'cuda';
  const modelDir = (values.model as string | undefined) ?? DEMO_MODEL_DIR;
  const results: Record<string, unknown> = {
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, platform: process.platform },
    date: new Date().toISOString(),
  };
  const say = (line: string) => process.stdout.write(line + '\n');

  say(`bench: demo replay at max speed (${grid} grid)`);
  results.maxSpeed = pick(await demoReplay(grid, { kind: 'max' }, device, modelDir));
  say(JSON.stringify(results.maxSpeed));

  const rtVolumes = Number(values['realtime-volumes']);
  if (rtVolumes > 0) {
    say(`bench: first ${rtVolumes} volumes at realtime speed`);
    results.realtime = pick(await demoReplay(grid, { kind: 'realtime' }, device, modelDir, rtVolumes));
    say(JSON.stringify(results.realtime));
  }

  const optional: [string, string, string, unknown[]][] = [
    ['motion', '../bench/motion.ts', 'benchMotion', []],
    ['ingest', '../bench/ingest.ts', 'benchIngest', []],
  ];
  if (values['full-width']) optional.push(['fullWidth', '../bench/full-width.ts', 'benchFullWidth', [{ device }]]);
  for (const [key, path, fn, args] of optional) {
    try {
      const mod = (await import(path)) as Record<string, (...a: unknown[]) => Promise<Record<string, unknown>>>;
      say(`bench: ${key}`);
      results[key] = await mod[fn](...args);
      say(JSON.stringify(results[key]));
    } catch (err) {
      results[key] = { error: (err as Error).message };
      say(`bench: ${key} failed: ${(err as Error).message}`);
    }
  }

  if (values.soak !== undefined) {
    // Soak block (src/bench/soak.ts): long max-speed replays, memory and p95 latency per run.
    const minutes = Number(values.soak);
    if (!Number.isFinite(minutes) || minutes <= 0) {
      throw new MindeyeError('CLI_USAGE', 'Invalid value for --soak.', { field: '--soak', value: String(values.soak), expected: 'a positive number of minutes, e.g. 120 or 0.5', fix: 'see --help' });
    }
    const { runSoak, soakLine, summarizeSoak } = await import('../bench/soak.ts');
    const outDir = String(values.out);
    mkdirSync(outDir, { recursive: true });
    say(`bench: soak for ${minutes} min, demo replays at max speed back to back`);
    const soak = await runSoak({
      minutes,
      replayOnce: () => demoReplay(grid, { kind: 'max' }, device, modelDir),
      onRun: (r, soFar) => {
        say(soakLine(r));
        // Partial results after every run, so an interrupted soak still leaves its figures.
        writeFileSync(join(outDir, 'soak.json'), JSON.stringify({ summary: summarizeSoak(minutes, soFar, r.startedAtSec + r.durationSec), series: soFar }, null, 2) + '\n');
      },
    });
    results.soak = soak;
    const sm = soak.summary;
    say(`bench: soak ${sm.runs} runs in ${sm.durationSec} s; RSS ${sm.rssMb.first} -> ${sm.rssMb.last} MiB (slope ${sm.rssMb.slopePerRun} MiB/run); heap ${sm.heapUsedMb.first} -> ${sm.heapUsedMb.last} MiB`);
  }

  const outDir = String(values.out);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bench.json'), JSON.stringify(results, null, 2) + '\n');
  say(`bench: results written to ${join(outDir, 'bench.json')}`);
  return 0;
}
