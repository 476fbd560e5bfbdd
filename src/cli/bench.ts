/**
 * `mindeye-rt bench`: latency and throughput on this machine, written under --out as JSON
 * (bench.json), Markdown (bench.md) and SVG plots. Performance lives here, never in timed tests.
 */
import type { SoakResult } from '../bench/soak.ts';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { DEMO_MODEL_DIR } from '../demo/prepare.ts';
import { parseFlags } from './flags.ts';
import type { Speed } from '../ingest/source.ts';
import type { RunReport } from '../session/report.ts';
import { DEFAULT_PROCESSING } from '../session/options.ts';
import { allDurations, budgetRows, endToEndRows, img2imgCompleteness, stageRows, trialTimeline, type ImgCompleteness, type StageRow } from '../bench/analysis.ts';
import { describeMachine } from '../bench/machine.ts';
import type { PeerResult } from '../bench/peers.ts';
import { replayDemo, type Grid, type ReplayCapture } from '../bench/replay.ts';
import { benchMarkdown } from '../bench/report-md.ts';
import { STAGES } from '../bench/stages.ts';
import { latencyHistogramsSvg, trialTimelineSvg } from '../bench/svg.ts';

const PEERS = ['dcm2niix', 'nipy', 'numpy', 'torch'] as const;
type Peer = (typeof PEERS)[number];

export const help = `Usage: mindeye-rt bench [--model DIR] [--device cpu|cuda] [--grid epi|nsd]
                        [--realtime-volumes N] [--max-volumes N] [--peers LIST] [--no-dashboard]
                        [--full-width] [--soak MINUTES] [--out DIR]

Measures, on this machine, within about 5 minutes (the first run also simulates the demo's test
run into .cache/):
  - the demo's simulated test run replayed at max speed, motion correction on, with a dashboard
    and one WebSocket viewer on 127.0.0.1 as in a live session: p50/p95/p99/max latency per
    stage (ingest, motion, mask, GLM, normalize, each decode head, prior sampling, low-level
    render, each img2img step, encode, send), the end-to-end paths (volume received -> final
    betas -> first frame -> final frame), throughput, real-time factor and peak RSS.
    On the nsd grid (81x104x83) the demo model does not fit the mask: preprocessing only.
  - the first N volumes at realtime speed: whether every trial gets its full img2img sequence
  - peers on the same inputs, where installed: dcm2niix (mosaic DICOM decode), nipy (rigid
    registration), numpy (one trial's OLS fit), PyTorch (backbone forward, batch 1); a missing
    peer is skipped with a message
Progress lines go to stderr; the summary and the output paths to stdout.

Options:
  --model DIR              model directory (default models/demo)
  --device cpu|cuda        onnxruntime execution provider (default cpu)
  --grid epi|nsd           grid of the simulated run (default epi)
  --realtime-volumes N     volumes replayed at realtime speed after the max-speed replay
                           (default 30; 0 skips the segment)
  --max-volumes N          stop the max-speed replay after N volumes (default: the whole run, 226)
  --peers LIST             comma-separated peers to run: dcm2niix,nipy,numpy,torch (default all),
                           or none
  --no-dashboard           replay without the dashboard (no 'send' timings)
  --full-width             add the full-size MindEye1 backbone + heads: onnxruntime vs PyTorch
  --soak MINUTES           add a long replay at max speed, repeating the demo run
  --out DIR                output folder (default bench-results/): bench.json, bench.md,
                           latency-histograms.svg, trial-timeline.svg
`;

/** Replays the demo once and returns its session report (the soak mode calls this). */
export async function demoReplay(grid: 'epi' | 'nsd', speed: Speed, device: 'cpu' | 'cuda', modelDir: string | undefined, maxVolumes?: number): Promise<RunReport> {
  const capture = await replayDemo({ grid, speed, device, modelDir, maxVolumes, dashboard: false });
  return capture.report;
}

function usage(field: string, value: unknown, expected: string): MindeyeError {
  return new MindeyeError('CLI_USAGE', `Invalid value for ${field}.`, { field, value: String(value), expected, fix: 'see mindeye-rt bench --help' });
}

function integerFlag(value: unknown, field: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw usage(field, value, `an integer >= ${min}`);
  return n;
}

function parsePeers(value: string): Peer[] {
  if (value === 'none') return [];
  const names = value.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const unknown = names.filter((p) => !(PEERS as readonly string[]).includes(p));
  if (names.length === 0 || unknown.length > 0) throw usage('--peers', value, `a comma-separated list of ${PEERS.join(', ')}, or none`);
  return names as Peer[];
}

/** Writes one progress line to stderr at most once a second, and always the last one. */
function progressPrinter(label: string) {
  let lastMs = 0;
  return (volIdx: number, total: number | undefined) => {
    const now = performance.now();
    const last = total !== undefined && volIdx + 1 >= total;
    if (!last && now - lastMs < 1000) return;
    lastMs = now;
    process.stderr.write(`${label}: volume ${volIdx + 1}/${total ?? '?'}\n`);
  };
}

async function runPeer(name: string, say: (line: string) => void, job: () => Promise<PeerResult> | PeerResult): Promise<PeerResult> {
  process.stderr.write(`peer ${name}: running\n`);
  try {
    const result = await job();
    if (result.skipped !== undefined) say(`bench: peer ${name} skipped: ${result.skipped}`);
    return result;
  } catch (err) {
    say(`bench: peer ${name} failed: ${(err as Error).message}`);
    return { skipped: `failed: ${(err as Error).message}` };
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    model: { type: 'string' }, device: { type: 'string', default: 'cpu' }, grid: { type: 'string', default: 'epi' },
    'realtime-volumes': { type: 'string', default: '30' }, 'max-volumes': { type: 'string' },
    peers: { type: 'string', default: PEERS.join(',') }, 'no-dashboard': { type: 'boolean', default: false },
    'full-width': { type: 'boolean', default: false }, soak: { type: 'string' }, out: { type: 'string', default: 'bench-results' },
  }, 'bench');
  const grid = values.grid as Grid;
  if (grid !== 'epi' && grid !== 'nsd') throw usage('--grid', grid, 'epi or nsd');
  const device = values.device as 'cpu' | 'cuda';
  if (device !== 'cpu' && device !== 'cuda') throw usage('--device', device, 'cpu or cuda');
  const modelDir = (values.model as string | undefined) ?? DEMO_MODEL_DIR;
  if (!existsSync(join(modelDir, 'manifest.json'))) {
    throw new MindeyeError('CLI_USAGE', 'The model directory has no manifest.json.', {
      file: join(modelDir, 'manifest.json'), field: '--model', value: modelDir, expected: 'a model directory (manifest.json and its ONNX heads)',
      fix: 'pass a model directory, or omit --model for the demo model',
    });
  }
  const rtVolumes = integerFlag(values['realtime-volumes'], '--realtime-volumes', 0);
  const maxVolumes = values['max-volumes'] === undefined ? undefined : integerFlag(values['max-volumes'], '--max-volumes', 1);
  const peers = parsePeers(String(values.peers));
  const dashboard = !values['no-dashboard'];
  const soakMinutes = values.soak === undefined ? undefined : Number(values.soak);
  if (soakMinutes !== undefined && !(Number.isFinite(soakMinutes) && soakMinutes > 0)) {
    throw usage('--soak', values.soak, 'a positive number of minutes, e.g. 120 or 0.5');
  }
  const outDir = String(values.out);
  try {
    mkdirSync(outDir, { recursive: true });
  } catch (err) {
    throw new MindeyeError('CLI_USAGE', 'The output folder cannot be created.', {
      file: outDir, field: '--out', value: (err as Error).message, expected: 'a folder path that is writable, or does not exist yet under a writable folder',
      fix: 'pass another --out',
    });
  }

  const startedMs = performance.now();
  const machine = describeMachine();
  const command = ['mindeye-rt bench', ...argv].join(' ');
  const results: Record<string, unknown> = {};
  const say = (line: string) => process.stdout.write(line + '\n');

  say(`bench: demo replay at max speed (${grid} grid${maxVolumes !== undefined ? `, first ${maxVolumes} volumes` : ''})`);
  const maxSpeed = await replayDemo({
    grid, speed: { kind: 'max' }, device, modelDir, maxVolumes, dashboard,
    onVolume: progressPrinter('max-speed replay'),
    onSimulate: () => process.stderr.write(`simulating the demo's test run on the ${grid} grid into .cache/ (first run only)\n`),
    onSourceEnd: () => process.stderr.write('max-speed replay: all volumes read; finishing decode and render\n'),
  });
  const hasModel = grid === 'epi';
  const durations = allDurations(maxSpeed);
  const stages = stageRows(durations);
  const endToEnd = endToEndRows(durations);
  const summary = maxSpeed.report.summary;
  const latencyMs = summary.latencyMs as Record<string, unknown>;
  for (const row of [...stages, ...endToEnd]) latencyMs[row.stage] ??= { p50: row.p50, p95: row.p95, p99: row.p99, max: row.max };
  say(`bench: max speed: ${summary.volumesProcessed} volumes, ${summary.trialsDecoded} trials, ${(summary.realtimeFactor as number)?.toFixed(1)}x real time`);

  let realtime: (ImgCompleteness & { volumes: number; realtimeFactor?: number; betaToFinalFrameP95?: number; stages: StageRow[]; endToEnd: StageRow[] }) | undefined;
  let realtimeCapture: ReplayCapture | undefined;
  if (rtVolumes > 0) {
    const runVolumes = summary.volumesReceived as number;
    if (rtVolumes > runVolumes) say(`bench: --realtime-volumes ${rtVolumes} is more than the run's ${runVolumes} volumes; the whole run is replayed at realtime speed`);
    else say(`bench: first ${rtVolumes} volumes at realtime speed`);
    realtimeCapture = await replayDemo({
      grid, speed: { kind: 'realtime' }, device, modelDir, maxVolumes: rtVolumes, dashboard,
      onVolume: progressPrinter('realtime segment'),
      onSourceEnd: () => process.stderr.write('realtime segment: all volumes read; finishing decode and render\n'),
    });
    const rtDurations = allDurations(realtimeCapture);
    realtime = {
      volumes: realtimeCapture.report.summary.volumesProcessed as number,
      ...img2imgCompleteness(realtimeCapture),
      realtimeFactor: realtimeCapture.report.summary.realtimeFactor as number | undefined,
      stages: stageRows(rtDurations),
      endToEnd: endToEndRows(rtDurations),
    };
    realtime.betaToFinalFrameP95 = realtime.endToEnd.find((r) => r.stage === 'betaToFinalFrame')?.p95;
    if (hasModel) say(`bench: realtime: ${realtime.trialsWithFullImg2img} of ${realtime.trialsDecoded} trials with every img2img step`);
    else say(`bench: realtime: ${realtime.volumes} volumes preprocessed (no model on the nsd grid, so no frames)`);
  }

  const peerResults: Record<string, PeerResult> = {};
  if (peers.includes('dcm2niix')) {
    peerResults.dcm2niix = await runPeer('dcm2niix', say, async () => {
      const ingest = await (await import('../bench/ingest.ts')).benchIngest();
      return typeof ingest.dcm2niix === 'string' ? { skipped: ingest.dcm2niix, ...ingest } : ingest;
    });
  }
  if (peers.includes('nipy')) {
    peerResults.nipy = await runPeer('nipy', say, async () => {
      const motion = await (await import('../bench/motion.ts')).benchMotion();
      results.motion = motion;
      const versus = motion.epiVersusNipy as PeerResult & { nipy?: { skipped?: string } };
      return versus.nipy?.skipped !== undefined ? { skipped: versus.nipy.skipped, ...versus } : versus;
    });
  }
  if (peers.includes('numpy')) {
    const { benchNumpyGlm } = await import('../bench/peers.ts');
    peerResults.numpyGlm = await runPeer('numpy GLM', say, () => benchNumpyGlm({
      trials: maxSpeed.trials, trSec: maxSpeed.trSec, masked: maxSpeed.masked, processing: DEFAULT_PROCESSING,
      expectedDurationSec: maxSpeed.expectedVolumes !== undefined ? maxSpeed.expectedVolumes * maxSpeed.trSec : undefined,
    }));
  }
  if (peers.includes('torch')) {
    const { benchTorchBackbone } = await import('../bench/peers.ts');
    peerResults.torchBackbone = await runPeer('PyTorch backbone', say, () => benchTorchBackbone(modelDir));
  }
  for (const [name, p] of Object.entries(peerResults)) {
    if (p.skipped === undefined) say(`bench: peer ${name}: ${JSON.stringify(p)}`);
  }
  if (values['full-width']) {
    try {
      say('bench: full-width MindEye1, onnxruntime vs PyTorch');
      results.fullWidth = await (await import('../bench/full-width.ts')).benchFullWidth({ device });
    } catch (err) {
      results.fullWidth = { error: (err as Error).message };
      say(`bench: fullWidth failed: ${(err as Error).message}`);
    }
  }

  if (soakMinutes !== undefined) {
    // Soak block (src/bench/soak.ts): long max-speed replays, memory and p95 latency per run.
    const minutes = soakMinutes;
    const { runSoak, soakLine, summarizeSoak } = await import('../bench/soak.ts');
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

  machine.loadAverageEnd = loadavg()[0];
  const durationSec = (performance.now() - startedMs) / 1000;
  const pick = (key: string) => stages.find((r) => r.stage === key) ?? endToEnd.find((r) => r.stage === key);
  const budgets = budgetRows({
    grid, hasModel, realtime,
    preprocessP95: pick('volumeDecodeToGlm')?.p95 ?? pick('preprocess')?.p95,
    betaToFirstFrameP95: pick('betaToFirstFrame')?.p95,
    realtimePreprocessP95: realtime?.endToEnd.find((r) => r.stage === 'volumeDecodeToGlm')?.p95,
    realtimeBetaToFirstFrameP95: realtime?.endToEnd.find((r) => r.stage === 'betaToFirstFrame')?.p95,
    realtimeFactor: summary.realtimeFactor as number | undefined,
    peakRssMb: Math.max(summary.peakRssMb as number, (realtimeCapture?.report.summary.peakRssMb as number | undefined) ?? 0),
  });

  const histogramFile = 'latency-histograms.svg';
  const timelineFile = 'trial-timeline.svg';
  const histogramStages = [...STAGES.map((s) => s.stage), 'volumeToBetas', 'betaToFirstFrame', 'betaToFinalFrame'];
  writeFileSync(join(outDir, histogramFile), latencyHistogramsSvg(
    histogramStages.flatMap((stage) => {
      const valuesMs = durations.get(stage) ?? [];
      const row = pick(stage);
      return valuesMs.length > 0 && row ? [{ stage, valuesMs, p50: row.p50, p95: row.p95 }] : [];
    }),
    `Latency per stage, max-speed replay (${grid} grid, ${machine.cpuCores} CPUs), ms`,
  ));
  // The realtime segment shows a trial's full img2img sequence; at max speed it is cut short.
  const timelineSource = realtimeCapture ?? maxSpeed;
  const timeline = trialTimeline(timelineSource);
  if (timeline) {
    writeFileSync(join(outDir, timelineFile), trialTimelineSvg(
      `Trial ${timeline.trialId} (${timelineSource === realtimeCapture ? 'realtime' : 'max-speed'} replay), ms after its window-closing volume arrived`,
      timeline.originMs, timeline.spans, timeline.markers, STAGES.map((s) => s.stage),
    ));
  } else {
    // No trial got a frame: leave no timeline of an earlier run in --out.
    rmSync(join(outDir, timelineFile), { force: true });
  }

  Object.assign(results, {
    run: maxSpeed.report.run,
    trials: maxSpeed.report.trials,
    summary,
    command,
    date: new Date().toISOString(),
    durationSec: Math.round(durationSec),
    machine,
    grid,
    dashboard,
    stages,
    endToEnd,
    budgets,
    realtime,
    peers: peerResults,
    timeline: timeline ? { trialId: timeline.trialId, spans: timeline.spans.length, file: timelineFile } : undefined,
    plots: { histograms: histogramFile, timeline: timeline ? timelineFile : undefined },
  });
  writeFileSync(join(outDir, 'bench.json'), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(join(outDir, 'bench.md'), benchMarkdown({
    command, date: results.date as string, durationSec, machine, grid, device, model: hasModel ? modelDir : 'none (preprocessing only)', hasModel,
    volumes: summary.volumesProcessed as number, trialsDecoded: summary.trialsDecoded as number,
    realtimeFactor: summary.realtimeFactor as number | undefined, throughputVolumesPerSec: summary.throughputVolumesPerSec as number | undefined,
    peakRssMb: summary.peakRssMb as number | undefined, skipped: summary.skipped as Record<string, number> | undefined,
    budgets, stages, endToEnd, realtime, peers: peerResults, soak: results.soak as SoakResult | undefined,
    plots: { histograms: histogramFile, timeline: timeline ? timelineFile : undefined },
  }));
  say(`bench: results written to ${join(outDir, 'bench.json')}, bench.md, ${histogramFile}${timeline ? `, ${timelineFile}` : ''} (${durationSec.toFixed(0)} s)`);
  return 0;
}
