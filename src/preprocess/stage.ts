/**
 * The preprocess stage: volume -> masked volume, with motion correction and quality flags.
 *
 *   source:  run-info ── v0 ─── v1 ─── gap ─── v3 ──|
 *   output:  run-info ── m0 ─── m1 ─── gap ─── m3 ──|
 *
 * Volumes become MaskedVolume events in the same order; run-info, gap and warning events pass
 * through. A volume that cannot be processed (wrong grid) becomes a warning of kind 'invalid'
 * and is counted as dropped; the run goes on. Completion and errors pass through; unsubscribing
 * unsubscribes from the source.
 */
import { Observable, type OperatorFunction } from 'rxjs';
import { MindeyeError } from '../errors.ts';
import { nowMs, type MaskedVolume, type MotionParams, type PipelineEvent, type QualityFlag, type RunInfo, type Volume } from '../events.ts';
import type { SourceEvent } from '../ingest/source.ts';
import { stageLogger } from '../log.ts';
import { applyMask, checkSameGrid, type Mask } from './mask.ts';
import { QualityMonitor } from './quality.ts';

/** Rigid registration of volumes to a reference (implemented in src/preprocess/motion.ts). */
export interface Registrar {
  register(data: Float32Array): { motion: MotionParams; flags: QualityFlag[]; message?: string };
  sampleAt(data: Float32Array, voxelIndices: Int32Array, out?: Float32Array): Float32Array;
}

export interface PreprocessConfig {
  runId: string;
  /** Called with run-info to get the mask for this grid (throws on a grid mismatch). */
  maskFor(info: RunInfo): Mask;
  /** Called once with run-info and the first volume when motion correction is on. */
  createRegistrar?(info: RunInfo, firstVolume: Volume, mask: Mask): Registrar;
  fdThresholdMm: number;
  /**
   * Index of the run volume that is the motion reference (default 0). Volumes before it wait
   * until it arrives, then go through in order; a reference NIfTI needs no wait (index 0).
   */
  referenceIndex?: number;
  publish(event: PipelineEvent): void;
}

const ZERO_MOTION: MotionParams = { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] };

export type PreprocessOutput = RunInfo | MaskedVolume | SourceEvent;

export function preprocessVolumes(config: PreprocessConfig): OperatorFunction<SourceEvent, PreprocessOutput> {
  return (source) => new Observable<PreprocessOutput>((subscriber) => {
    const log = stageLogger('preprocess', { runId: config.runId });
    let info: RunInfo | undefined;
    let mask: Mask | undefined;
    let registrar: Registrar | undefined;
    let quality: QualityMonitor | undefined;
    const referenceIndex = config.referenceIndex ?? 0;
    // Volumes (and the events between them) that wait until the reference volume arrives.
    const waiting: SourceEvent[] = [];

    const processVolume = (event: Volume) => {
      const startMs = nowMs();
      try {
        checkSameGrid(mask!, event.shape, event.affine, `volume ${event.volIdx} (${event.sourceId})`);
      } catch (err) {
        const message = (err as MindeyeError).message;
        log.warn({ volIdx: event.volIdx, err: message }, 'volume rejected');
        config.publish({ type: 'warning', runId: config.runId, kind: 'invalid', volIdx: event.volIdx, message, code: 'VOLUME_GRID_MISMATCH' });
        return;
      }
      const flags: QualityFlag[] = [];
      let motion = ZERO_MOTION;
      let values: Float32Array;
      // 'motion' times the rigid registration, 'mask' the sampling of the mask voxels, the
      // non-finite check and the quality update; 'mask+motion' covers both.
      let maskStartMs = startMs;
      if (registrar) {
        const reg = registrar.register(event.data);
        maskStartMs = nowMs();
        config.publish({ type: 'stage-timing', runId: config.runId, stage: 'motion', volIdx: event.volIdx, startMs, endMs: maskStartMs });
        motion = reg.motion;
        flags.push(...reg.flags);
        if (reg.message) log.warn({ volIdx: event.volIdx, flags: reg.flags }, reg.message);
        values = registrar.sampleAt(event.data, mask!.indices);
      } else {
        values = applyMask(mask!, event.data);
      }
      let nanCount = 0;
      let allZero = true;
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) { nanCount++; values[i] = 0; } else if (v !== 0) allZero = false;
      }
      if (nanCount > 0 && !flags.includes('nan')) flags.push('nan');
      if (allZero && !flags.includes('all-zero')) flags.push('all-zero');
      quality ??= new QualityMonitor({ shape: info!.shape, indices: mask!.indices, fdThresholdMm: config.fdThresholdMm });
      const q = quality.update(values, registrar ? motion : null, flags);
      const masked: MaskedVolume = {
        type: 'masked-volume', runId: config.runId, volIdx: event.volIdx, acqTimeSec: event.acqTimeSec,
        receivedAtMs: event.receivedAtMs, motion, fdMm: q.fdMm, dvars: q.dvars, values, flags: q.flags,
      };
      if (q.flags.length > 0) {
        config.publish({ type: 'warning', runId: config.runId, kind: 'flagged', volIdx: event.volIdx,
          message: `volume ${event.volIdx} flagged: ${q.flags.join(', ')}${nanCount ? ` (${nanCount} non-finite voxels set to 0)` : ''}` });
      }
      const endMs = nowMs();
      config.publish(masked);
      config.publish({ type: 'stage-timing', runId: config.runId, stage: 'mask', volIdx: event.volIdx, startMs: maskStartMs, endMs });
      config.publish({ type: 'stage-timing', runId: config.runId, stage: 'mask+motion', volIdx: event.volIdx, startMs, endMs });
      subscriber.next(masked);
    };

    const subscription = source.subscribe({
      next(event) {
        if (event.type === 'run-info') {
          info = event;
          try {
            mask = config.maskFor(event);
          } catch (err) {
            subscriber.error(err);
            return;
          }
          subscriber.next(event);
          return;
        }
        if (event.type !== 'volume') {
          if (waiting.length > 0) waiting.push(event);
          else subscriber.next(event);
          return;
        }
        if (!info || !mask) {
          subscriber.error(new Error('preprocess: a volume arrived before run-info (source contract broken)'));
          return;
        }
        try {
          if (info.motionCorrection && config.createRegistrar && !registrar) {
            if (event.volIdx < referenceIndex) {
              waiting.push(event);
              return;
            }
            registrar = config.createRegistrar(info, event, mask);
            for (const queued of waiting.splice(0)) {
              if (queued.type === 'volume') processVolume(queued);
              else subscriber.next(queued);
            }
          }
          processVolume(event);
        } catch (err) {
          // A registrar that cannot be built (a grid motion correction cannot handle) or a
          // failing stage ends the run with the error, which the command reports.
          subscriber.error(err);
        }
      },
      error: (err) => subscriber.error(err),
      complete: () => {
        if (waiting.length > 0) {
          config.publish({ type: 'warning', runId: config.runId, kind: 'other',
            message: `the run ended before motion reference volume ${referenceIndex}; ${waiting.filter((e) => e.type === 'volume').length} volumes waiting for it go through without motion correction` });
          try {
            for (const queued of waiting.splice(0)) {
              if (queued.type === 'volume') processVolume(queued);
              else subscriber.next(queued);
            }
          } catch (err) {
            subscriber.error(err);
            return;
          }
        }
        subscriber.complete();
      },
    });
    return () => subscription.unsubscribe();
  });
}
