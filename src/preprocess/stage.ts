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
  publish(event: PipelineEvent): void;
}

const ZERO_MOTION: MotionParams = { translationMm: [0, 0, 0], rotationRad: [0, 0, 0] };

/** Framewise displacement (Power et al. 2012): rotations as arc length on a 50 mm sphere. */
export function framewiseDisplacementMm(prev: MotionParams, cur: MotionParams, radiusMm = 50): number {
  let fd = 0;
  for (let i = 0; i < 3; i++) fd += Math.abs(cur.translationMm[i] - prev.translationMm[i]);
  for (let i = 0; i < 3; i++) fd += radiusMm * Math.abs(cur.rotationRad[i] - prev.rotationRad[i]);
  return fd;
}

export type PreprocessOutput = RunInfo | MaskedVolume | SourceEvent;

export function preprocessVolumes(config: PreprocessConfig): OperatorFunction<SourceEvent, PreprocessOutput> {
  return (source) => new Observable<PreprocessOutput>((subscriber) => {
    const log = stageLogger('preprocess', { runId: config.runId });
    let info: RunInfo | undefined;
    let mask: Mask | undefined;
    let registrar: Registrar | undefined;
    let prevMotion: MotionParams = ZERO_MOTION;
    let prevValues: Float32Array | undefined;

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
          subscriber.next(event);
          return;
        }
        if (!info || !mask) {
          subscriber.error(new Error('preprocess: a volume arrived before run-info (source contract broken)'));
          return;
        }
        const startMs = nowMs();
        try {
          checkSameGrid(mask, event.shape, event.affine, `volume ${event.volIdx} (${event.sourceId})`);
        } catch (err) {
          const message = (err as MindeyeError).message;
          log.warn({ volIdx: event.volIdx, err: message }, 'volume rejected');
          config.publish({ type: 'warning', runId: config.runId, kind: 'invalid', volIdx: event.volIdx, message, code: 'VOLUME_GRID_MISMATCH' });
          return;
        }
        const flags: QualityFlag[] = [];
        let motion = ZERO_MOTION;
        let values: Float32Array;
        if (info.motionCorrection && config.createRegistrar) {
          registrar ??= config.createRegistrar(info, event, mask);
          const reg = registrar.register(event.data);
          motion = reg.motion;
          flags.push(...reg.flags);
          if (reg.message) log.warn({ volIdx: event.volIdx, flags: reg.flags }, reg.message);
          values = registrar.sampleAt(event.data, mask.indices);
        } else {
          values = applyMask(mask, event.data);
        }
        let nanCount = 0;
        let allZero = true;
        for (let i = 0; i < values.length; i++) {
          const v = values[i];
          if (Number.isNaN(v)) { nanCount++; values[i] = 0; } else if (v !== 0) allZero = false;
        }
        if (nanCount > 0 && !flags.includes('nan')) flags.push('nan');
        if (allZero && !flags.includes('all-zero')) flags.push('all-zero');
        const fdMm = event.volIdx === 0 || !prevValues ? 0 : framewiseDisplacementMm(prevMotion, motion);
        if (fdMm > config.fdThresholdMm && !flags.includes('fd')) flags.push('fd');
        let dvars = 0;
        if (prevValues) {
          for (let i = 0; i < values.length; i++) dvars += (values[i] - prevValues[i]) ** 2;
          dvars = Math.sqrt(dvars / values.length);
        }
        prevValues = values;
        prevMotion = motion;
        const masked: MaskedVolume = {
          type: 'masked-volume', runId: config.runId, volIdx: event.volIdx, acqTimeSec: event.acqTimeSec,
          receivedAtMs: event.receivedAtMs, motion, fdMm, dvars, values, flags,
        };
        if (flags.length > 0) {
          config.publish({ type: 'warning', runId: config.runId, kind: 'flagged', volIdx: event.volIdx,
            message: `volume ${event.volIdx} flagged: ${flags.join(', ')}${nanCount ? ` (${nanCount} NaN voxels set to 0)` : ''}` });
        }
        config.publish(masked);
        config.publish({ type: 'stage-timing', runId: config.runId, stage: 'mask+motion', volIdx: event.volIdx, startMs, endMs: nowMs() });
        subscriber.next(masked);
      },
      error: (err) => subscriber.error(err),
      complete: () => subscriber.complete(),
    });
    return () => subscription.unsubscribe();
  });
}
