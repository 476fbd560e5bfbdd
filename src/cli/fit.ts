/** `mindeye-rt fit`: fit a model on calibration runs. */
import { MindeyeError } from '../errors.ts';
import { fitLabelModel, type CalibrationRun } from '../fit/fit.ts';
import { PROCESSING_FLAGS, PROCESSING_HELP, parseFlags, processingFromFlags } from './flags.ts';

export const help = `Usage: mindeye-rt fit (--bids BOLD.nii.gz --events EVENTS.tsv)... --mask ROI.nii.gz --out MODEL_DIR
                      [--target labels|embeddings] [--alpha A|auto] [processing options]

Runs every calibration run through the live pipeline (the same preprocessing and trial GLM as
replay, watch and serve), collects the final trial betas and fits a model on them:
  --target labels        a ridge classifier on the label column (one-vs-rest, targets +1/-1);
                         writes classifier.onnx, the calibration z-score statistics and the mask
  --target embeddings    a ridge map from betas to a base model's embedding space (--base DIR);
                         not available in this version
  --alpha A|auto         ridge penalty; auto (default) picks it by leave-one-run-out
                         cross-validation over ${'0.01 .. 1e5'}
  --out DIR              the model directory to write

${PROCESSING_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    ...PROCESSING_FLAGS,
    bids: { type: 'string', multiple: true },
    events: { type: 'string', multiple: true },
    out: { type: 'string' },
    target: { type: 'string', default: 'labels' },
    alpha: { type: 'string', default: 'auto' },
    base: { type: 'string' },
  }, 'fit');
  const processing = processingFromFlags(values);
  const bold = (values.bids as string[] | undefined) ?? [];
  const events = (values.events as string[] | undefined) ?? [];
  if (bold.length === 0 || bold.length !== events.length) {
    throw new MindeyeError('CLI_USAGE', 'fit needs one --events for every --bids run.', {
      field: '--bids/--events', value: `${bold.length} --bids, ${events.length} --events`, expected: 'equal counts, at least one pair',
      fix: 'repeat --bids RUN_bold.nii.gz --events RUN_events.tsv for each calibration run',
    });
  }
  if (!processing.maskFile) throw new MindeyeError('CLI_USAGE', 'fit needs --mask.', { field: '--mask', fix: 'add --mask ROI.nii.gz' });
  if (!values.out) throw new MindeyeError('CLI_USAGE', 'fit needs --out.', { field: '--out', fix: 'add --out MODEL_DIR' });
  if (values.target !== 'labels') {
    throw new MindeyeError('CLI_USAGE', 'Only --target labels is available in this version.', {
      field: '--target', value: values.target, expected: 'labels', fix: 'use --target labels',
    });
  }
  const alphaText = String(values.alpha);
  const alpha = alphaText === 'auto' ? 'auto' : Number(alphaText);
  if (alpha !== 'auto' && !(alpha > 0)) {
    throw new MindeyeError('CLI_USAGE', 'Invalid value for --alpha.', { field: '--alpha', value: alphaText, expected: 'a positive number or auto', fix: 'e.g. --alpha 100' });
  }
  const runs: CalibrationRun[] = bold.map((b, i) => ({ bold: b, events: events[i] }));
  const result = await fitLabelModel({ runs, processing, maskFile: processing.maskFile, outDir: String(values.out), alpha, labelColumn: values['label-column'] as string | undefined });
  process.stdout.write(
    `fitted a ridge classifier on ${result.trials} trials from ${runs.length} runs, ${result.classes.length} labels (${result.classes.join(', ')})\n` +
    `alpha ${result.alpha}` + (result.cvAccuracy !== undefined ? ` (leave-one-run-out accuracy ${(result.cvAccuracy * 100).toFixed(1)}%)` : '') + '\n' +
    `model written to ${result.outDir}\n`,
  );
  return 0;
}
