/** Shared set-up for the render tests: tiny ONNX models written by make_tiny_model.py, Decoded events. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Decoded } from '../../src/events.ts';
import { loadManifest, type LoadedManifest } from '../../src/decode/manifest.ts';
import { runPython } from '../helpers/python.ts';

export const MAKE_TINY_MODEL = new URL('./make_tiny_model.py', import.meta.url).pathname;
export const LATENT_SHAPE: [number, number, number] = [4, 8, 8];
export const LATENT_COUNT = 4 * 8 * 8;
export const COND_DIM = 16;

const cache = new Map<string, string>();

/** Writes (once per argument list and process) a tiny model directory and loads its manifest. */
export function tinyModel(...args: string[]): LoadedManifest {
  const key = JSON.stringify(args);
  let dir = cache.get(key);
  if (dir === undefined) {
    dir = mkdtempSync(join(tmpdir(), 'mindeye-render-'));
    runPython([MAKE_TINY_MODEL, '--out', dir, ...args]);
    cache.set(key, dir);
  }
  return loadManifest(dir);
}

/** Smooth, trial-dependent latents in roughly the range of scaled SD latents. */
export function latentsFor(trialId: number, count = LATENT_COUNT): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => 0.8 * Math.sin(0.37 * i + trialId) + 0.1 * Math.cos(1.3 * i * (trialId + 1)));
}

export function conditionFor(trialId: number, dim = COND_DIM): Float32Array {
  return Float32Array.from({ length: dim }, (_, i) => Math.cos(0.5 * i + 2 * trialId));
}

export function decoded(trialId: number, final: boolean, extra: Partial<Decoded> = {}): Decoded {
  return {
    type: 'decoded', runId: 'test-run', volIdx: 10 + trialId, receivedAtMs: 1000 + trialId, trialId, stimulusId: `img${trialId}`,
    final, volumesSinceOnset: final ? 6 : 3, estimatedAtMs: 2000 + trialId, decodedAtMs: 2001 + trialId,
    lowLevelLatents: latentsFor(trialId), priorEmbedding: conditionFor(trialId), topK: [], ...extra,
  } as Decoded;
}
