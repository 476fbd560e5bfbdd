import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { from, lastValueFrom, concat, throwError, take, toArray, Subject, filter } from 'rxjs';
import type { Decoded, Frame, PipelineWarning, StageTiming } from '../../src/events.ts';
import { isMindeyeError } from '../../src/errors.ts';
import { loadManifest, type LoadedManifest } from '../../src/decode/manifest.ts';
import { createRenderer, renderWith, type RenderEvent, type RenderPolicy, type Renderer } from '../../src/render/renderer.ts';
import { pythonSkipReason } from '../helpers/python.ts';
import { decoded, tinyModel } from './helpers.ts';

const skip = pythonSkipReason(['torch', 'onnx']);
/** Steps per final trial in the tiny models: floor(10 steps * strength 0.85). */
const STEPS = 8;

type LogEntry = { submitted: Decoded } | { event: RenderEvent };

class Recorder {
  readonly log: LogEntry[] = [];
  completed = false;

  constructor(readonly renderer: Renderer) {
    renderer.events.subscribe({ next: (event) => this.log.push({ event }), complete: () => { this.completed = true; } });
  }

  submit(d: Decoded): void {
    this.log.push({ submitted: d });
    this.renderer.submit(d);
  }

  get frames(): Frame[] {
    return this.log.flatMap((e) => ('event' in e && e.event.type === 'frame' ? [e.event] : []));
  }

  get warnings(): PipelineWarning[] {
    return this.log.flatMap((e) => ('event' in e && e.event.type === 'warning' ? [e.event] : []));
  }

  /** Frames as short labels: "1L", "1Lp" (provisional), "1s3" (preview of step 3), "1F". */
  get labels(): string[] {
    return this.frames.map((f) => `${f.trialId}${f.kind === 'low-level' ? (f.provisional ? 'Lp' : 'L') : f.kind === 'final' ? 'F' : `s${f.step}`}`);
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

function steps(trialId: number): string[] {
  return range(STEPS).map((s) => `${trialId}s${s}`);
}

/**
 * Checks that each low-level frame is sent after its Decoded was submitted with at most one
 * img2img preview of another trial in between (the step that was running at submit time).
 */
function assertLowLevelFirst(log: LogEntry[]): void {
  log.forEach((entry, i) => {
    if (!('submitted' in entry)) return;
    const trialId = entry.submitted.trialId;
    const end = log.findIndex((e, j) => j > i && 'event' in e && e.event.type === 'frame' && e.event.trialId === trialId && e.event.kind === 'low-level');
    if (end < 0) return;
    const between = log.slice(i + 1, end).filter((e) => 'event' in e && e.event.type === 'frame' && e.event.trialId !== trialId && e.event.kind === 'img2img-step');
    assert.ok(between.length <= 1, `trial ${trialId}: ${between.length} previews of older trials were sent before its low-level frame`);
  });
}

test('final trial gets low-level, previews and final frame', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel() });
  const rec = new Recorder(renderer);
  assert.equal(renderer.stepCount, STEPS);
  rec.submit(decoded(1, true));
  await renderer.drain();
  assert.deepEqual(rec.labels, ['1L', ...steps(1), '1F']);
  const frames = rec.frames;
  assert.ok(frames.every((f) => !f.provisional && f.stepCount === STEPS && f.mime === 'image/jpeg' && f.width === 16 && f.height === 16));
  assert.deepEqual(frames.map((f) => f.step), [0, ...range(STEPS), STEPS]);
  assert.ok(frames.every((f) => f.runId === 'test-run' && f.volIdx === 11 && f.receivedAtMs === 1001), 'frames carry the Decoded event\'s ids');
  for (let i = 1; i < frames.length; i++) assert.ok(frames[i].sentAtMs >= frames[i - 1].sentAtMs, 'sentAtMs increases');
  const timings = rec.log.flatMap((e) => ('event' in e && e.event.type === 'stage-timing' ? [e.event as StageTiming] : []));
  const renderTimings = timings.filter((t) => t.stage === 'render');
  assert.equal(renderTimings.length, frames.length);
  assert.ok(timings.every((t) => t.trialId === 1 && t.endMs >= t.startMs));
  // Finer stages: one low-level decode, one UNet step and one VAE decode per preview, the
  // final frame's VAE decode, and one encode per frame.
  const count = (stage: string) => timings.filter((t) => t.stage === stage).length;
  assert.equal(count('low-level'), 1);
  assert.equal(count('img2img-step'), STEPS);
  assert.equal(count('img2img-decode'), STEPS + 1);
  assert.equal(count('encode'), frames.length);
  assert.deepEqual(renderer.skipped, { img2img: 0, previews: 0, steps: 0, provisional: 0 });
  assert.ok(rec.completed, 'drain completes the event stream');
  // Previews sharpen toward the final image: the last preview differs from the low-level frame.
  assert.notDeepEqual(frames[STEPS].image, frames[0].image);
});

test('provisional estimates give provisional low-level frames only', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel() });
  const rec = new Recorder(renderer);
  rec.submit(decoded(1, false));
  rec.submit(decoded(1, false, { volumesSinceOnset: 4 } as Partial<Decoded>));
  rec.submit(decoded(1, false, { volumesSinceOnset: 5 } as Partial<Decoded>));
  await new Promise((resolve) => setTimeout(resolve, 0));
  rec.submit(decoded(2, false));
  await renderer.drain();
  // The first estimate starts rendering at once; the second is replaced by the third in the queue.
  assert.deepEqual(rec.labels, ['1Lp', '1Lp', '2Lp']);
  assert.ok(rec.frames.every((f) => f.provisional && f.kind === 'low-level' && f.stepCount === 0));
  assert.equal(renderer.skipped.provisional, 1);
});

test('final estimate replaces a queued provisional one', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel() });
  const rec = new Recorder(renderer);
  rec.submit(decoded(1, false));
  rec.submit(decoded(1, false));
  rec.submit(decoded(1, true));
  await renderer.drain();
  assert.deepEqual(rec.labels, ['1Lp', '1L', ...steps(1), '1F']);
  assert.equal(renderer.skipped.provisional, 1);
});

const ORDER_CASES: { policy: RenderPolicy; expected: string[]; skipped: { img2img: number; steps: number } }[] = [
  { policy: 'complete', expected: ['1L', '2L', '3L', ...steps(1), '1F', ...steps(2), '2F', ...steps(3), '3F'], skipped: { img2img: 0, steps: 0 } },
  { policy: 'latest', expected: ['1L', '2L', '3L', '1F', '2F', ...steps(3), '3F'], skipped: { img2img: 2, steps: 2 * STEPS } },
];

for (const c of ORDER_CASES) {
  test(`policy ${c.policy} orders a backlog of three trials`, { skip }, async () => {
    const renderer = await createRenderer({ model: tinyModel(), policy: c.policy });
    const rec = new Recorder(renderer);
    for (const id of [1, 2, 3]) rec.submit(decoded(id, true));
    await renderer.drain();
    assert.deepEqual(rec.labels, c.expected);
    const skipped = renderer.skipped;
    assert.equal(skipped.img2img, c.skipped.img2img);
    assert.equal(skipped.steps, c.skipped.steps);
    assert.equal(skipped.previews, c.skipped.steps);
    assert.equal(rec.warnings.filter((w) => w.kind === 'skipped').length, c.skipped.img2img);
    if (c.policy === 'latest') {
      const frames = rec.frames;
      const cutFinal = frames.find((f) => f.trialId === 1 && f.kind === 'final') as Frame;
      const lowLevel = frames.find((f) => f.trialId === 1 && f.kind === 'low-level') as Frame;
      assert.deepEqual(cutFinal.image, lowLevel.image, 'a trial cut before any step shows its low-level image as final');
      assert.equal(cutFinal.step, 0);
      assert.equal(cutFinal.stepCount, STEPS);
    }
  });
}

test('new trial is rendered before the next step of an older one', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel(), policy: 'complete' });
  const rec = new Recorder(renderer);
  const submitted = new Promise<void>((resolve) => {
    renderer.frames.subscribe((f) => {
      // Submitting from inside the frame callback: the loop has not picked its next job yet.
      if (f.trialId === 1 && f.kind === 'img2img-step' && f.step === 2) {
        rec.submit(decoded(2, false));
        rec.submit(decoded(3, true));
        resolve();
      }
    });
  });
  rec.submit(decoded(1, true));
  await submitted;
  await renderer.drain();
  const labels = rec.labels;
  assert.deepEqual(labels.slice(0, 6), ['1L', '1s1', '1s2', '2Lp', '3L', '1s3']);
  assert.deepEqual(labels.slice(6), [...steps(1).slice(3), '1F', ...steps(3), '3F']);
  assertLowLevelFirst(rec.log);
});

for (const policy of ['complete', 'latest'] as const) {
  test(`slow UNet: low-level frames overtake older refinements (${policy})`, { skip }, async () => {
    const renderer = await createRenderer({ model: tinyModel('--slow', '10'), policy });
    const rec = new Recorder(renderer);
    const submitted: Promise<void>[] = [];
    renderer.frames.subscribe((f) => {
      // Submit from a timer, while a slow UNet step of the older trial is running.
      if (f.kind === 'img2img-step' && f.step === 1 && f.trialId < 4) {
        submitted.push(new Promise((resolve) => setTimeout(() => {
          rec.submit(decoded(f.trialId + 10, false));
          rec.submit(decoded(f.trialId + 1, true));
          resolve();
        }, 5)));
      }
    });
    rec.submit(decoded(1, true));
    while (submitted.length < 3 || rec.frames.filter((f) => f.kind === 'final').length < (policy === 'complete' ? 1 : 0)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await Promise.all(submitted);
    await renderer.drain();
    assertLowLevelFirst(rec.log);
    const finals = rec.frames.filter((f) => f.kind === 'final').map((f) => f.trialId).sort();
    assert.deepEqual(finals, [1, 2, 3, 4], 'every final trial gets a final frame');
    if (policy === 'complete') {
      assert.deepEqual(renderer.skipped, { img2img: 0, previews: 0, steps: 0, provisional: 0 });
      for (const id of [1, 2, 3, 4]) assert.equal(rec.frames.filter((f) => f.trialId === id && f.kind === 'img2img-step').length, STEPS);
    } else {
      assert.equal(renderer.skipped.img2img, 3, 'trials 1-3 are cut when the next final arrives');
      assert.equal(rec.frames.filter((f) => f.trialId === 4 && f.kind === 'img2img-step').length, STEPS);
    }
  });
}

test('without a UNet the final frame repeats the low-level image', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel('--no-unet') });
  const rec = new Recorder(renderer);
  assert.equal(renderer.stepCount, 0);
  rec.submit(decoded(1, false));
  rec.submit(decoded(1, true));
  await renderer.drain();
  assert.deepEqual(rec.labels, ['1Lp', '1L', '1F']);
  const [, low, final] = rec.frames;
  assert.deepEqual(final.image, low.image);
  assert.equal(final.stepCount, 0);
});

test('same seed gives the same images', { skip }, async () => {
  const finals: Uint8Array[] = [];
  for (const seed of [3, 3, 4]) {
    const renderer = await createRenderer({ model: tinyModel(), seed, format: 'png' });
    const rec = new Recorder(renderer);
    rec.submit(decoded(1, true));
    await renderer.drain();
    finals.push((rec.frames.at(-1) as Frame).image);
  }
  assert.deepEqual(finals[0], finals[1]);
  assert.notDeepEqual(finals[0], finals[2]);
});

test('bad Decoded input is reported and skipped', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel() });
  const rec = new Recorder(renderer);
  rec.submit(decoded(1, true, { lowLevelLatents: undefined }));
  rec.submit(decoded(2, true, { lowLevelLatents: new Float32Array(10) }));
  rec.submit(decoded(3, true, { lowLevelLatents: new Float32Array(256).fill(Number.NaN) }));
  rec.submit(decoded(4, true, { priorEmbedding: new Float32Array(5) }));
  rec.submit(decoded(5, true, { priorEmbedding: undefined, retrievalEmbedding: undefined }));
  await renderer.drain();
  const warnings = rec.warnings;
  assert.match(warnings[0].message, /trial 1 has no lowLevelLatents/);
  assert.match(warnings[1].message, /10 low-level latents.*\[4, 8, 8\] needs 256/);
  assert.match(warnings[2].message, /non-finite/);
  assert.ok(warnings.slice(0, 3).every((w) => w.kind === 'invalid' && w.runId === 'test-run'));
  assert.ok(warnings.some((w) => w.trialId === 4 && /a condition of 5 values.*needs 16/.test(w.message)));
  assert.ok(warnings.some((w) => w.trialId === 5 && /no prior or retrieval embedding/.test(w.message)));
  // Trials 4 and 5 still get their low-level image, as final frame too, without img2img.
  assert.deepEqual(rec.labels, ['4L', '4F', '5L', '5F']);
});

test('estimates after the final one are ignored with a warning', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel('--no-unet') });
  const rec = new Recorder(renderer);
  rec.submit(decoded(1, true));
  rec.submit(decoded(1, true));
  rec.submit(decoded(1, false));
  await renderer.drain();
  assert.deepEqual(rec.labels, ['1L', '1F']);
  assert.deepEqual(rec.warnings.map((w) => w.kind), ['duplicate', 'late']);
});

test('conditionInput picks the embedding that conditions the UNet', { skip }, async () => {
  const images: Uint8Array[] = [];
  for (const conditionInput of ['retrieval', 'prior', undefined]) {
    const fields = conditionInput === undefined ? {} : { conditionInput };
    const renderer = await createRenderer({ model: tinyModel('--unet-fields', JSON.stringify(fields)), format: 'png' });
    const rec = new Recorder(renderer);
    rec.submit(decoded(1, true, { priorEmbedding: new Float32Array(16).fill(0.5), retrievalEmbedding: new Float32Array(16).fill(-0.5) }));
    await renderer.drain();
    images.push((rec.frames.at(-1) as Frame).image);
  }
  assert.notDeepEqual(images[0], images[1]);
  assert.deepEqual(images[2], images[1], 'without conditionInput the prior embedding is used');
});

test('submit after drain throws', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel('--no-unet') });
  await renderer.drain();
  assert.throws(() => renderer.submit(decoded(1, true)), /after drain\(\) or close\(\)/);
});

test('close abandons queued work and counts it', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel(), policy: 'complete' });
  const rec = new Recorder(renderer);
  for (const id of [1, 2, 3]) rec.submit(decoded(id, true));
  rec.submit(decoded(4, false));
  await renderer.close();
  const countAtClose = rec.frames.length;
  assert.ok(rec.completed);
  // Trial 1's low-level frame was in flight and is dropped; 2 and 3 were queued, 4 was provisional.
  assert.deepEqual(rec.frames, []);
  assert.deepEqual(renderer.skipped, { img2img: 3, previews: 3 * STEPS, steps: 3 * STEPS, provisional: 1 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(rec.frames.length, countAtClose, 'no frames after close');
  assert.throws(() => renderer.submit(decoded(5, true)));
});

test('operator drains on source completion', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel('--no-unet') });
  const events = await lastValueFrom(from([decoded(1, false), decoded(1, true), decoded(2, true)]).pipe(renderWith(renderer), toArray()));
  const labels = events.filter((e): e is Frame => e.type === 'frame').map((f) => `${f.trialId}${f.kind}`);
  assert.deepEqual(labels, ['1low-level', '1low-level', '1final', '2low-level', '2final']);
});

test('operator forwards a source error after closing', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel('--no-unet') });
  const failure = new Error('decode stage failed');
  const seen: string[] = [];
  await assert.rejects(
    lastValueFrom(concat(from([decoded(1, true)]), throwError(() => failure)).pipe(renderWith(renderer)), { defaultValue: undefined }),
    (err) => err === failure,
  );
  renderer.events.subscribe({ complete: () => seen.push('complete') });
  assert.throws(() => renderer.submit(decoded(2, true)), /after drain\(\) or close\(\)/);
});

test('operator unsubscribe closes the renderer', { skip }, async () => {
  const renderer = await createRenderer({ model: tinyModel() });
  const source = new Subject<Decoded>();
  const first = lastValueFrom(source.pipe(renderWith(renderer), filter((e) => e.type === 'frame'), take(1)));
  source.next(decoded(1, true));
  const event = await first;
  assert.equal(event.type, 'frame');
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.throws(() => renderer.submit(decoded(2, true)), /after drain\(\) or close\(\)/);
  assert.ok(renderer.skipped.img2img >= 1, 'the refinement in progress is counted as skipped');
});

function editedModel(edit: (manifest: { heads: Record<string, Record<string, unknown>> }, dir: string) => void, ...args: string[]): LoadedManifest {
  const model = tinyModel(...args);
  const dir = mkdtempSync(join(tmpdir(), 'mindeye-render-bad-'));
  cpSync(model.dir, dir, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  edit(manifest, dir);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return loadManifest(dir);
}

const MANIFEST_ERRORS: { name: string; edit: Parameters<typeof editedModel>[0]; code: string; pattern: RegExp }[] = [
  { name: 'missing vaeDecoder head', edit: (m) => { delete m.heads.vaeDecoder; delete m.heads.unet; }, code: 'MODEL_MANIFEST_INVALID', pattern: /field: heads\.vaeDecoder\n.*value: "\(missing\)"/ },
  { name: 'bad outputRange', edit: (m) => { m.heads.vaeDecoder.outputRange = [0, 255]; }, code: 'MODEL_MANIFEST_INVALID', pattern: /heads\.vaeDecoder\.outputRange\n.*value: \[0, 255\]\n.*expected: \[-1, 1\] or \[0, 1\]/ },
  { name: 'missing betaSchedule', edit: (m) => { delete m.heads.unet.betaSchedule; }, code: 'MODEL_MANIFEST_INVALID', pattern: /heads\.unet\.betaSchedule/ },
  { name: 'v-prediction UNet', edit: (m) => { m.heads.unet.prediction = 'v_prediction'; }, code: 'MODEL_MANIFEST_INVALID', pattern: /prediction\n.*"v_prediction"\n.*"epsilon"/ },
  { name: 'strength above 1', edit: (m) => { m.heads.unet.strength = 1.5; }, code: 'MODEL_MANIFEST_INVALID', pattern: /heads\.unet\.strength\n.*1\.5\n.*\[0, 1\]/ },
  { name: 'latentShape of two numbers', edit: (m) => { m.heads.lowLevel.latentShape = [4, 8]; }, code: 'MODEL_MANIFEST_INVALID', pattern: /heads\.lowLevel\.latentShape/ },
  { name: 'latentShape unlike the decoder', edit: (m) => { m.heads.lowLevel.latentShape = [4, 8, 9]; }, code: 'MODEL_SHAPE_MISMATCH', pattern: /vaeDecoder network failed on a test input: .*dimensions[^]*value: \[4, 8, 9\]/ },
  { name: 'imageSize unlike the decoder output', edit: (m) => { m.heads.vaeDecoder.imageSize = [32, 32]; }, code: 'MODEL_SHAPE_MISMATCH', pattern: /value: "float32 \[1, 3, 16, 16\]"\n.*expected: float32 \[1, 3 or 1, 32, 32\]/ },
  {
    name: 'null embedding of the wrong length',
    edit: (m, dir) => { writeFileSync(join(dir, 'null.f32'), new Float32Array(3)); m.heads.unet.nullCondition = 'null.f32'; },
    code: 'MODEL_SHAPE_MISMATCH', pattern: /value: "12 bytes"\n.*expected: 64 bytes \(16 float32\)/,
  },
  { name: 'UNet input name not in the graph', edit: (m) => { m.heads.unet.timestepName = 'time'; }, code: 'MODEL_MANIFEST_INVALID', pattern: /heads\.unet\.timestepName\n.*"time"\n.*sample, timestep, condition/ },
  { name: 'unknown conditionInput', edit: (m) => { m.heads.unet.conditionInput = 'backbone'; }, code: 'MODEL_MANIFEST_INVALID', pattern: /conditionInput\n.*"backbone"\n.*"prior", "retrieval"/ },
  { name: 'UNet file that is not ONNX', edit: (_m, dir) => { writeFileSync(join(dir, 'unet.onnx'), 'not a model'); }, code: 'MODEL_MANIFEST_INVALID', pattern: /unet\.onnx/ },
];

for (const c of MANIFEST_ERRORS) {
  test(`model check rejects ${c.name}`, { skip }, async () => {
    const model = editedModel(c.edit);
    await assert.rejects(createRenderer({ model }), (err) => {
      assert.ok(isMindeyeError(err), `expected a MindeyeError, got ${err}`);
      assert.equal(err.code, c.code, err.message);
      assert.match(err.message, c.pattern);
      return true;
    });
  });
}
