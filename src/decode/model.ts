/**
 * A loaded model: manifest, ONNX sessions for the heads that decode voxels, normalisation
 * statistics and the image bank. `decodeBatch` runs the voxel heads on normalised betas.
 *
 * Head tensors (names from the manifest, defaults in brackets):
 * - classifier: [`voxels`] float32 [batch, V] -> [`scores`] float32 [batch, labels]
 * - backbone: float32 [batch, V] -> float32 [batch, dim]
 * - retrieval: float32 [batch, backbone dim] -> float32 [batch, embedding dim]
 * - lowLevel: float32 [batch, backbone dim] -> float32 [batch, C, H, W] latents
 * Heads consumed by other stages (vaeDecoder, unet, prior, imageEncoder) are not run here.
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';
import { logger } from '../log.ts';
import { loadManifest, readF32, type HeadSpec, type LoadedManifest } from './manifest.ts';
import { createSession, ort, type Device } from './ort.ts';
import { similarities } from './retrieval.ts';
import { nowMs } from '../events.ts';

export interface ImageBank {
  ids: string[];
  dim: number;
  /** Unit-normalised embeddings, row-major [ids.length, dim]. */
  embeddings: Float32Array;
  thumbnailsDir?: string;
}

export interface HeadOutputs {
  classifierScores?: Float32Array;
  latent?: Float32Array;
  retrievalEmbedding?: Float32Array;
  lowLevelLatents?: Float32Array;
  /** Image embedding sampled by the diffusion prior (the reconstruction condition). */
  priorEmbedding?: Float32Array;
}

/** Receives one timed step of `decodeBatch`: its stage name, start and end (performance.now() ms). */
export type HeadTimingCallback = (stage: string, startMs: number, endMs: number) => void;

/** Heads this stage runs, in dependency order. */
const DECODE_HEADS = ['classifier', 'backbone', 'retrieval', 'lowLevel'] as const;
type DecodeHead = (typeof DECODE_HEADS)[number];

export interface LoadedModel extends LoadedManifest {
  voxelCount: number;
  labels?: string[];
  bank?: ImageBank;
  calibration?: { mean: Float32Array; std: Float32Array };
  sessions: Map<DecodeHead, { spec: HeadSpec; session: ort.InferenceSession }>;
  /**
   * Runs the voxel heads (and the prior) on a batch of normalised betas. `onTiming` receives
   * each head's run as stage `decode:<head>` and the prior's sampling loop as `prior-sampling`.
   */
  decodeBatch(betas: Float32Array[], onTiming?: HeadTimingCallback): Promise<HeadOutputs[]>;
  close(): Promise<void>;
}

function normalizeRows(m: Float32Array, rows: number, dim: number): void {
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += m[r * dim + j] ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < dim; j++) m[r * dim + j] *= inv;
  }
}

function loadBank(loaded: LoadedManifest): ImageBank | undefined {
  const b = loaded.manifest.imageBank;
  if (!b) return undefined;
  const idsFile = join(loaded.dir, b.ids);
  const ids = (JSON.parse(readFileSync(idsFile, 'utf8')) as (string | number)[]).map(String);
  const embeddings = readF32(join(loaded.dir, b.embeddings), ids.length * b.dim, 'imageBank.embeddings');
  normalizeRows(embeddings, ids.length, b.dim);
  return { ids, dim: b.dim, embeddings, thumbnailsDir: b.thumbnails ? join(loaded.dir, b.thumbnails) : undefined };
}

function headInputWidth(session: ort.InferenceSession): number | undefined {
  const meta = session.inputMetadata?.[0] as { isTensor?: boolean; shape?: readonly (number | string)[] } | undefined;
  if (!meta || !meta.isTensor || !meta.shape) return undefined;
  const last = meta.shape[meta.shape.length - 1];
  return typeof last === 'number' && last > 0 ? last : undefined;
}

export async function loadModel(dir: string, opts: { device: Device; maskVoxels?: number }): Promise<LoadedModel> {
  const loaded = loadManifest(dir);
  const m = loaded.manifest;
  if (opts.maskVoxels !== undefined && opts.maskVoxels !== m.voxels.count) {
    throw new MindeyeError('MODEL_VOXELS_MISMATCH', 'The model expects a different number of voxels than the mask selects.', {
      file: loaded.manifestPath, field: 'voxels.count', value: m.voxels.count,
      expected: `${opts.maskVoxels} (voxels in the mask)`,
      fix: 'use the mask the model was trained with (omit --mask to use the model\'s own mask) or refit the model on this mask',
    });
  }
  const sessions = new Map<DecodeHead, { spec: HeadSpec; session: ort.InferenceSession }>();
  for (const name of DECODE_HEADS) {
    const spec = m.heads[name];
    if (!spec) continue;
    const file = join(loaded.dir, spec.file);
    const session = await createSession(file, { device: opts.device });
    if (spec.input === 'voxels') {
      const width = headInputWidth(session);
      if (width !== undefined && width !== m.voxels.count) {
        throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'A head\'s input width differs from the model\'s voxel count.', {
          file, field: `input tensor ${session.inputNames[0]}`, value: `[batch, ${width}]`,
          expected: `[batch, ${m.voxels.count}] (voxels.count in manifest.json)`,
          fix: 're-export the head for this mask, or correct voxels.count',
        });
      }
    }
    sessions.set(name, { spec, session });
  }
  if (sessions.size === 0) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The model has no head that this stage can run on voxels.', {
      file: loaded.manifestPath, field: 'heads', value: Object.keys(m.heads).join(', '),
      expected: `one of ${DECODE_HEADS.join(', ')}`, fix: 'add a classifier or a backbone head',
    });
  }
  const labels = Array.isArray(m.heads.classifier?.labels) ? (m.heads.classifier.labels as string[]) : undefined;
  let calibration: LoadedModel['calibration'];
  if (m.normalization?.kind === 'calibration') {
    calibration = {
      mean: readF32(join(loaded.dir, m.normalization.mean), m.voxels.count, 'normalization.mean'),
      std: readF32(join(loaded.dir, m.normalization.std), m.voxels.count, 'normalization.std'),
    };
  }
  const bank = loadBank(loaded);
  // The diffusion prior runs its sampling loop here (src/decode/prior.ts), once per batch.
  const prior = m.heads.prior ? await (await import('./prior.ts')).createPriorSampler(loaded, { device: opts.device }) : undefined;
  logger.info({ model: m.name, heads: [...sessions.keys()], voxels: m.voxels.count, device: opts.device }, 'model loaded');

  async function runHead(name: DecodeHead, input: Float32Array, batch: number): Promise<{ data: Float32Array; dims: readonly number[] }> {
    const entry = sessions.get(name)!;
    const inputName = entry.spec.inputName ?? entry.session.inputNames[0];
    const outputName = entry.spec.outputName ?? entry.session.outputNames[0];
    const width = input.length / batch;
    const result = await entry.session.run({ [inputName]: new ort.Tensor('float32', input, [batch, width]) });
    const out = result[outputName];
    return { data: out.data as Float32Array, dims: out.dims };
  }

  async function decodeBatch(betas: Float32Array[], onTiming?: HeadTimingCallback): Promise<HeadOutputs[]> {
    const batch = betas.length;
    const V = m.voxels.count;
    const voxels = new Float32Array(batch * V);
    betas.forEach((b, i) => voxels.set(b, i * V));
    const produced = new Map<string, { data: Float32Array; dims: readonly number[] }>();
    produced.set('voxels', { data: voxels, dims: [batch, V] });
    for (const name of DECODE_HEADS) {
      const entry = sessions.get(name);
      if (!entry) continue;
      const input = produced.get(entry.spec.input);
      if (!input) continue;
      const startMs = nowMs();
      produced.set(name, await runHead(name, input.data, batch));
      onTiming?.(`decode:${name}`, startMs, nowMs());
    }
    const split = (name: string) => {
      const p = produced.get(name);
      if (!p) return undefined;
      const width = p.data.length / batch;
      return Array.from({ length: batch }, (_, i) => p.data.slice(i * width, (i + 1) * width));
    };
    const classifier = split('classifier');
    const latent = split('backbone');
    const retrieval = split('retrieval');
    const lowLevel = split('lowLevel');
    let priorEmbeddings: Float32Array[] | undefined;
    if (prior) {
      const input = produced.get(m.heads.prior.input);
      if (input) {
        const startMs = nowMs();
        const sampled = await prior.sample(input.data, batch);
        onTiming?.('prior-sampling', startMs, nowMs());
        const width = sampled.length / batch;
        priorEmbeddings = Array.from({ length: batch }, (_, i) => sampled.slice(i * width, (i + 1) * width));
      }
    }
    return betas.map((_, i) => ({
      priorEmbedding: priorEmbeddings?.[i],
      classifierScores: classifier?.[i],
      latent: latent?.[i],
      retrievalEmbedding: retrieval?.[i],
      lowLevelLatents: lowLevel?.[i],
    }));
  }

  return {
    ...loaded,
    voxelCount: m.voxels.count,
    labels,
    bank,
    calibration,
    sessions,
    decodeBatch,
    async close() {
      for (const { session } of sessions.values()) await session.release();
      await prior?.head.session.release();
    },
  };
}

/** Ranks candidates by score, best first; returns the top k and the rank of `trueId` (1-based). */
export function rankCandidates(ids: string[], scores: ArrayLike<number>, k: number, trueId?: string) {
  const order = ids.map((id, i) => ({ id, score: scores[i] })).sort((a, b) => b.score - a.score);
  const trueIndex = trueId === undefined ? -1 : order.findIndex((c) => c.id === trueId);
  return { topK: order.slice(0, k), trueRank: trueIndex >= 0 ? trueIndex + 1 : undefined, candidateCount: ids.length };
}

/** Cosine similarity of one embedding against every bank row (src/decode/retrieval.ts). */
export function bankScores(bank: ImageBank, embedding: Float32Array): Float64Array {
  return similarities(embedding, bank.embeddings, bank.dim);
}
