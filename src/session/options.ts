/**
 * Processing options shared by replay, watch, serve and fit, so that calibration betas are
 * computed exactly as live betas are.
 */
import type { DriftModel, GlmMethod } from '../preprocess/glm.ts';
import type { MaskRule } from '../preprocess/mask.ts';
import type { NormalizeKind } from '../preprocess/normalize.ts';

export type MotionMode = 'auto' | 'on' | 'off';

export interface ProcessingOptions {
  motion: MotionMode;
  /** Volume index of the motion reference, or a reference NIfTI path. */
  motionReference: number | string;
  glm: GlmMethod;
  windowSec: number;
  drift: DriftModel;
  motionRegressors: boolean;
  /** Leave flagged volumes (FD or DVARS over threshold, spikes) out of the GLM. */
  censor: boolean;
  fdThresholdMm: number;
  normalize: NormalizeKind | 'auto';
  maskFile?: string;
  maskRule?: MaskRule;
}

export const DEFAULT_PROCESSING: ProcessingOptions = {
  motion: 'auto',
  motionReference: 0,
  glm: 'lss',
  // The canonical HRF peaks about 5 s after onset; 5 s past the offset covers that peak for
  // events of a few seconds (NSD's 3 s images) and leaves the estimate early enough to be live.
  windowSec: 5,
  drift: { kind: 'poly', order: 2 },
  motionRegressors: false,
  censor: false,
  fdThresholdMm: 0.5,
  normalize: 'auto',
};
