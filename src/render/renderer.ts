/**
 * Progressive renderer: Decoded events in, Frame events out.
 *
 * ```
 * submit:  --D1p--D1f------------D2f--------------------|drain
 * frames:  ---L1p---L1-s1-s2-s3------L2-F1-s1..sN-F2------|     (policy `latest`)
 *          L = low-level, p = provisional, s = img2img preview, F = final (F1 cut short)
 * ```
 *
 * Per trial: each non-final Decoded gives a provisional low-level frame (VAE decoder on the
 * low-level latents; no img2img). The final Decoded gives the low-level frame, then, when the
 * model has a UNet, one preview per img2img step (the decoded predicted clean latents x0) and
 * a final frame (the decoded latents after the last step). Without a UNet the final frame
 * repeats the low-level image.
 *
 * Scheduling: one job runs at a time, from one work queue with three levels. Pending low-level
 * frames (any trial) go first, then final frames of cut trials, then img2img steps. A low-level
 * frame of a new trial therefore waits at most for the job in flight: one img2img step of an
 * older trial. A newer estimate for a trial whose low-level frame is still queued replaces the
 * queued one (counted in `skipped.provisional` when a provisional frame is dropped).
 *
 * Policies for falling behind:
 * - `complete`: every trial gets all its steps and previews, oldest trial first. Work piles up
 *   when trials arrive faster than they are refined.
 * - `latest` (default): when an img2img step would run for a trial while a newer trial's final
 *   Decoded has arrived, the older trial is abandoned. Its last sent image (its latest preview,
 *   or its low-level frame when no step ran) is sent again as its `final` frame, with `step`
 *   set to the steps that ran. `skipped.img2img` counts trials cut short, `skipped.steps` the
 *   UNet steps not run and `skipped.previews` the previews not sent.
 *
 * Contract: `events` and `frames` are hot Subjects, so a subscriber receives only the events
 * sent after it subscribes. Unsubscribing a subscriber does not stop the renderer. `drain()`
 * renders what is queued, completes the Subjects and releases the ONNX sessions. `close()`
 * abandons queued work (counted as skipped), lets the job in flight finish without sending its
 * frame, and then completes the Subjects. A failed job (ONNX error, bad decoder output) is
 * reported as a `warning` event, and its trial gets no further frames. Other trials go on. Bad
 * input (missing or mis-sized latents, non-finite values) is reported the same way and skipped.
 */
import { Subject, filter, Observable, type OperatorFunction } from 'rxjs';
import type { Decoded, Frame, FrameKind, PipelineWarning, StageTiming, WarningKind } from '../events.ts';
import { nowMs } from '../events.ts';
import { isMindeyeError, MindeyeError } from '../errors.ts';
import { stageLogger } from '../log.ts';
import type { LoadedManifest } from '../decode/manifest.ts';
import type { Device } from '../decode/ort.ts';
import { readRenderSettings, type RenderSettings } from './config.ts';
import { encodeRgb, planarToRgb8, type EncodedImage, type ImageFormat } from './image.ts';
import { VaeDecoder, Unet } from './networks.ts';
import { Img2ImgRun } from './img2img.ts';
import { planImg2Img } from './scheduler.ts';

export type RenderPolicy = 'complete' | 'latest';
export const RENDER_POLICIES: readonly RenderPolicy[] = ['complete', 'latest'];

export type RenderEvent = Frame | PipelineWarning | StageTiming;

export interface RendererOptions {
  model: LoadedManifest;
  device?: Device;
  policy?: RenderPolicy;
  /** Called synchronously with every event before the Subjects send it. */
  emit?: (event: RenderEvent) => void;
  /** Run seed; each trial's img2img noise comes from (seed, trialId). Default 0. */
  seed?: number;
  format?: ImageFormat;
  /** JPEG or WebP quality, 1-100; default 85. */
  quality?: number;
}

/** Work not done because of the policy, or abandoned by `close()`. */
export interface SkipCounters {
  /** Trials whose img2img refinement was cut short or not started. */
  img2img: number;
  /** img2img preview frames not sent. */
  previews: number;
  /** UNet denoising steps not run. */
  steps: number;
  /** Provisional low-level frames replaced by a newer estimate before they were rendered. */
  provisional: number;
}

interface TrialState {
  trialId: number;
  /** Order in which trials' final Decoded events arrived; -1 until then. */
  finalOrder: number;
  /** Decoded event whose low-level frame is queued. */
  pendingLowLevel?: Decoded;
  /** Final Decoded event, which img2img frames are attributed to. */
  finalDecoded?: Decoded;
  refinement?: Img2ImgRun;
  lastImage?: EncodedImage;
  finished: boolean;
}

class StopError extends Error {}

export class Renderer {
  readonly events: Observable<RenderEvent>;
  readonly frames: Observable<Frame>;
  /** img2img steps a final trial gets (0 without a UNet). */
  readonly stepCount: number;
  private currentPolicy: RenderPolicy;

  private readonly subject = new Subject<RenderEvent>();
  private readonly log = stageLogger('render');
  private readonly trials = new Map<number, TrialState>();
  private readonly lowLevelQueue: TrialState[] = [];
  private readonly finishQueue: TrialState[] = [];
  private readonly refineQueue: TrialState[] = [];
  private readonly counters: SkipCounters = { img2img: 0, previews: 0, steps: 0, provisional: 0 };
  private finalCount = 0;
  private running: Promise<void> | undefined;
  private accepting = true;
  private stopped = false;
  private completed = false;

  private constructor(
    private readonly settings: RenderSettings,
    private readonly vae: VaeDecoder,
    private readonly unet: Unet | undefined,
    private readonly options: Required<Omit<RendererOptions, 'emit' | 'model' | 'device'>> & Pick<RendererOptions, 'emit'>,
  ) {
    this.currentPolicy = options.policy;
    this.stepCount = settings.unet ? planImg2Img(settings.unet.ddim).timesteps.length : 0;
    this.events = this.subject.asObservable();
    this.frames = this.events.pipe(filter((e): e is Frame => e.type === 'frame'));
  }

  /** Loads the VAE decoder (and UNet, when the model has one) and checks them with one warm-up run. */
  static async create(options: RendererOptions): Promise<Renderer> {
    const settings = readRenderSettings(options.model);
    const device = options.device ?? 'cpu';
    const vae = await VaeDecoder.load(settings.vae, settings.latentShape, device);
    let unet: Unet | undefined;
    try {
      unet = settings.unet ? await Unet.load(settings.unet, settings.latentShape, device) : undefined;
    } catch (err) {
      await vae.release();
      throw err;
    }
    const latentCount = settings.latentShape.reduce((a, b) => a * b, 1);
    try {
      await warmUp('vaeDecoder', settings, () => vae.decode(new Float32Array(latentCount)));
      if (unet && settings.unet) {
        const condDim = settings.unet.condDim;
        await warmUp('unet', settings, () => unet.predictPair(new Float32Array(latentCount), 0, new Float32Array(condDim)));
      }
    } catch (err) {
      await vae.release();
      await unet?.release();
      throw err;
    }
    stageLogger('render').info({ model: options.model.dir, device, steps: settings.unet ? planImg2Img(settings.unet.ddim).timesteps.length : 0,
      policy: options.policy ?? 'latest' }, 'renderer ready');
    return new Renderer(settings, vae, unet, {
      policy: options.policy ?? 'latest',
      seed: options.seed ?? 0,
      format: options.format ?? 'jpeg',
      quality: options.quality ?? 85,
      emit: options.emit,
    });
  }

  get policy(): RenderPolicy {
    return this.currentPolicy;
  }

  /** Changes the policy for the work still queued, such as when a replay's speed changes. */
  setPolicy(policy: RenderPolicy): void {
    this.currentPolicy = policy;
  }

  get skipped(): SkipCounters {
    return { ...this.counters };
  }

  /** Queues the frames for one Decoded event; returns at once. Bad input becomes a warning. */
  submit(decoded: Decoded): void {
    if (!this.accepting) throw new Error('Renderer.submit() was called after drain() or close().');
    const problem = this.checkInput(decoded);
    if (problem !== undefined) {
      this.warn(decoded, 'invalid', problem);
      return;
    }
    let trial = this.trials.get(decoded.trialId);
    if (trial === undefined) {
      trial = { trialId: decoded.trialId, finalOrder: -1, finished: false };
      this.trials.set(decoded.trialId, trial);
    }
    if (trial.finalDecoded !== undefined) {
      this.warn(decoded, decoded.final ? 'duplicate' : 'late',
        `Trial ${decoded.trialId} already has final betas; this ${decoded.final ? 'final' : 'provisional'} estimate was ignored.`);
      return;
    }
    if (decoded.final) {
      trial.finalDecoded = decoded;
      trial.finalOrder = this.finalCount++;
    }
    if (trial.pendingLowLevel !== undefined) {
      if (!trial.pendingLowLevel.final) this.counters.provisional++;
    } else {
      this.lowLevelQueue.push(trial);
    }
    trial.pendingLowLevel = decoded;
    this.kick();
  }

  /** Renders everything queued, then completes the event stream and releases the sessions. */
  async drain(): Promise<void> {
    this.accepting = false;
    while (this.running) await this.running;
    await this.finish();
  }

  /**
   * Abandons queued work, waits for the job in flight, completes the stream and releases the
   * sessions. The skip counters are updated before the first await, so they are final as soon
   * as close() is called.
   */
  async close(): Promise<void> {
    if (!this.stopped) {
      this.accepting = false;
      this.stopped = true;
      // The job in flight sends nothing more, so its trial's remaining steps count as skipped.
      for (const trial of this.trials.values()) {
        if (trial.pendingLowLevel && !trial.pendingLowLevel.final) this.counters.provisional++;
        if (trial.finalDecoded === undefined || trial.finished) continue;
        if (trial.refinement) this.countCut(trial);
        else if (this.stepCount > 0) this.countCut(trial, this.stepCount);
      }
      this.refineQueue.length = 0;
      this.lowLevelQueue.length = 0;
      this.finishQueue.length = 0;
    }
    while (this.running) await this.running;
    await this.finish();
  }

  /** Marks a trial done and drops its latents and image bytes, which a long run would pile up. */
  private markFinished(trial: TrialState): void {
    trial.finished = true;
    trial.refinement = undefined;
    trial.lastImage = undefined;
  }

  private async finish(): Promise<void> {
    if (this.completed) return;
    this.completed = true;
    this.log.info({ trials: this.trials.size, skipped: this.counters, policy: this.currentPolicy }, 'renderer stopped');
    this.subject.complete();
    await this.vae.release();
    await this.unet?.release();
  }

  private checkInput(decoded: Decoded): string | undefined {
    const latents = decoded.lowLevelLatents;
    const expected = this.settings.latentShape.reduce((a, b) => a * b, 1);
    if (latents === undefined) return `Decoded event for trial ${decoded.trialId} has no lowLevelLatents; no frame was rendered.`;
    if (latents.length !== expected) {
      return `Decoded event for trial ${decoded.trialId} has ${latents.length} low-level latents; the model's lowLevel.latentShape `
        + `[${this.settings.latentShape.join(', ')}] needs ${expected}. No frame was rendered.`;
    }
    if (!latents.every(Number.isFinite)) return `Decoded event for trial ${decoded.trialId} has non-finite low-level latents; no frame was rendered.`;
    return undefined;
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  private async loop(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      const lowLevel = this.lowLevelQueue.shift();
      if (lowLevel !== undefined) {
        await this.guard(lowLevel, () => this.renderLowLevel(lowLevel));
        continue;
      }
      const cut = this.finishQueue.shift();
      if (cut !== undefined) {
        this.sendCutFinal(cut);
        continue;
      }
      const refining = this.refineQueue[0];
      if (refining === undefined) return;
      if (this.currentPolicy === 'latest' && this.hasNewerFinal(refining)) {
        this.refineQueue.shift();
        this.countCut(refining);
        this.finishQueue.push(refining);
        continue;
      }
      await this.guard(refining, () => this.renderStep(refining));
    }
  }

  private hasNewerFinal(trial: TrialState): boolean {
    return trial.finalOrder < this.finalCount - 1;
  }

  private countCut(trial: TrialState, notStarted?: number): void {
    const remaining = notStarted ?? (trial.refinement ? trial.refinement.stepCount - trial.refinement.stepsDone : 0);
    this.counters.img2img++;
    this.counters.steps += remaining;
    this.counters.previews += remaining;
  }

  /** Runs one job; on failure reports it and drops the trial's remaining work. */
  private async guard(trial: TrialState, job: () => Promise<void>): Promise<void> {
    try {
      await job();
    } catch (err) {
      if (err instanceof StopError) return;
      const index = this.refineQueue.indexOf(trial);
      if (index >= 0) this.refineQueue.splice(index, 1);
      this.markFinished(trial);
      const decoded = trial.finalDecoded ?? trial.pendingLowLevel;
      const message = `Rendering trial ${trial.trialId} failed; it gets no further frames. ${(err as Error).message}`;
      this.log.error({ err, trialId: trial.trialId }, 'render job failed');
      this.emitEvent({
        type: 'warning', runId: decoded?.runId ?? '', kind: 'other', trialId: trial.trialId, volIdx: decoded?.volIdx,
        message, code: isMindeyeError(err) ? err.code : undefined,
      });
    }
  }

  private async renderLowLevel(trial: TrialState): Promise<void> {
    const decoded = trial.pendingLowLevel as Decoded;
    trial.pendingLowLevel = undefined;
    const startMs = nowMs();
    const image = await this.decodeToImage(decoded.lowLevelLatents as Float32Array, decoded, 'low-level');
    const provisional = !decoded.final;
    const refinement = provisional ? undefined : this.startRefinement(trial, decoded);
    const stepCount = refinement ? refinement.stepCount : 0;
    this.sendFrame(trial, decoded, 'low-level', provisional, 0, stepCount, image, startMs);
    if (provisional) return;
    if (refinement === undefined) {
      this.sendFrame(trial, decoded, 'final', false, 0, 0, image, nowMs());
      this.markFinished(trial);
      return;
    }
    trial.refinement = refinement;
    this.refineQueue.push(trial);
  }

  private startRefinement(trial: TrialState, decoded: Decoded): Img2ImgRun | undefined {
    const unet = this.settings.unet;
    if (unet === undefined || this.unet === undefined || this.stepCount === 0) return undefined;
    const condition = this.pickCondition(decoded, unet.conditionSource);
    if (condition === undefined || condition.length !== unet.condDim || !condition.every(Number.isFinite)) {
      const got = condition === undefined ? 'no prior or retrieval embedding' : `a condition of ${condition.length} values`;
      this.warn(decoded, 'invalid', `Decoded event for trial ${decoded.trialId} has ${got}; the UNet needs ${unet.condDim} finite values `
        + '(heads.unet.condDim). The trial gets its low-level image as final frame, without img2img.');
      return undefined;
    }
    return new Img2ImgRun(this.unet, unet, decoded.lowLevelLatents as Float32Array, condition, this.options.seed, trial.trialId);
  }

  private pickCondition(decoded: Decoded, source: 'prior' | 'retrieval' | 'auto'): Float32Array | undefined {
    if (source === 'prior') return decoded.priorEmbedding;
    if (source === 'retrieval') return decoded.retrievalEmbedding;
    return decoded.priorEmbedding ?? decoded.retrievalEmbedding;
  }

  private async renderStep(trial: TrialState): Promise<void> {
    const run = trial.refinement as Img2ImgRun;
    const decoded = trial.finalDecoded as Decoded;
    const startMs = nowMs();
    const step = await run.step();
    this.emitTiming(decoded, 'img2img-step', startMs, nowMs());
    if (this.stopped) throw new StopError();
    const preview = await this.decodeToImage(step.predictedOriginal, decoded, 'img2img-decode');
    this.sendFrame(trial, decoded, 'img2img-step', false, run.stepsDone, run.stepCount, preview, startMs);
    if (!run.done) return;
    this.refineQueue.shift();
    const finalStartMs = nowMs();
    const finalImage = await this.decodeToImage(run.sample, decoded, 'img2img-decode');
    this.sendFrame(trial, decoded, 'final', false, run.stepCount, run.stepCount, finalImage, finalStartMs);
    this.markFinished(trial);
  }

  private sendCutFinal(trial: TrialState): void {
    const decoded = trial.finalDecoded as Decoded;
    const run = trial.refinement as Img2ImgRun;
    const resent = run.stepsDone > 0 ? `its step ${run.stepsDone} preview` : 'its low-level image';
    this.sendFrame(trial, decoded, 'final', false, run.stepsDone, run.stepCount, trial.lastImage as EncodedImage, nowMs());
    this.warn(decoded, 'skipped', `Trial ${trial.trialId}: img2img stopped after ${run.stepsDone} of ${run.stepCount} steps `
      + `because a newer trial has final betas (policy "latest"); ${resent} was sent as its final frame.`);
    this.markFinished(trial);
  }

  /**
   * Decodes latents to an encoded image. The VAE decode and RGB conversion are timed as
   * `decodeStage`, the JPEG or WebP encoding as 'encode'.
   */
  private async decodeToImage(latents: Float32Array, decoded: Decoded, decodeStage: 'low-level' | 'img2img-decode'): Promise<EncodedImage> {
    const startMs = nowMs();
    const out = await this.vae.decode(latents);
    if (this.stopped) throw new StopError();
    const rgb = planarToRgb8(out.planar, out.channels, out.height, out.width, this.settings.vae.outputRange);
    const encodeStartMs = nowMs();
    this.emitTiming(decoded, decodeStage, startMs, encodeStartMs);
    const encoded = await encodeRgb(rgb, { format: this.options.format, quality: this.options.quality });
    this.emitTiming(decoded, 'encode', encodeStartMs, nowMs());
    if (this.stopped) throw new StopError();
    return encoded;
  }

  private emitTiming(decoded: Decoded, stage: string, startMs: number, endMs: number): void {
    this.emitEvent({ type: 'stage-timing', runId: decoded.runId, stage, trialId: decoded.trialId, volIdx: decoded.volIdx, startMs, endMs });
  }

  private sendFrame(trial: TrialState, decoded: Decoded, kind: FrameKind, provisional: boolean, step: number, stepCount: number,
    image: EncodedImage, startMs: number): void {
    trial.lastImage = image;
    const sentAtMs = nowMs();
    this.emitEvent({
      type: 'frame', runId: decoded.runId, volIdx: decoded.volIdx, receivedAtMs: decoded.receivedAtMs, trialId: trial.trialId,
      kind, provisional, step, stepCount, mime: image.mime, width: image.width, height: image.height, image: image.bytes, sentAtMs,
    });
    this.emitEvent({ type: 'stage-timing', runId: decoded.runId, stage: 'render', trialId: trial.trialId, volIdx: decoded.volIdx, startMs, endMs: sentAtMs });
  }

  private warn(decoded: Decoded, kind: WarningKind, message: string): void {
    // Skips under the 'latest' policy are expected at max speed: counted in the report, logged at debug.
    if (kind === 'skipped') this.log.debug({ trialId: decoded.trialId, runId: decoded.runId }, message);
    else this.log.warn({ trialId: decoded.trialId, runId: decoded.runId }, message);
    this.emitEvent({ type: 'warning', runId: decoded.runId, kind, trialId: decoded.trialId, volIdx: decoded.volIdx, message });
  }

  private emitEvent(event: RenderEvent): void {
    if (this.options.emit) {
      try {
        this.options.emit(event);
      } catch (err) {
        this.log.error({ err, trialId: 'trialId' in event ? event.trialId : undefined }, 'render emit callback threw; event still sent to subscribers');
      }
    }
    this.subject.next(event);
  }
}

/** Runs a network once on zeros so that a model that does not fit the manifest fails at load. */
async function warmUp(head: 'vaeDecoder' | 'unet', settings: RenderSettings, run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (isMindeyeError(err)) throw err;
    const shape = `[1, ${settings.latentShape.join(', ')}]`;
    const condition = head === 'unet' ? ` and a condition of ${settings.unet?.condDim} values (heads.unet.condDim)` : '';
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', `The ${head} network failed on a test input: ${(err as Error).message}`, {
      file: head === 'unet' ? settings.unet?.file : settings.vae.file, field: 'heads.lowLevel.latentShape', value: settings.latentShape,
      expected: `a network that takes latents ${shape}${condition}`,
      fix: 'make heads.lowLevel.latentShape (and heads.unet.condDim) match the exported networks',
    });
  }
}

/** Loads the render networks of a model; see `Renderer` for the contract. */
export function createRenderer(options: RendererOptions): Promise<Renderer> {
  return Renderer.create(options);
}

/**
 * Pipes Decoded events through a renderer. Source complete: the renderer drains, then the
 * output completes. Source error: the renderer closes, then the output errors with it.
 * Unsubscribe: the renderer closes (queued work is abandoned and counted as skipped).
 */
export function renderWith(renderer: Renderer): OperatorFunction<Decoded, RenderEvent> {
  return (source) => new Observable<RenderEvent>((subscriber) => {
    // Completion is forwarded only after drain(), so that a source error is not preceded by
    // the completion that close() sends.
    const output = renderer.events.subscribe({
      next: (event) => subscriber.next(event),
      complete: () => subscriber.complete(),
    });
    let ended = false;
    const input = source.subscribe({
      next: (decoded) => renderer.submit(decoded),
      error: (err) => {
        ended = true;
        output.unsubscribe();
        void renderer.close().then(() => subscriber.error(err));
      },
      complete: () => {
        ended = true;
        renderer.drain().catch((err) => subscriber.error(err));
      },
    });
    return () => {
      input.unsubscribe();
      output.unsubscribe();
      if (!ended) void renderer.close();
    };
  });
}
