/**
 * The Natural Scenes Dataset layout (and datasets written in it by `mindeye-rt simulate`).
 *
 * Under the NSD root, for subject AA (01..08), session NN and run CC:
 * - time series: nsddata_timeseries/ppdata/subjAA/func1pt8mm/timeseries/timeseries_sessionNN_runCC.nii.gz
 *   (int16, TR 4/3 s, 226 volumes, already motion-corrected in the real NSD)
 * - design:      nsddata_timeseries/ppdata/subjAA/func1pt8mm/design/design_sessionNN_runCC.tsv
 * - ROI:         nsddata/ppdata/subjAA/func1pt8mm/roi/nsdgeneral.nii.gz (-1, 0, 1)
 * - stimuli:     nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5, dataset /imgBrick
 *                (N, 425, 425, 3) uint8; HDF5 row = 73k id - 1
 * - optional `mindeye-rt.json` at the root, written by `simulate`: { simulated, motionCorrected }.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { readNiftiHeader } from '../io/nifti.ts';
import { readNsdDesign } from '../io/tsv.ts';
import { niftiReplaySource } from './replay.ts';
import type { Source } from './source.ts';

export interface NsdRunRef {
  root: string;
  subject: number;
  session: number;
  run: number;
}

const pad2 = (n: number) => String(n).padStart(2, '0');

export function nsdPaths(ref: NsdRunRef) {
  const subj = `subj${pad2(ref.subject)}`;
  const func = join(ref.root, 'nsddata_timeseries/ppdata', subj, 'func1pt8mm');
  return {
    timeseries: join(func, 'timeseries', `timeseries_session${pad2(ref.session)}_run${pad2(ref.run)}.nii.gz`),
    design: join(func, 'design', `design_session${pad2(ref.session)}_run${pad2(ref.run)}.tsv`),
    roi: join(ref.root, 'nsddata/ppdata', subj, 'func1pt8mm/roi/nsdgeneral.nii.gz'),
    stimuli: join(ref.root, 'nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5'),
    datasetInfo: join(ref.root, 'mindeye-rt.json'),
    stimulusSplit: join(ref.root, 'simulation/stimuli.json'),
  };
}

export interface DatasetInfo {
  simulated?: boolean;
  motionCorrected?: boolean;
}

export function readDatasetInfo(root: string): DatasetInfo {
  const file = join(root, 'mindeye-rt.json');
  if (!existsSync(file)) return {};
  return JSON.parse(readFileSync(file, 'utf8')) as DatasetInfo;
}

/** Test-split stimulus ids of a simulated dataset (simulation/stimuli.json), if present. */
function readTestIds(file: string): Set<string> | undefined {
  if (!existsSync(file)) return undefined;
  type Entry = { id: number | string; split: string };
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as Entry[] | { images?: Entry[]; stimuli?: Entry[] };
  const list = Array.isArray(parsed) ? parsed : parsed.images ?? parsed.stimuli;
  if (!Array.isArray(list)) return undefined;
  return new Set(list.filter((e) => e.split === 'test').map((e) => String(e.id)));
}

export function nsdSource(ref: NsdRunRef, opts: { onFirstVolume?(bytes: number): void } = {}): { source: Source; paths: ReturnType<typeof nsdPaths>; info: DatasetInfo } {
  const paths = nsdPaths(ref);
  for (const [field, file] of [['time series', paths.timeseries], ['design', paths.design]] as const) {
    if (!existsSync(file)) {
      throw new MindeyeError('CLI_USAGE', `NSD ${field} file not found.`, {
        file, field: '--nsd-root/--subject/--session/--run', value: `${ref.root} subj${pad2(ref.subject)} session ${ref.session} run ${ref.run}`,
        fix: 'check the NSD root and the subject, session and run numbers',
      });
    }
  }
  const info = readDatasetInfo(ref.root);
  const testIds = readTestIds(paths.stimulusSplit);
  const header = readNiftiHeader(paths.timeseries);
  const trSec = header.trSec > 0 ? header.trSec : 4 / 3;
  const trials = readNsdDesign(paths.design, { trSec, volumeCount: header.volumes });
  if (testIds) for (const t of trials) t.testImage = testIds.has(t.stimulusId);
  const source = niftiReplaySource({
    file: paths.timeseries,
    trials,
    description: `NSD subj${pad2(ref.subject)} session ${ref.session} run ${ref.run} (${paths.timeseries})`,
    subject: String(ref.subject), session: String(ref.session), run: String(ref.run),
    needsMotionCorrection: info.motionCorrected === false,
    simulated: info.simulated === true,
    trSecOverride: header.trSec > 0 ? undefined : trSec,
    onFirstVolume: opts.onFirstVolume,
  });
  return { source, paths, info };
}
