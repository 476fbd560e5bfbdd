/**
 * A session: one run carried from a source through preprocess, the trial GLM, decode and
 * render, with every event published on one bus that the report, the recorder and the dashboard
 * read.
 *
 *   source ─▶ preprocessVolumes ─▶ estimateTrials ─▶ decodeTrials ─▶ render ─▶ (frames)
 *      └──────────────┴──────────────────┴──────────────┴─────────────┴──▶ bus (PipelineEvent)
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { readF32 } from '../decode/manifest.ts';
import { Subject, tap, type Observable } from 'rxjs';
import { MindeyeError } from '../errors.ts';
import { nowMs, type PipelineEvent, type RunInfo, type Decoded, type TrialSpec, type Volume } from '../events.ts';
import { Pacer } from '../ingest/pacing.ts';
import { formatSpeed, type Source, type Speed } from '../ingest/source.ts';
import { logger } from '../log.ts';
import { checkSameGrid, loadMask, type Mask } from '../preprocess/mask.ts';
import { BetaNormalizer } from '../preprocess/normalize.ts';
import { preprocessVolumes, type Registrar } from '../preprocess/stage.ts';
import { estimateTrials } from '../preprocess/trial-stage.ts';
import { DEFAULT_DECODE_QUEUE, decodeTrials } from '../decode/stage.ts';
import { loadModel, type LoadedModel } from '../decode/model.ts';
import type { Device } from '../decode/ort.ts';
import type { ProcessingOptions } from './options.ts';
import { ReportCollector, brainRetrievalTop1, type RunReport } from './report.ts';
import { join } from 'node:path';

export interface SessionConfig {
  runId?: string;
  source: Source;
  processing: ProcessingOptions;
  modelDir?: string;
  device: Device;
  speed: Speed;
  topK?: number;
  reportFile?: string;
  /** Extra consumers of the bus (dashboard, recorder, tests). */
  onEvent?(event: PipelineEvent): void;
  /** Creates the motion registrar for a run (src/preprocess/motion.ts); required when motion is on. */
  createRegistrar?(info: RunInfo, first: import('../events.ts').Volume, mask: Mask): Registrar;
  /**
   * Render stage factory (src/render/): maps decoded outputs to frames published on the bus.
   * Returns the frames observable; omitted when the model makes no frames.
   */
  render?(decoded$: Observable<Decoded>, ctx: { runId: string; model: LoadedModel; publish(e: PipelineEvent): void; collector: ReportCollector; pacer: Pacer }): Observable<unknown>;
  /** Adds per-trial metrics (PixCorr, SSIM) to the report once the run ended. */
  finishReport?(collector: ReportCollector, model: LoadedModel | undefined): Promise<void>;
  /** Pacer shared with a dashboard's controls; created from `speed` when omitted. */
  pacer?: Pacer;
  /** Stops the run: the pipeline is unsubscribed and the report covers what was processed. */
  signal?: AbortSignal;
  /** Trials announced during the run (stimulus onsets from the feedback input channel). */
  trials$?: Observable<TrialSpec>;
  /**
   * Write-ahead for received volumes (the session record): called with each volume before the
   * bus and the pipeline see it. A throw is reported as a warning and the volume is still processed.
   */
  writeAhead?(volume: Volume): void;
  /** Adds fields to the report before it is written (the resume section, the recorded speed). */
  amendReport?(report: RunReport): void;
}

function loadHrfLibrary(model: LoadedModel) {
  const hrf = model.manifest.hrf;
  if (hrf?.kind !== 'library') return undefined;
  const indexFile = join(model.dir, hrf.index);
  const index = new Uint8Array(readFileSync(indexFile));
  if (index.length !== model.voxelCount) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The HRF index does not have one entry per voxel.', {
      file: indexFile, field: 'hrf.index', value: `${index.length} uint8 values`, expected: `${model.voxelCount} (voxels.count)`, fix: 'write one HRF index per voxel, in mask order',
    });
  }
  const library = readF32(join(model.dir, hrf.library), hrf.count * hrf.samples, 'hrf.library');
  const badIndex = index.find((i) => i >= hrf.count);
  if (badIndex !== undefined) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'An HRF index points past the library.', {
      file: indexFile, field: 'hrf.index', value: badIndex, expected: `0 to ${hrf.count - 1}`, fix: 'rewrite the index or the library',
    });
  }
  return { index, library, samples: hrf.samples, dtSec: hrf.dtSec };
}

export interface SessionResult {
  runId: string;
  /** True when the run was stopped through `signal` before its source ended. */
  aborted: boolean;
  report: RunReport;
  collector: ReportCollector;
  model?: LoadedModel;
}

export async function runSession(config: SessionConfig): Promise<SessionResult> {
  const runId = config.runId ?? randomUUID().slice(0, 8);
  const log = logger.child({ runId });
  const bus = new Subject<PipelineEvent>();
  const collector = new ReportCollector();
  bus.subscribe((e) => {
    collector.onEvent(e);
    config.onEvent?.(e);
  });
  const publish = (e: PipelineEvent) => bus.next(e);
  const pacer = config.pacer ?? new Pacer(config.speed);

  const model = config.modelDir ? await loadModel(config.modelDir, { device: config.device }) : undefined;
  const maskFile = config.processing.maskFile ?? (model?.manifest.voxels.mask ? join(model.dir, model.manifest.voxels.mask) : undefined);
  if (!maskFile) {
    throw new MindeyeError('CLI_USAGE', 'No mask: the voxels to decode are unknown.', {
      field: '--mask', fix: 'pass --mask ROI.nii.gz, or a --model whose manifest names its mask',
    });
  }
  const maskRule = config.processing.maskRule ?? (model?.manifest.voxels.maskRule as Mask['rule'] | undefined) ?? (maskFile.includes('nsdgeneral') ? 'value == 1' : 'value > 0');
  const mask = loadMask(maskFile, maskRule);
  // The model's voxel count is checked once the run's grid is known (maskFor), so that a mask on
  // another grid is reported as such rather than as a voxel count mismatch.
  const checkModelVoxels = () => {
    if (!model || model.voxelCount === mask.indices.length) return;
    throw new MindeyeError('MODEL_VOXELS_MISMATCH', 'The model expects a different number of voxels than the mask selects.', {
      file: model.manifestPath, field: 'voxels.count', value: model.voxelCount,
      expected: `${mask.indices.length} (voxels with ${mask.rule} in ${mask.file})`,
      fix: 'use the mask the model was trained with (omit --mask to use the model\'s own mask) or refit the model on this mask',
    });
  };

  let normalizeKind = config.processing.normalize;
  if (normalizeKind === 'auto') normalizeKind = model?.calibration ? 'calibration' : 'running';
  if (normalizeKind === 'calibration' && !model?.calibration) {
    throw new MindeyeError('CLI_USAGE', 'Calibration normalisation needs a model with calibration statistics.', {
      field: '--normalize', value: 'calibration', fix: 'use --normalize running, or a model whose manifest has normalization.kind "calibration"',
    });
  }

  let motionOn = false;
  let volumesNotRecorded = 0;
  const startedMs = nowMs();
  const source$ = config.source({ runId, pacing: pacer, publishTiming: publish }).pipe(
    tap((e) => {
      if (e.type === 'run-info') {
        motionOn = config.processing.motion === 'on' || (config.processing.motion === 'auto' && e.motionCorrection);
        e.motionCorrection = motionOn;
        if (motionOn && !config.createRegistrar) {
          throw new MindeyeError('CLI_USAGE', 'Motion correction was requested but is not available in this build.', {
            field: '--motion', value: config.processing.motion, fix: 'use --motion off',
          });
        }
        log.info({ source: e.source, trSec: e.trSec, shape: e.shape, volumes: e.expectedVolumes, trials: e.trials?.length, motion: motionOn }, 'run started');
      }
      if (e.type === 'volume' && config.writeAhead && !writeAheadOrWarn(config.writeAhead, e, publish, log)) {
        if (volumesNotRecorded === 0) collector.problems.push(`the session record lacks volume ${e.volIdx} (and any later one counted in volumesNotRecorded): it could not be written`);
        volumesNotRecorded++;
      }
      publish(e);
    }),
  );

  const masked$ = source$.pipe(
    preprocessVolumes({
      runId,
      maskFor: (info) => {
        checkSameGrid(mask, info.shape, info.affine, `the run's images (${info.source})`);
        checkModelVoxels();
        return mask;
      },
      createRegistrar: config.createRegistrar,
      fdThresholdMm: config.processing.fdThresholdMm,
      referenceIndex: typeof config.processing.motionReference === 'number' ? config.processing.motionReference : 0,
      publish,
    }),
  );
  const estimates$ = masked$.pipe(
    estimateTrials({
      runId,
      processing: config.processing,
      createNormalizer: (v) => new BetaNormalizer(normalizeKind as 'calibration' | 'running' | 'none', v, model?.calibration),
      trials$: config.trials$,
      hrfLibrary: model ? loadHrfLibrary(model) : undefined,
      publish,
    }),
  );

  let tail$: Observable<unknown> = estimates$;
  if (model) {
    const decoded$ = estimates$.pipe(
      decodeTrials({
        runId, model, topK: config.topK ?? 5, maxBatch: 8, publish,
        onSkipped: () => { collector.skipped.decodes++; },
        onQueueLength: (length) => {
          const queue = (collector.queues.decode ??= { bound: DEFAULT_DECODE_QUEUE, highWater: 0 });
          queue.highWater = Math.max(queue.highWater, length);
        },
      }),
    );
    tail$ = config.render ? config.render(decoded$, { runId, model, publish, collector, pacer }) : decoded$;
  }

  let error: unknown;
  let aborted = false;
  await new Promise<void>((resolve) => {
    const subscription = tail$.subscribe({
      error: (err) => { error = err; resolve(); },
      complete: () => resolve(),
    });
    config.signal?.addEventListener('abort', () => {
      aborted = true;
      subscription.unsubscribe();
      resolve();
    }, { once: true });
  });
  const endedAtMs = nowMs();
  publish({ type: 'run-end', runId, volumesReceived: collector.volumesReceived, endedAtMs, error: error ? String((error as Error).message ?? error) : undefined });
  if (error) {
    bus.complete();
    await model?.close();
    throw error;
  }

  await config.finishReport?.(collector, model);
  if (model?.bank) {
    const specs = collector.info?.trials ?? [];
    const brain = brainRetrievalTop1([...collector.finalDecoded.values()], model.bank, (id) => specs.find((t) => t.trialId === id)?.testImage !== false);
    if (brain) {
      collector.extraSummary.brainRetrievalTop1 = brain.top1;
      collector.extraSummary.brainRetrievalCandidates = brain.candidates;
    }
  }
  const report = collector.build({
    source: collector.info?.source ?? 'unknown',
    model: model ? `${model.manifest.name} (${model.dir})` : 'none',
    device: config.device,
    motion: motionOn,
    speed: formatSpeed(config.speed),
    ...(collector.info?.simulated ? { simulated: true } : {}),
  }, endedAtMs - startedMs);
  if (volumesNotRecorded > 0) report.summary.volumesNotRecorded = volumesNotRecorded;
  config.amendReport?.(report);
  if (config.reportFile) writeFileSync(config.reportFile, JSON.stringify(report, null, 2) + '\n');
  log.info({ volumes: collector.volumesProcessed, trials: collector.finalDecoded.size, aborted }, aborted ? 'run stopped' : 'run ended');
  bus.complete();
  return { runId, aborted, report, collector, model };
}

let writeAheadFailures = 0;

/**
 * Runs the write-ahead for a volume and returns false when it failed. A failure (disk full, folder removed) becomes a warning on
 * the bus for every volume, and an error log for the first 10 and then every 100th.
 */
function writeAheadOrWarn(writeAhead: (v: Volume) => void, volume: Volume, publish: (e: PipelineEvent) => void, log: typeof logger): boolean {
  try {
    writeAhead(volume);
    return true;
  } catch (err) {
    const message = `volume ${volume.volIdx} could not be recorded, so the session record lacks it: ${(err as Error).message}`;
    writeAheadFailures++;
    if (writeAheadFailures <= 10 || writeAheadFailures % 100 === 0) log.error({ err, volIdx: volume.volIdx, failures: writeAheadFailures }, message);
    publish({ type: 'warning', runId: volume.runId, kind: 'other', volIdx: volume.volIdx, code: 'RECORD_WRITE_FAILED', message });
    return false;
  }
}
