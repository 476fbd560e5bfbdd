/** `mindeye-rt watch`: decode volumes as a scanner export folder fills. */
import { existsSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';
import { watchSource } from '../ingest/watch.ts';
import { asScannerInput, withDesign } from '../ingest/with-design.ts';
import { PROCESSING_FLAGS, PROCESSING_HELP, SESSION_FLAGS, SESSION_HELP, parseFlags, processingFromFlags, sessionFromFlags } from './flags.ts';
import { DESIGN_FLAGS, DESIGN_HELP, defaultRecordDir, designFromFlags, expectedVolumesFromFlags, resumedProcessing, sessionToken } from './live-flags.ts';
import { runLiveSession } from './live.ts';
import { existingRecord } from '../session/record.ts';

export const help = `Usage: mindeye-rt watch --dir DIR [--format auto|siemens|siemens-xa|ge|philips|nifti] [--series N]
                        [--events TSV | --design TSV] [options]

Watches a scanner's real-time export folder and decodes each volume as soon as its file is
complete: Siemens mosaic DICOM (001_SSSSSS_VVVVVV.dcm), Siemens XA enhanced DICOM, GE per-slice
DICOM, Philips PAR/REC, or one NIfTI per volume. Partial writes are waited for, out-of-order
files reordered, duplicates dropped with a warning, and a missing volume becomes a gap after
--gap-timeout-ms. Motion correction is on by default (--motion auto). The session is recorded to
a new folder sessions/<date-time>/ unless --record-to says otherwise.

Resume: started again with the --record-to folder of a session that was interrupted (a crash,
kill -9), watch re-runs the recorded volumes through preprocessing and the GLM, then takes the
files in the folder from the next volume on (including those that arrived while it was down),
follows the recorded series, and reports the downtime. The recorded processing options and
model are kept: a flag with another value gets a warning. See docs/record.md.

Folder:
  --dir DIR                the export folder to watch
  --format F               file format (default auto: detected from each file's bytes)
  --series N               series number to take (default: the first new series)
  --include-existing       also take files already in the folder when watching starts
  --tr S                   repetition time in seconds for files that do not record it
  --gap-timeout-ms MS      wait for a missing volume this long (default 5000)
  --stable-ms MS           quiet time after a file event before it is read (default 30)
  --corrupt-timeout-ms MS  report a file that stays incomplete this long as corrupt (default 2000)

${DESIGN_HELP}

${PROCESSING_HELP}

${SESSION_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    ...PROCESSING_FLAGS, ...SESSION_FLAGS, ...DESIGN_FLAGS,
    dir: { type: 'string' }, format: { type: 'string', default: 'auto' }, series: { type: 'string' },
    'include-existing': { type: 'boolean', default: false }, tr: { type: 'string' }, 'gap-timeout-ms': { type: 'string' },
    'stable-ms': { type: 'string' }, 'corrupt-timeout-ms': { type: 'string' },
  }, 'watch');
  if (values.dir === undefined || !existsSync(String(values.dir))) {
    throw new MindeyeError('CLI_USAGE', 'The folder to watch does not exist.', { field: '--dir', value: values.dir, fix: 'create the export folder or correct --dir' });
  }
  const formats = ['auto', 'siemens', 'siemens-xa', 'ge', 'philips', 'nifti'];
  if (!formats.includes(String(values.format))) {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --format.', { field: '--format', value: values.format, expected: formats.join(', '), fix: 'see --help' });
  }
  let processing = processingFromFlags(values);
  const session = sessionFromFlags(values);
  const design = designFromFlags(values);
  const expectedVolumes = expectedVolumesFromFlags(values);
  const freshRecord = session.recordTo === undefined;
  session.recordTo ??= defaultRecordDir();
  session.token = sessionToken(session.token);
  // Only a folder named with --record-to is resumed.
  const resumeFrom = freshRecord ? undefined : existingRecord(session.recordTo);
  if (resumeFrom) ({ processing, modelDir: session.modelDir } = resumedProcessing(resumeFrom, argv, processing, session.modelDir, 'watch'));
  const recordedThrough = resumeFrom ? Math.max(-1, ...resumeFrom.volumes.map((v) => v.volIdx), ...resumeFrom.gaps) : -1;
  const source = watchSource({
    dir: String(values.dir),
    format: values.format as never,
    series: values.series !== undefined ? Number(values.series) : recordedSeries(resumeFrom?.info.source),
    // Files written while the previous process was down are already in the folder.
    includeExisting: values['include-existing'] === true || resumeFrom !== undefined,
    startIdx: recordedThrough + 1,
    trSec: values.tr !== undefined ? Number(values.tr) : undefined,
    gapTimeoutMs: values['gap-timeout-ms'] !== undefined ? Number(values['gap-timeout-ms']) : undefined,
    stableMs: values['stable-ms'] !== undefined ? Number(values['stable-ms']) : undefined,
    corruptTimeoutMs: values['corrupt-timeout-ms'] !== undefined ? Number(values['corrupt-timeout-ms']) : undefined,
    expectedVolumes,
  });
  process.stdout.write(`watching ${values.dir}; recording to ${session.recordTo}\n`);
  return runLiveSession({ source: withDesign(asScannerInput(source), design), processing, session, keepServing: false, label: 'watch', resumeFrom, freshRecord });
}

/** Reads the series a recorded watch session followed from its run-info source ("folder DIR (nifti, series 3 ...)"). */
function recordedSeries(source: string | undefined): number | undefined {
  const match = source === undefined ? null : /^folder .*\(.*\bseries (\d+)/.exec(source);
  return match ? Number(match[1]) : undefined;
}
