/**
 * The render stage as the session runner plugs it in: Decoded events in, render events out,
 * each also published on the run's bus. With policy `auto` the renderer uses `complete` while
 * the replay runs at `realtime` speed (every trial gets its full img2img sequence) and `latest`
 * at any other speed, re-read from the pacer at every Decoded event.
 *
 * Complete, error and unsubscribe behave as documented for `renderWith` (src/render/renderer.ts). When
 * the stream ends in any of these ways, the skip counters are added to the report collector.
 */
import { defer, finalize, from, switchMap, tap, type Observable } from 'rxjs';
import type { Decoded, PipelineEvent } from '../events.ts';
import type { LoadedManifest } from '../decode/manifest.ts';
import type { Device } from '../decode/ort.ts';
import type { Speed } from '../ingest/source.ts';
import type { ImageFormat } from './image.ts';
import { createRenderer, renderWith, type RenderEvent, type RenderPolicy, type Renderer } from './renderer.ts';

export interface RenderStageOptions {
  device: Device;
  policy?: RenderPolicy | 'auto';
  seed?: number;
  format?: ImageFormat;
  quality?: number;
  /** Called with the renderer once its networks are loaded (dashboards, benchmarks). */
  onRenderer?(renderer: Renderer): void;
}

/** The parts of the session context the stage uses. */
export interface RenderStageContext {
  model: LoadedManifest;
  publish(event: PipelineEvent): void;
  collector: { skipped: { img2img: number; previews: number } };
  pacer?: { speed: Speed };
}

/** True when the model has the heads that frames need (lowLevel and vaeDecoder). */
export function modelMakesFrames(model: LoadedManifest): boolean {
  return model.manifest.heads.lowLevel !== undefined && model.manifest.heads.vaeDecoder !== undefined;
}

/** Picks the policy for the current replay speed. */
export function policyForSpeed(speed: Speed | undefined): RenderPolicy {
  return speed === undefined || speed.kind === 'realtime' ? 'complete' : 'latest';
}

/** Builds the session's render factory: `(decoded$, ctx) => events$`. */
export function renderStage(options: RenderStageOptions) {
  return (decoded$: Observable<Decoded>, ctx: RenderStageContext): Observable<RenderEvent> => {
    const policy = options.policy ?? 'auto';
    const currentPolicy = (): RenderPolicy => (policy === 'auto' ? policyForSpeed(ctx.pacer?.speed) : policy);
    return defer(() => from(createRenderer({
      model: ctx.model, device: options.device, policy: currentPolicy(), seed: options.seed, format: options.format, quality: options.quality,
    }))).pipe(
      switchMap((renderer) => {
        options.onRenderer?.(renderer);
        const input$ = decoded$.pipe(tap(() => renderer.setPolicy(currentPolicy())));
        return input$.pipe(
          renderWith(renderer),
          tap((event) => ctx.publish(event)),
          finalize(() => {
            const skipped = renderer.skipped;
            ctx.collector.skipped.img2img += skipped.img2img;
            ctx.collector.skipped.previews += skipped.previews;
          }),
        );
      }),
    );
  };
}
