/**
 * The demo replay that `mindeye-rt bench` measures: the simulated test run of the demo model
 * through the whole session (motion on), with every stage-timing event kept for the report.
 *
 * Beyond what the session's report holds, a replay records:
 * - 'ingest' timings, which the replay source sends through `publishTiming`;
 * - 'send' timings from a dashboard on 127.0.0.1 with one WebSocket viewer (unless
 *   `dashboard` is false), as a live session has;
 * - the masked volumes, trial design and one final estimate's normalised betas, which the
 *   peer comparisons reuse as their inputs.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { finalize, takeWhile } from 'rxjs';
import WebSocket from 'ws';
import { DEMO_MODEL_DIR, REPO_ROOT, demoSimulation, simulatedRunIsCurrent } from '../demo/prepare.ts';
import type { Device } from '../decode/ort.ts';
import type { Frame, PipelineEvent, StageTiming, TrialEstimate, TrialSpec } from '../events.ts';
import { LazyImgBrick } from '../ingest/stimuli.ts';
import { nsdSource } from '../ingest/nsd.ts';
import type { Source, SourceEvent, Speed } from '../ingest/source.ts';
import { logger } from '../log.ts';
import { DEFAULT_PROCESSING } from '../session/options.ts';
import type { RunReport } from '../session/report.ts';
import { runSession } from '../session/run.ts';
import { addImageMetrics, registrarFactory, renderStageFor } from '../cli/live.ts';

export type Grid = 'epi' | 'nsd';

export interface ReplayOptions {
  grid: Grid;
  speed: Speed;
  device: Device;
  /** Model directory; ignored on the nsd grid, which no shipped model fits (preprocessing only). */
  modelDir?: string;
  /** Ends the run after this many volumes; open trial windows are closed with the data so far. */
  maxVolumes?: number;
  /** Serve a dashboard with one viewer during the run, to time 'send' (default true). */
  dashboard?: boolean;
  /** Called with each volume received and the run's volume count (progress lines). */
  onVolume?(volIdx: number, total: number | undefined): void;
  /** Called once the source ended and the rest of the pipeline drains. */
  onSourceEnd?(): void;
  /** Called before the run is simulated into .cache/ (the first replay on a grid). */
  onSimulate?(): void;
}

export interface MaskedRow {
  volIdx: number;
  acqTimeSec: number;
  values: Float32Array;
}

export interface ReplayCapture {
  report: RunReport;
  /** Every stage-timing of the run, in the order they were sent. */
  timings: StageTiming[];
  /** receivedAtMs of each volume, by volIdx. */
  volumeReceivedMs: Map<number, number>;
  /** Final trial estimates, by trial id. */
  finalEstimates: Map<number, TrialEstimate>;
  /** Final decodes: the window-closing volume's arrival and the decode's end. */
  finalDecodes: { trialId: number; receivedAtMs: number; decodedAtMs: number }[];
  frames: Omit<Frame, 'image'>[];
  trials: TrialSpec[];
  trSec: number;
  /** Volume count of the whole run file (the GLM's drift basis spans it). */
  expectedVolumes?: number;
  masked: MaskedRow[];
  /** Wall time of the session, from the source's start to the end of the report, in s. */
  wallSec: number;
}

/** Simulates the demo's first test run into .cache/ on the first call for a grid; returns its source. */
async function benchRun(grid: Grid, onSimulate?: () => void) {
  const sim = demoSimulation(DEMO_MODEL_DIR);
  const { planRuns, simulateDataset, runPaths } = await import('../sim/dataset.ts');
  const root = join(REPO_ROOT, '.cache', `bench-${grid}-seed${sim.seed}`);
  const target = planRuns(sim.sessions, sim.runsPerSession, sim.testRuns).filter((p) => p.split === 'test')[0];
  if (!(await simulatedRunIsCurrent(root, runPaths(root, target.session, target.run).timeseries))) {
    onSimulate?.();
    await simulateDataset({ out: root, grid, sessions: sim.sessions, runsPerSession: sim.runsPerSession, testRuns: sim.testRuns, seed: sim.seed, only: 'test', runs: 1 });
  }
  return nsdSource({ root, subject: 1, session: target.session, run: target.run });
}

/**
 * Ends a source right after its volume `maxVolumes - 1`, without waiting for the next one, so
 * that the pipeline drains as at a run's end.
 */
function truncated(source: Source, maxVolumes: number | undefined, onEnd: () => void): Source {
  return (ctx) => {
    const events$ = source(ctx);
    if (maxVolumes === undefined) return events$;
    const isLast = (e: SourceEvent) => e.type === 'volume' && e.volIdx >= maxVolumes - 1;
    return events$.pipe(
      takeWhile((e) => !isLast(e), true),
      finalize(onEnd),
    );
  };
}

/** Starts a loopback dashboard with one viewer; returns a close function. */
async function startViewedDashboard(events: { subscribe(fn: (e: PipelineEvent) => void): void }, onTiming: (t: StageTiming) => void) {
  const { Subject } = await import('rxjs');
  const { startDashboard } = await import('../../dashboard/server.ts');
  const bus = new Subject<PipelineEvent>();
  events.subscribe((e) => bus.next(e));
  const handle = await startDashboard({
    events$: bus.asObservable(),
    control: {
      start: () => undefined, pause: () => undefined, resume: () => undefined, stop: () => undefined, setSpeed: () => undefined,
      status: () => ({ state: 'running', speed: 'max' }),
    },
    onFeedbackInput: () => undefined,
    image: async () => undefined,
    simulated: true,
  }, { host: '127.0.0.1', port: 0, token: randomBytes(16).toString('hex'), onTiming });
  const url = new URL(handle.url);
  const viewer = new WebSocket(`ws://${url.host}/stream`);
  let received = 0;
  viewer.on('message', () => { received++; });
  await new Promise<void>((resolve, reject) => {
    viewer.once('open', () => resolve());
    viewer.once('error', reject);
  });
  return {
    async close(): Promise<number> {
      viewer.close();
      bus.complete();
      await handle.close();
      return received;
    },
  };
}

/** Replays the demo run once and returns its report with everything bench records beside it. */
export async function replayDemo(opts: ReplayOptions): Promise<ReplayCapture> {
  const nsd = await benchRun(opts.grid, opts.onSimulate);
  const stimuli = new LazyImgBrick(nsd.paths.stimuli);
  const useModel = opts.grid === 'epi' ? (opts.modelDir ?? DEMO_MODEL_DIR) : undefined;
  const timings: StageTiming[] = [];
  const capture: Omit<ReplayCapture, 'report' | 'wallSec'> = {
    timings, volumeReceivedMs: new Map(), finalEstimates: new Map(), finalDecodes: [], frames: [], trials: [], trSec: 0, masked: [],
  };
  const listeners: ((e: PipelineEvent) => void)[] = [];
  const dashboard = opts.dashboard === false ? undefined : await startViewedDashboard({ subscribe: (fn) => listeners.push(fn) }, (t) => timings.push(t));

  let total: number | undefined;
  let sourceEnded = false;
  const endSource = () => {
    if (sourceEnded) return;
    sourceEnded = true;
    opts.onSourceEnd?.();
  };
  const source = truncated(nsd.source, opts.maxVolumes, endSource);
  const timedSource: Source = (ctx) => source({
    ...ctx,
    publishTiming: (t) => {
      ctx.publishTiming?.(t);
      timings.push(t);
    },
  });

  const startedMs = performance.now();
  try {
    const result = await runSession({
      source: timedSource, device: opts.device, speed: opts.speed, modelDir: useModel,
      processing: { ...DEFAULT_PROCESSING, motion: 'on', maskFile: useModel ? undefined : nsd.paths.roi, maskRule: 'value == 1' },
      createRegistrar: registrarFactory(DEFAULT_PROCESSING),
      render: renderStageFor(opts.device),
      finishReport: (c, model) => addImageMetrics(c, stimuli, { model }),
      onEvent: (e) => {
        record(capture, e);
        if (e.type === 'run-info') total = opts.maxVolumes === undefined ? e.expectedVolumes : Math.min(opts.maxVolumes, e.expectedVolumes ?? opts.maxVolumes);
        if (e.type === 'volume') {
          opts.onVolume?.(e.volIdx, total);
          if (total !== undefined && e.volIdx + 1 >= total) endSource();
        }
        for (const listener of listeners) listener(e);
      },
    });
    await result.model?.close();
    return { ...capture, report: result.report, wallSec: (performance.now() - startedMs) / 1000 };
  } finally {
    const received = await dashboard?.close();
    if (received !== undefined) logger.debug({ messages: received }, 'bench dashboard viewer closed');
    await stimuli.close();
  }
}

function record(capture: Omit<ReplayCapture, 'report' | 'wallSec'>, e: PipelineEvent): void {
  switch (e.type) {
    case 'run-info':
      capture.trials.push(...(e.trials ?? []));
      capture.trSec = e.trSec;
      capture.expectedVolumes = e.expectedVolumes;
      break;
    case 'trial-added':
      capture.trials.push(e.trial);
      break;
    case 'volume':
      capture.volumeReceivedMs.set(e.volIdx, e.receivedAtMs);
      break;
    case 'masked-volume':
      capture.masked.push({ volIdx: e.volIdx, acqTimeSec: e.acqTimeSec, values: e.values });
      break;
    case 'trial-estimate':
      if (e.final) capture.finalEstimates.set(e.trialId, e);
      break;
    case 'decoded':
      if (e.final) capture.finalDecodes.push({ trialId: e.trialId, receivedAtMs: e.receivedAtMs, decodedAtMs: e.decodedAtMs });
      break;
    case 'stage-timing':
      capture.timings.push(e);
      break;
    case 'frame': {
      const { image: _image, ...rest } = e;
      capture.frames.push(rest);
      break;
    }
    default:
      break;
  }
}
