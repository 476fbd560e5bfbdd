/**
 * Run-end evaluation for the report, after the pipeline finished (so none of it delays frames):
 *
 * - per trial: PixCorr and SSIM of the low-level and final frames against the stimulus;
 * - brain retrieval top-1 among N (image retrieval among N is drawn in ReportCollector.build
 *   from the live ranks);
 * - low-level PixCorr of every progressive decode, for the anytime curve. It uses the low-level
 *   frame the renderer sent for that decode. When the renderer skipped it under load, the
 *   decode's latents are decoded here with the model's VAE decoder (those images are not
 *   JPEG-encoded, unlike the frames);
 * - feature metrics with the networks given by --feature-net.
 *
 * Ground truth is optional: without stimuli the image and feature metrics are omitted. A
 * failure in one part is reported in the summary's problems and costs that part only.
 */
import { writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Decoded, Frame } from '../events.ts';
import type { LazyImgBrick } from '../ingest/stimuli.ts';
import { logger } from '../log.ts';
import type { LoadedModel } from '../decode/model.ts';
import { similarities } from '../decode/retrieval.ts';
import { decodeToRgb, planarToRgb8, type RgbImage } from '../render/image.ts';
import { pearson, rgbToGray, ssimGray, toMetricRgb, METRIC_SIZE } from '../render/metrics.ts';
import { readRenderSettings } from '../render/config.ts';
import { VaeDecoder } from '../render/networks.ts';
import { useCandidates, type ReportCollector, type RunReport } from '../session/report.ts';
import { anytimeSvg, decodeKey, type AnytimePoint } from './anytime.ts';
import { featureMetric, loadFeatureNet } from './features.ts';
import type { EvalOptions } from './options.ts';
import { meanTopOne, type RankedQuery } from './sampling.ts';

export interface RunEvalContext {
  collector: ReportCollector;
  model?: LoadedModel;
  stimuli?: LazyImgBrick;
  options?: EvalOptions;
}

/** Runs every evaluation part; a failing part is logged and listed in the report's problems. */
export async function evaluateRun(ctx: RunEvalContext): Promise<void> {
  const { collector, options } = ctx;
  if (options) {
    collector.evaluation.settings = { candidates: options.candidates, draws: options.draws, seed: options.seed };
  }
  const part = async (name: string, file: string | undefined, work: () => Promise<void>) => {
    try {
      await work();
    } catch (err) {
      const message = (err as Error).message.split('\n')[0];
      logger.warn({ err: message, part: name, file }, `${name} skipped`);
      collector.problems.push(`${name} skipped: ${message}${file ? ` (${file})` : ''}`);
    }
  };
  const model = ctx.model;
  if (model?.bank) await part('brain retrieval', model.dir, async () => addBrainRetrieval(collector, model.bank!));
  if (!ctx.stimuli) return;
  const truths = new TruthCache(ctx.stimuli);
  await part('image metrics', ctx.stimuli.path, () => addImageMetrics(collector, truths));
  await part('anytime PixCorr', ctx.stimuli.path, () => addAnytimePixCorr(collector, truths, model));
  for (const spec of options?.featureNets ?? []) {
    await part(`feature metric ${spec.name}`, spec.file, async () => {
      const net = await loadFeatureNet(spec, 'cpu');
      try {
        const { recons, truthImages, truthIndex } = await finalImagesWithTruth(collector, truths);
        const result = await featureMetric(net, recons, truthImages, truthIndex);
        if (result) collector.evaluation.featureMetrics[spec.name] = result;
      } finally {
        await net.release();
      }
    });
  }
}

/** Stimulus images by id, decoded once, with their 425x425 metric pixels. */
class TruthCache {
  private readonly images = new Map<string, Promise<{ rgb: RgbImage; metric: Uint8Array } | undefined>>();

  constructor(private readonly stimuli: LazyImgBrick) {}

  get(id: string): Promise<{ rgb: RgbImage; metric: Uint8Array } | undefined> {
    let found = this.images.get(id);
    if (!found) {
      found = this.stimuli.image(id).then(async (truth) => {
        if (!truth) return undefined;
        const rgb = { data: truth.rgb, width: truth.width, height: truth.height };
        return { rgb, metric: await toMetricRgb(rgb) };
      });
      this.images.set(id, found);
    }
    return found;
  }
}

function isTestTrial(collector: ReportCollector, trialId: number): boolean {
  return collector.info?.trials?.find((t) => t.trialId === trialId)?.testImage !== false;
}

/**
 * Adds brain retrieval top-1 among N. Each distinct test image in the bank is a query, and its
 * first trial is its true candidate. A draw is a hit when that trial's embedding is the most
 * similar to the image's bank embedding among N trials of distinct images. Ties go to the
 * earlier trial.
 */
function addBrainRetrieval(collector: ReportCollector, bank: NonNullable<LoadedModel['bank']>): void {
  const byImage = new Map<string, Decoded>();
  for (const d of collector.finalDecoded.values()) {
    if (!d.retrievalEmbedding || !isTestTrial(collector, d.trialId) || byImage.has(d.stimulusId)) continue;
    if (bank.ids.includes(d.stimulusId)) byImage.set(d.stimulusId, d);
  }
  const trials = [...byImage.values()];
  if (trials.length < 2) return;
  const dim = bank.dim;
  const brains = new Float32Array(trials.length * dim);
  trials.forEach((d, j) => brains.set(d.retrievalEmbedding!, j * dim));
  const queries: RankedQuery[] = trials.map((d, i) => {
    const row = bank.ids.indexOf(d.stimulusId);
    const scores = similarities(bank.embeddings.subarray(row * dim, (row + 1) * dim), brains, dim);
    let better = 0;
    for (let j = 0; j < scores.length; j++) {
      if (j !== i && (scores[j] > scores[i] || (scores[j] === scores[i] && j < i))) better++;
    }
    return { key: `brain ${d.trialId}`, pool: trials.length, better };
  });
  const settings = collector.evaluation.settings;
  const use = useCandidates(settings.candidates, trials.length);
  const top1 = meanTopOne(queries, { candidates: use.candidates, draws: settings.draws, seed: settings.seed })!;
  collector.evaluation.brainRetrieval = { top1, trials: trials.length, ...use };
  if (use.clamped) {
    collector.warnEvaluation(`--eval-candidates ${use.requested} exceeds the ${trials.length} distinct test images decoded in this run; brain retrieval top-1 is among ${trials.length}`);
  }
}

function pixCorrOf(metric: Uint8Array, truth: Uint8Array): number {
  return pearson(metric, truth);
}

function ssimOf(metric: Uint8Array, truth: Uint8Array): number {
  return ssimGray(rgbToGray(metric), rgbToGray(truth), METRIC_SIZE, METRIC_SIZE);
}

/** Adds PixCorr and SSIM of each trial's low-level and final frames against its stimulus. */
async function addImageMetrics(collector: ReportCollector, truths: TruthCache): Promise<void> {
  for (const [trialId, decoded] of collector.finalDecoded) {
    const frames = collector.framesOf(trialId).filter((f) => !f.provisional);
    const low = frames.find((f) => f.kind === 'low-level');
    const final = [...frames].reverse().find((f) => f.kind === 'final');
    if (!low && !final) continue;
    const truth = await truths.get(decoded.stimulusId);
    if (!truth) continue;
    const metrics: Record<string, number> = {};
    // PixCorr is undefined (NaN) for a one-color image; such a value is left out, never null.
    const put = (key: string, value: number) => { if (Number.isFinite(value)) metrics[key] = value; };
    if (low) {
      const pixels = await toMetricRgb(low.image);
      put('pixCorrLowLevel', pixCorrOf(pixels, truth.metric));
      put('ssimLowLevel', ssimOf(pixels, truth.metric));
    }
    if (final) {
      const pixels = await toMetricRgb(final.image);
      put('pixCorr', pixCorrOf(pixels, truth.metric));
      put('ssim', ssimOf(pixels, truth.metric));
    }
    collector.extraTrialMetrics.set(trialId, metrics);
  }
}

function lowLevelFrameOf(frames: Frame[], d: Decoded): Frame | undefined {
  return frames.find((f) => f.kind === 'low-level' && f.volIdx === d.volIdx && f.provisional === !d.final);
}

/** Adds the low-level PixCorr of every decode of a test trial with final betas (anytime curve). */
async function addAnytimePixCorr(collector: ReportCollector, truths: TruthCache, model: LoadedModel | undefined): Promise<void> {
  let vae: VaeDecoder | undefined;
  let vaeRange: ReturnType<typeof readRenderSettings>['vae']['outputRange'] | undefined;
  let decodedHere = 0;
  try {
    for (const d of collector.decodedAll) {
      if (!collector.finalDecoded.has(d.trialId) || !isTestTrial(collector, d.trialId)) continue;
      const truth = await truths.get(d.stimulusId);
      if (!truth) continue;
      const frame = lowLevelFrameOf(collector.framesOf(d.trialId), d);
      let pixels: Uint8Array | undefined;
      if (frame) {
        pixels = await toMetricRgb(frame.image);
      } else if (d.lowLevelLatents && model?.manifest.heads.vaeDecoder) {
        if (!vae) {
          const settings = readRenderSettings(model);
          vae = await VaeDecoder.load(settings.vae, settings.latentShape, 'cpu');
          vaeRange = settings.vae.outputRange;
        }
        const out = await vae.decode(d.lowLevelLatents);
        pixels = await toMetricRgb(planarToRgb8(out.planar, out.channels, out.height, out.width, vaeRange!));
        decodedHere++;
      }
      if (pixels) collector.evaluation.lowLevelPixCorr.set(decodeKey(d), pixCorrOf(pixels, truth.metric));
    }
  } finally {
    await vae?.release();
  }
  if (decodedHere > 0) logger.info({ images: decodedHere }, 'anytime curve: decoded the low-level latents of estimates the renderer skipped');
}

/** Final frames of test trials with their distinct ground-truth images (feature metrics). */
async function finalImagesWithTruth(collector: ReportCollector, truths: TruthCache) {
  const recons: RgbImage[] = [];
  const truthImages: RgbImage[] = [];
  const truthIndex: number[] = [];
  const rowOf = new Map<string, number>();
  for (const [trialId, decoded] of collector.finalDecoded) {
    if (!isTestTrial(collector, trialId)) continue;
    const final = [...collector.framesOf(trialId)].reverse().find((f) => f.kind === 'final' && !f.provisional);
    if (!final) continue;
    const truth = await truths.get(decoded.stimulusId);
    if (!truth) continue;
    let row = rowOf.get(decoded.stimulusId);
    if (row === undefined) {
      row = truthImages.length;
      rowOf.set(decoded.stimulusId, row);
      truthImages.push(truth.rgb);
    }
    recons.push(await decodeToRgb(final.image));
    truthIndex.push(row);
  }
  return { recons, truthImages, truthIndex };
}

/**
 * Writes the anytime curve beside the report file, named after it (report.json ->
 * report.anytime.svg) so that reports in one folder keep their own curves. Returns its path, or
 * undefined without a curve.
 */
export function writeAnytimeSvg(report: RunReport, reportFile: string): string | undefined {
  const summary = report.summary as { anytime?: AnytimePoint[]; retrievalChance?: number };
  if (!summary.anytime || summary.anytime.length === 0) return undefined;
  const file = join(dirname(reportFile), `${basename(reportFile).replace(/\.json$/i, '')}.anytime.svg`);
  const source = report.run.source.length > 60 ? `${report.run.source.slice(0, 57)}...` : report.run.source;
  const title = `Anytime decoding: ${source}`;
  writeFileSync(file, anytimeSvg(summary.anytime, { title, chance: summary.retrievalChance, trSec: report.run.trSec }));
  return file;
}
