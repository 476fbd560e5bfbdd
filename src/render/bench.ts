/**
 * Render timings for `mindeye-rt bench`: each trial's final Decoded is submitted alone (no
 * backlog) and the time to its low-level frame, first preview and final frame is recorded.
 * Latents and conditions are seeded noise, so the numbers measure cost, not image quality.
 */
import { firstValueFrom, filter } from 'rxjs';
import type { Decoded, Frame } from '../events.ts';
import { nowMs } from '../events.ts';
import type { LoadedManifest } from '../decode/manifest.ts';
import type { Device } from '../decode/ort.ts';
import { readRenderSettings } from './config.ts';
import type { ImageFormat } from './image.ts';
import { gaussianNoise } from './noise.ts';
import { createRenderer } from './renderer.ts';

export interface Percentiles {
  p50: number;
  p95: number;
  max: number;
}

export interface RenderBenchResult {
  trials: number;
  steps: number;
  device: Device;
  format: ImageFormat;
  /** Load and warm-up of the VAE decoder and UNet sessions. */
  loadMs: number;
  submitToLowLevelMs: Percentiles;
  submitToFirstPreviewMs?: Percentiles;
  submitToFinalMs: Percentiles;
  /** Mean time per img2img step (UNet with guidance, DDIM update, preview decode and encode). */
  perStepMs?: Percentiles;
}

function percentiles(values: number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return { p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] };
}

/** Renders `trials` trials one after another and returns their latency percentiles. */
export async function benchRender(model: LoadedManifest, options: { device: Device; trials?: number; format?: ImageFormat }): Promise<RenderBenchResult> {
  const trials = options.trials ?? 10;
  const format = options.format ?? 'jpeg';
  const settings = readRenderSettings(model);
  const latentCount = settings.latentShape.reduce((a, b) => a * b, 1);
  const condDim = settings.unet?.condDim ?? 0;
  const loadStartMs = nowMs();
  const renderer = await createRenderer({ model, device: options.device, policy: 'complete', format });
  const loadMs = nowMs() - loadStartMs;

  const lowLevel: number[] = [];
  const firstPreview: number[] = [];
  const final: number[] = [];
  const perStep: number[] = [];

  for (let trialId = 0; trialId < trials; trialId++) {
    const frames: Frame[] = [];
    const subscription = renderer.frames.subscribe((f) => frames.push(f));
    const done = firstValueFrom(renderer.frames.pipe(filter((f) => f.trialId === trialId && f.kind === 'final')));
    const condition = gaussianNoise(condDim, 1000 + trialId);
    const submittedAtMs = nowMs();
    const decoded: Decoded = {
      type: 'decoded', runId: 'bench', volIdx: trialId, receivedAtMs: submittedAtMs, trialId, stimulusId: String(trialId), final: true,
      volumesSinceOnset: 1, estimatedAtMs: submittedAtMs, decodedAtMs: submittedAtMs,
      lowLevelLatents: gaussianNoise(latentCount, trialId), priorEmbedding: condition, retrievalEmbedding: condition, topK: [],
    } as Decoded;
    renderer.submit(decoded);
    await done;
    subscription.unsubscribe();

    const sentAfter = (kind: Frame['kind']) => (frames.find((f) => f.kind === kind)?.sentAtMs ?? Number.NaN) - submittedAtMs;
    lowLevel.push(sentAfter('low-level'));
    final.push(sentAfter('final'));
    const previews = frames.filter((f) => f.kind === 'img2img-step');
    if (previews.length > 0) {
      firstPreview.push(sentAfter('img2img-step'));
      perStep.push((previews[previews.length - 1].sentAtMs - frames[0].sentAtMs) / previews.length);
    }
  }
  await renderer.drain();

  return {
    trials, steps: renderer.stepCount, device: options.device, format, loadMs,
    submitToLowLevelMs: percentiles(lowLevel),
    ...(firstPreview.length > 0 ? { submitToFirstPreviewMs: percentiles(firstPreview), perStepMs: percentiles(perStep) } : {}),
    submitToFinalMs: percentiles(final),
  };
}
