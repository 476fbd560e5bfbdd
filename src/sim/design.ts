/**
 * NSD run timing and the per-TR design vector.
 *
 * An NSD run has 75 slots of 4 s: the image is shown for
 * 3 s, then 1 s of blank. 62 or 63 slots carry an image and the rest are blank. The prepared
 * time series has a TR of 4/3 s and 226 volumes, so a slot is exactly 3 TRs and every onset
 * falls on a TR boundary. The design TSV has one row per TR for the first 225 TRs (75 x 3):
 * the 1-based image id at a trial's onset TR, else 0.
 */
import { streamFor } from './prng.ts';

export const TR_SEC = 4 / 3;
export const VOLUMES_PER_RUN = 226;
export const SLOTS_PER_RUN = 75;
export const TRS_PER_SLOT = 3;
export const SLOT_SEC = 4;
export const STIMULUS_SEC = 3;
export const DESIGN_ROWS = SLOTS_PER_RUN * TRS_PER_SLOT;

export interface SimTrial {
  /** 0-based trial index within the run. */
  trialIndex: number;
  /** 0-based slot (0..74). */
  slot: number;
  onsetVolume: number;
  onsetSec: number;
  durationSec: number;
  /** 1-based image id (the imgBrick row is id - 1). */
  imageId: number;
}

/**
 * Returns the trial count of a run: 63 in odd-numbered runs and 62 in even-numbered runs, so
 * that 12 runs hold 750 trials as an NSD session does. NSD's own runs have 62 or 63 trials, but
 * the odd/even rule is this simulator's choice.
 */
export function trialCountForRun(runNumber: number): number {
  return runNumber % 2 === 1 ? 63 : 62;
}

/**
 * Places `imageIds` (in presentation order) into the run's 75 slots; the blank slots are
 * drawn from the run's own random stream.
 */
export function layoutRun(seed: number, session: number, run: number, imageIds: number[]): SimTrial[] {
  if (imageIds.length > SLOTS_PER_RUN) {
    throw new RangeError(`layoutRun: ${imageIds.length} images do not fit in ${SLOTS_PER_RUN} slots`);
  }
  const rng = streamFor(seed, 'blank-slots', session, run);
  const slots = rng.shuffle(Array.from({ length: SLOTS_PER_RUN }, (_, i) => i)).slice(0, imageIds.length);
  slots.sort((a, b) => a - b);
  return slots.map((slot, trialIndex) => ({
    trialIndex,
    slot,
    onsetVolume: slot * TRS_PER_SLOT,
    onsetSec: slot * SLOT_SEC,
    durationSec: STIMULUS_SEC,
    imageId: imageIds[trialIndex],
  }));
}

/** Formats the design TSV: 225 lines, one integer per TR, no header. */
export function designTsv(trials: SimTrial[]): string {
  const rows = new Array<number>(DESIGN_ROWS).fill(0);
  for (const trial of trials) rows[trial.onsetVolume] = trial.imageId;
  return rows.join('\n') + '\n';
}
