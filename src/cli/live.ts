/**
 * Runs sessions for the replay, watch and serve commands. It wires the optional parts
 * (ground-truth stimuli, motion correction, rendering, recording, dashboard) around
 * `runSession` and prints the summary. With the dashboard it keeps serving until Ctrl-C, and a
 * replay can be started again from the page.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Observable, Subject, filter } from 'rxjs';
import type { FastifyPluginAsync } from 'fastify';
import { MindeyeError } from '../errors.ts';
import { LazyImgBrick } from '../ingest/stimuli.ts';
import { formatSpeed, type Source } from '../ingest/source.ts';
import { Pacer } from '../ingest/pacing.ts';
import { logger } from '../log.ts';
import { runSession, type SessionConfig, type SessionResult } from '../session/run.ts';
import type { ProcessingOptions } from '../session/options.ts';
import { SessionRecorder, existingRecord, type RecordContents } from '../session/record.ts';
import { resumeSource, type ResumeInfo } from '../session/resume.ts';
import type { ReportCollector, RunReport } from '../session/report.ts';
import type { Decoded, PipelineEvent, RunInfo, TrialSpec, Volume } from '../events.ts';
import type { FeedbackInput } from '../../dashboard/feedback.ts';
import type { LoadedModel } from '../decode/model.ts';
import { MotionCorrector, assertSameGrid, motionCorrectorFromNifti } from '../preprocess/motion.ts';
import { loadMask } from '../preprocess/mask.ts';
import { readNiftiHeader } from '../io/nifti.ts';
import { modelMakesFrames, renderStage } from '../render/stage.ts';
import { evaluateRun, writeAnytimeSvg } from '../eval/run-eval.ts';
import { anytimeMarkdown, type AnytimePoint } from '../eval/anytime.ts';
import type { EvalOptions } from '../eval/options.ts';
import type { SessionFlags } from './flags.ts';

export interface LiveSessionOptions {
  source: Source;
  processing: ProcessingOptions;
  session: SessionFlags;
  stimuliFile?: string;
  /** Keep the dashboard up after the run ends, until Ctrl-C. */
  keepServing: boolean;
  label: string;
  onEvent?(e: PipelineEvent): void;
  /** Extra fastify plugins on the dashboard server (network ingest). */
  plugins?: FastifyPluginAsync[];
  /** Called with the dashboard URL once it listens (tests use it). */
  onListening?(url: string): void;
  /**
   * The record that `session.recordTo` already holds, when the caller read it (watch reads it to
   * set up the folder watch). Otherwise runLiveSession reads it; either way the session resumes it.
   */
  resumeFrom?: RecordContents;
  /** Trials announced by the source itself (a record's live-announced trials), merged with the feedback channel's. */
  announcedTrials$?: Observable<TrialSpec>;
  /** Adds fields to the report before it is written. */
  amendReport?(report: RunReport): void;
  /** True when `session.recordTo` was named automatically: a record found there is never resumed. */
  freshRecord?: boolean;
}

export function formatSummary(report: RunReport): string {
  const s = report.summary as Record<string, unknown>;
  const lines = [
    `run: ${report.run.source}${report.run.simulated ? ' [simulated subject]' : ''}`,
    `volumes: received ${s.volumesReceived}, processed ${s.volumesProcessed}, dropped ${s.volumesDropped}; trials: ${report.run.trialCount} in design, ${s.trialsDecoded} decoded`,
  ];
  if (typeof s.retrievalTop1 === 'number') {
    lines.push(`retrieval top-1: ${(s.retrievalTop1 * 100).toFixed(1)}% of ${s.retrievalTrials} trials (${s.retrievalCandidates} candidates, chance ${((s.retrievalChance as number) * 100).toFixed(1)}%)` +
      (typeof s.twoWayAccuracy === 'number' ? `, 2-way ${(s.twoWayAccuracy * 100).toFixed(1)}%` : ''));
  }
  if (typeof s.pixCorrLowLevelMean === 'number') lines.push(`low-level PixCorr ${(s.pixCorrLowLevelMean as number).toFixed(3)}, SSIM ${(s.ssimLowLevelMean as number).toFixed(3)}`);
  if (typeof s.pixCorrMean === 'number') lines.push(`final image PixCorr ${(s.pixCorrMean as number).toFixed(3)}, SSIM ${(s.ssimMean as number).toFixed(3)}`);
  const brainTop1 = s.brainRetrievalTop1;
  if (typeof brainTop1 === 'number') lines.push(`brain retrieval top-1: ${(brainTop1 * 100).toFixed(1)}% (${s.brainRetrievalCandidates} candidates)`);
  for (const [name, m] of Object.entries((s.featureMetrics ?? {}) as Record<string, { metric: string; value: number; images: number }>)) {
    lines.push(`${name}: ${m.metric === 'two-way' ? `2-way ${(m.value * 100).toFixed(1)}%` : `correlation distance ${m.value.toFixed(3)}`} (${m.images} images)`);
  }
  for (const warning of ((s.evaluation as { warnings?: string[] } | undefined)?.warnings ?? [])) lines.push(`warning: ${warning}`);
  const anytime = s.anytime as AnytimePoint[] | undefined;
  if (anytime && anytime.length > 0) lines.push('anytime decoding (estimate after k volumes since onset):', anytimeMarkdown(anytime, s.retrievalCandidates as number | undefined));
  const lat = s.latencyMs as Record<string, { p50: number; p95: number }>;
  for (const stage of ['preprocess', 'decode', 'volumeToDecode', 'betaToFirstFrame', 'betaToFirstPreview', 'betaToFinalFrame']) {
    if (lat[stage]) lines.push(`latency ${stage}: p50 ${lat[stage].p50.toFixed(1)} ms, p95 ${lat[stage].p95.toFixed(1)} ms`);
  }
  for (const problem of (s.problems as string[] | undefined) ?? []) lines.push(`problem: ${problem}`);
  if (typeof s.realtimeFactor === 'number') lines.push(`speed: ${(s.realtimeFactor as number).toFixed(1)}x real time; peak RSS ${s.peakRssMb} MB`);
  return lines.join('\n');
}

/** Builds the motion registrar for a run: the chosen reference volume or a reference NIfTI. */
export function registrarFactory(processing: ProcessingOptions): SessionConfig['createRegistrar'] {
  return (info: RunInfo, reference: Volume) => {
    if (typeof processing.motionReference === 'string') {
      const ref = readNiftiHeader(processing.motionReference);
      assertSameGrid({ shape: ref.shape, affine: ref.affine, source: processing.motionReference }, { shape: info.shape, affine: info.affine, source: info.source });
      return motionCorrectorFromNifti(processing.motionReference);
    }
    // The preprocess stage calls this with the reference volume (--motion-reference N), holding
    // the volumes before it until it arrives.
    return new MotionCorrector({ shape: info.shape, affine: info.affine, reference: reference.data, referenceSource: reference.sourceId });
  };
}

/**
 * Evaluates the run for its report once the pipeline ended (src/eval/run-eval.ts): PixCorr and
 * SSIM against the ground-truth stimuli, retrieval among N, the anytime curve's low-level
 * PixCorr and feature metrics. Without stimuli only brain retrieval is computed.
 */
export async function addImageMetrics(
  collector: ReportCollector,
  stimuli: LazyImgBrick | undefined,
  extra: { model?: LoadedModel; options?: EvalOptions } = {},
): Promise<void> {
  await evaluateRun({ collector, stimuli, model: extra.model, options: extra.options });
}

/** Returns the render stage when the model makes frames (lowLevel and vaeDecoder heads), else none. */
export function renderStageFor(device: SessionFlags['device']): SessionConfig['render'] {
  const stage = renderStage({ device });
  return (decoded$, ctx) => (modelMakesFrames(ctx.model) ? stage(decoded$, ctx) : decoded$);
}

/** Reads the analysis mask on the volume grid for the dashboard's outline (undefined when unknown). */
function readMaskForDisplay(modelDir: string | undefined, processing: ProcessingOptions): Uint8Array | undefined {
  let file = processing.maskFile;
  let rule = processing.maskRule;
  if (!file && modelDir && existsSync(join(modelDir, 'manifest.json'))) {
    const voxels = JSON.parse(readFileSync(join(modelDir, 'manifest.json'), 'utf8')).voxels ?? {};
    if (voxels.mask) file = join(modelDir, voxels.mask);
    rule ??= voxels.maskRule;
  }
  if (!file || !existsSync(file)) return undefined;
  return loadMask(file, rule ?? (file.includes('nsdgeneral') ? 'value == 1' : 'value > 0')).inside;
}

export async function runLiveSession(opts: LiveSessionOptions): Promise<number> {
  const { session } = opts;
  const stimuli = opts.stimuliFile && existsSync(opts.stimuliFile) ? new LazyImgBrick(opts.stimuliFile) : undefined;
  // Read the record before the recorder appends to it: its last line dates the crash.
  const resumeFrom = opts.resumeFrom ?? (opts.freshRecord ? undefined : existingRecord(session.recordTo));
  const recorder = session.recordTo
    ? new SessionRecorder(session.recordTo, { processing: opts.processing, modelDir: session.modelDir, command: opts.label })
    : undefined;
  const pacer = new Pacer(session.speed);
  const bus = new Subject<PipelineEvent>();
  const token = session.token ?? randomBytes(16).toString('hex');
  let state: 'idle' | 'running' | 'paused' | 'stopped' | 'ended' = 'idle';
  let abort: AbortController | undefined;
  let model: LoadedModel | undefined;
  let simulated = false;
  let lastResult: SessionResult | undefined;
  // Live timing from the stimulus program: the first trigger pulse marks volume 0's acquisition.
  const trials$ = new Subject<TrialSpec>();
  let firstTriggerMs: number | undefined;
  let firstVolumeMs: number | undefined;
  let trialCount = 0;
  opts.announcedTrials$?.subscribe((t) => trials$.next(t));
  let source = opts.source;
  let resumeInfo: ResumeInfo | undefined;
  if (resumeFrom) {
    let resumed: ReturnType<typeof resumeSource>;
    try {
      resumed = resumeSource(resumeFrom, opts.source, { announceTrial: (t) => trials$.next(t), repairs: recorder?.repairs });
    } catch (err) {
      recorder?.close();
      throw err;
    }
    source = resumed.source;
    resumeInfo = resumed.info;
    // Onsets announced without a time are measured from the first trigger (or volume 0) of the
    // whole session, which a restarted process can only read from the record.
    firstTriggerMs = recordedClockZeroMs(resumeFrom, 'trigger');
    firstVolumeMs = recordedClockZeroMs(resumeFrom, 'volume');
    process.stdout.write(`${opts.label}: resuming the session recorded in ${resumeFrom.dir} (${resumeFrom.volumes.length} volumes)\n`);
  }
  const onFeedbackInput = (msg: FeedbackInput) => {
    if (msg.type === 'trigger') {
      if (firstTriggerMs === undefined || msg.pulseIndex === 0) {
        firstTriggerMs = msg.receivedAtMs;
        recorder?.note({ type: 'trigger', pulseIndex: msg.pulseIndex, receivedAtEpochMs: performance.timeOrigin + msg.receivedAtMs });
      }
      return;
    }
    const zeroMs = firstTriggerMs ?? firstVolumeMs;
    let onsetSec = msg.onsetSec;
    if (onsetSec === undefined) {
      if (zeroMs === undefined) {
        logger.warn({ stimulusId: msg.stimulusId }, 'stimulus onset before any trigger or volume: its time is unknown, trial ignored');
        return;
      }
      onsetSec = (msg.receivedAtMs - zeroMs) / 1000;
    }
    const trial: TrialSpec = { trialId: msg.trialId ?? trialCount, onsetSec, durationSec: msg.durationSec ?? 0, stimulusId: msg.stimulusId };
    trialCount = Math.max(trialCount, trial.trialId + 1);
    logger.info({ trialId: trial.trialId, onsetSec, stimulusId: trial.stimulusId }, 'stimulus onset received');
    trials$.next(trial);
  };

  const runOnce = async (): Promise<SessionResult> => {
    abort = new AbortController();
    state = 'running';
    try {
      const result = await runSession({
        source,
        processing: opts.processing,
        modelDir: session.modelDir,
        device: session.device,
        speed: session.speed,
        pacer,
        topK: session.topK,
        reportFile: session.reportFile,
        signal: abort.signal,
        createRegistrar: registrarFactory(opts.processing),
        render: skipRenderedTrials(renderStageFor(session.device), resumeFrom),
        finishReport: (collector, loaded) => addImageMetrics(collector, stimuli, { model: loaded, options: session.evaluation }),
        trials$,
        writeAhead: recorder ? (v) => { recorder.writeVolume(v); } : undefined,
        amendReport: (report) => {
          if (resumeInfo) (report as RunReport & { resume?: ResumeInfo }).resume = resumeInfo;
          opts.amendReport?.(report);
        },
        onEvent: (e) => {
          if (e.type === 'run-info') {
            simulated = e.simulated === true;
            trialCount = e.trials?.length ?? 0;
          }
          if (e.type === 'trial-added') trialCount = Math.max(trialCount, e.trial.trialId + 1);
          if (e.type === 'volume' && e.volIdx === 0 && !resumeFrom) firstVolumeMs = e.receivedAtMs;
          recordEvent(recorder, e);
          bus.next(e);
          opts.onEvent?.(e);
        },
      });
      state = result.aborted ? 'stopped' : 'ended';
      model = result.model;
      lastResult = result;
      try {
        recorder?.writeReport(result.report);
      } catch (err) {
        logger.error({ err, dir: session.recordTo }, 'the report could not be written to the session record');
      }
      process.stdout.write(formatSummary(result.report) + '\n');
      if (resumeInfo) process.stdout.write(formatResume(resumeInfo) + '\n');
      if (session.reportFile) process.stdout.write(`report written to ${session.reportFile}\n`);
      const svg = session.reportFile ? writeAnytimeSvg(result.report, session.reportFile) : undefined;
      if (svg) process.stdout.write(`anytime curve written to ${svg}\n`);
      await result.model?.close();
      return result;
    } catch (err) {
      state = 'ended';
      throw err;
    }
  };

  let dashboard: { url: string; close(): Promise<void> } | undefined;
  // Ctrl-C during a run stops the source and ends the run early: the report covers the volumes
  // received so far, and it and the recording are written before the process exits. A second
  // Ctrl-C exits at once.
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`${stoppingMessage(session)} (Ctrl-C again to quit at once)\n`);
    abort?.abort();
  };
  // The try starts before the dashboard, so that a dashboard that fails to start still closes the
  // recorder, which removes a record folder it never wrote to.
  try {
    if (session.dashboard) {
      const { startDashboard: start } = await import('../../dashboard/server.ts');
      const startDashboard: typeof start = async (...args) => {
        try {
          return await start(...args);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
            throw new MindeyeError('CLI_USAGE', 'The dashboard port is already in use.', {
              field: '--port', value: session.port, expected: 'a free TCP port on ' + session.host,
              fix: 'stop the other program, or pick another port: --port 0 chooses a free one (npm start -- --port 0)',
            });
          }
          throw err;
        }
      };
      const stimulusJpeg = (id: string) => stimuli?.jpeg(id) ?? Promise.resolve(undefined);
      dashboard = await startDashboard({
        events$: bus.asObservable(),
        control: {
          start: () => {
            if (state === 'running' || state === 'paused') return;
            runOnce().catch((err) => logger.error({ err: (err as Error).message }, 'replay failed'));
          },
          pause: () => { if (state === 'running') { pacer.pause(); state = 'paused'; } },
          resume: () => { if (state === 'paused') { pacer.resume(); state = 'running'; } },
          stop: () => { if (state === 'running' || state === 'paused') { pacer.resume(); abort?.abort(); } },
          setSpeed: (speed) => pacer.setSpeed(speed),
          status: () => ({ state, speed: formatSpeed(pacer.speed) }),
        },
        onFeedbackInput,
        image: async (kind, id) => {
          if (kind === 'stimulus') return stimulusJpeg(id).catch(() => undefined);
          const bankDir = model?.bank?.thumbnailsDir ?? (session.modelDir ? join(session.modelDir, 'thumbs') : undefined);
          if (!bankDir) return undefined;
          for (const name of [`${id}.jpg`, `${id}.jpeg`, `${id}.png`]) {
            const file = join(bankDir, name);
            if (existsSync(file)) return new Uint8Array(readFileSync(file));
          }
          return stimulusJpeg(id).catch(() => undefined);
        },
        get simulated() { return simulated; },
        mask: readMaskForDisplay(session.modelDir, opts.processing),
      }, { host: session.host, port: session.port, token, plugins: opts.plugins, fdThresholdMm: opts.processing.fdThresholdMm });
      process.stdout.write(`${opts.label}: dashboard at ${dashboard.url}\n`);
      opts.onListening?.(dashboard.url);
    }

    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    await runOnce();
    if (dashboard && opts.keepServing && !interrupted) {
      process.stdout.write('run ended; the dashboard keeps serving (start the replay again from the page); press Ctrl-C to quit\n');
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await dashboard?.close();
    await stimuli?.close();
    recorder?.close();
    bus.complete();
  }
}

/** Returns the line printed at Ctrl-C: the run stops early, and where its report and record go. */
export function stoppingMessage(session: Pick<SessionFlags, 'reportFile' | 'recordTo'>): string {
  const outputs: string[] = [];
  if (session.reportFile) outputs.push(`the report to ${session.reportFile}`);
  if (session.recordTo) outputs.push(`the record and its report.json to ${session.recordTo}`);
  const where = outputs.length > 0 ? `Writing ${outputs.join(' and ')}.` : 'Only the summary is printed (no --report or --record-to).';
  return `stopping the run now: the report covers the volumes received so far. ${where}`;
}

/** Returns the summary line of a resumed session: downtime, volumes from the record, volumes missed. */
export function formatResume(info: ResumeInfo): string {
  const downtime = info.downtimeSec !== undefined ? `${info.downtimeSec.toFixed(1)} s` : 'unknown';
  const range = info.recordVolumeRange ? ` (${info.recordVolumeRange[0]}-${info.recordVolumeRange[1]})` : '';
  const missed = info.volumesMissed.length > 0 ? info.volumesMissed.join(', ') : 'none';
  return `resumed from ${info.record}: downtime ${downtime}, ${info.volumesFromRecord} volumes from the record${range}, volumes missed: ${missed}`;
}

let recordFailures = 0;

/** Passes an event to the recorder. A failed write is logged (the first 10 and then every 100th) and not rethrown into the bus. */
function recordEvent(recorder: SessionRecorder | undefined, e: PipelineEvent): void {
  if (!recorder) return;
  try {
    recorder.onEvent(e);
  } catch (err) {
    recordFailures++;
    if (recordFailures <= 10 || recordFailures % 100 === 0) {
      logger.error({ err, type: e.type, failures: recordFailures }, 'an event could not be written to the session record');
    }
  }
}

/** Maps the first recorded trigger or volume 0 receive time onto this process's clock (performance.now()). */
function recordedClockZeroMs(record: RecordContents, kind: 'trigger' | 'volume'): number | undefined {
  const line = kind === 'trigger'
    ? record.events.find((e) => e.type === 'trigger')
    : record.volumes.find((v) => v.volIdx === 0)?.line;
  const epochMs = line?.receivedAtEpochMs;
  return typeof epochMs === 'number' ? epochMs - performance.timeOrigin : undefined;
}

/**
 * Leaves trials that the record shows as rendered (a final decode and a non-provisional frame)
 * out of the render stage, so that a resumed session does not render them again.
 */
function skipRenderedTrials(render: SessionConfig['render'], record: RecordContents | undefined): SessionConfig['render'] {
  if (!render || !record) return render;
  const decodedFinal = new Set(record.events.filter((e) => e.type === 'decoded' && e.final === true).map((e) => Number(e.trialId)));
  const rendered = new Set(record.events
    .filter((e) => e.type === 'frame' && e.provisional === false && decodedFinal.has(Number(e.trialId)))
    .map((e) => Number(e.trialId)));
  if (rendered.size === 0) return render;
  // NOTE: the report of the resumed process counts no frames (and no image metrics) for these trials; their frames stay in the record's frames/.
  return (decoded$, ctx) => render(decoded$.pipe(filter((d) => !rendered.has(d.trialId))), ctx);
}
