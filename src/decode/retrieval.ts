/**
 * Retrieval by cosine similarity, as MindEye scores it:
 * - image retrieval (`topK`): which bank images are closest to a trial's brain embedding;
 * - brain retrieval (`brainRetrieval`): which trials are closest to an image embedding;
 * - two-alternative forced choice (`twoAfc`): is the brain embedding closer to the seen image
 *   than to its pair-mate (the lure)?
 * Embeddings are flattened (MindEye1's 257 x 768 tokens become one 197,376-wide vector) and
 * compared by cosine similarity, so their scale does not matter.
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';
import { readF32, type LoadedManifest } from './manifest.ts';

export interface EmbeddingBank {
  ids: string[];
  /** Row-major [ids.length, dim]. */
  embeddings: Float32Array;
  dim: number;
}

export interface Match {
  id: string;
  index: number;
  score: number;
}

function norm(v: Float32Array, offset = 0, length = v.length): number {
  let sum = 0;
  for (let i = offset; i < offset + length; i++) sum += v[i] * v[i];
  return Math.sqrt(sum);
}

/** Cosine similarity of two equal-length vectors; 0 when either has zero length. */
export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw widthError('b', b.length, a.length);
  return cosineAt(a, b, 0, norm(a));
}

function cosineAt(query: Float32Array, rows: Float32Array, offset: number, queryNorm: number): number {
  let dot = 0;
  let rowSq = 0;
  for (let i = 0; i < query.length; i++) {
    const r = rows[offset + i];
    dot += query[i] * r;
    rowSq += r * r;
  }
  const denominator = queryNorm * Math.sqrt(rowSq);
  return denominator === 0 ? 0 : dot / denominator;
}

function widthError(field: string, got: number, expected: number): MindeyeError {
  return new MindeyeError('MODEL_SHAPE_MISMATCH', 'An embedding has another width than the bank it is compared with.', {
    field, value: `${got} values`, expected: `${expected} values`,
    fix: 'compare embeddings of the same space (the manifest retrieval.space and imageBank.space must agree)',
  });
}

/** Cosine similarity of `query` with every row of `rows` ([count, query.length]). */
export function similarities(query: Float32Array, rows: Float32Array, dim: number): Float64Array {
  if (query.length !== dim) throw widthError('embedding', query.length, dim);
  if (rows.length % dim !== 0) throw widthError('bank', rows.length, dim);
  const count = rows.length / dim;
  const queryNorm = norm(query);
  const out = new Float64Array(count);
  for (let r = 0; r < count; r++) out[r] = cosineAt(query, rows, r * dim, queryNorm);
  return out;
}

/** Indices sorted by descending score; ties keep the lower index first. */
function ranked(scores: Float64Array): number[] {
  return Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
}

/** Returns the k bank entries most similar to `embedding`, best first. */
export function topK(embedding: Float32Array, bank: EmbeddingBank, k: number): Match[] {
  if (!Number.isInteger(k) || k < 1) {
    throw new MindeyeError('CLI_USAGE', 'Invalid k for top-k retrieval.', { field: 'k', value: k, expected: 'a positive integer', fix: 'pass k >= 1' });
  }
  if (bank.embeddings.length !== bank.ids.length * bank.dim) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The image bank has another number of rows than ids.', {
      field: 'imageBank.embeddings', value: `${bank.embeddings.length / bank.dim} rows`, expected: `${bank.ids.length} (ids)`,
      fix: 'rebuild the bank with mindeye-rt bank',
    });
  }
  const scores = similarities(embedding, bank.embeddings, bank.dim);
  return ranked(scores).slice(0, k).map((index) => ({ id: bank.ids[index], index, score: scores[index] }));
}

/** 1-based rank of the entry `targetIndex` among all rows (1 = the most similar). */
export function rankOf(embedding: Float32Array, rows: Float32Array, dim: number, targetIndex: number): number {
  const scores = similarities(embedding, rows, dim);
  if (!Number.isInteger(targetIndex) || targetIndex < 0 || targetIndex >= scores.length) {
    throw new MindeyeError('CLI_USAGE', 'The target index is outside the candidates.', {
      field: 'targetIndex', value: targetIndex, expected: `0..${scores.length - 1}`, fix: 'pass the row of the true image',
    });
  }
  let better = 0;
  for (let i = 0; i < scores.length; i++) {
    if (scores[i] > scores[targetIndex] || (scores[i] === scores[targetIndex] && i < targetIndex)) better++;
  }
  return better + 1;
}

/**
 * Brain retrieval: ranks trials (rows of `brainEmbeddings`, [trials, dim]) by similarity to an
 * image embedding, best first.
 */
export function brainRetrieval(imageEmbedding: Float32Array, brainEmbeddings: Float32Array, k = brainEmbeddings.length / imageEmbedding.length): Array<{ trial: number; score: number }> {
  const scores = similarities(imageEmbedding, brainEmbeddings, imageEmbedding.length);
  return ranked(scores).slice(0, k).map((trial) => ({ trial, score: scores[trial] }));
}

/**
 * Two-alternative forced choice: true when the brain embedding is more similar to the seen image
 * than to the lure (its pair-mate). A tie counts as a miss.
 */
export function twoAfc(brainEmbedding: Float32Array, seen: Float32Array, lure: Float32Array): boolean {
  return cosine(brainEmbedding, seen) > cosine(brainEmbedding, lure);
}

/** Fraction of correct 2-AFC trials; `trials` pairs each brain embedding with its seen image and lure. */
export function twoAfcAccuracy(trials: ReadonlyArray<{ brain: Float32Array; seen: Float32Array; lure: Float32Array }>): number {
  if (trials.length === 0) return Number.NaN;
  let correct = 0;
  for (const t of trials) if (twoAfc(t.brain, t.seen, t.lure)) correct++;
  return correct / trials.length;
}

/** Reads the model's image bank (ids JSON + float32 rows), checking their sizes. */
export function loadImageBank(model: LoadedManifest): EmbeddingBank {
  const spec = model.manifest.imageBank;
  if (spec === undefined) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The model has no image bank.', {
      file: model.manifestPath, field: 'imageBank', fix: 'build one with `mindeye-rt bank --images DIR --encoder MODEL_DIR --out MODEL_DIR`',
    });
  }
  const idsFile = join(model.dir, spec.ids);
  let ids: unknown;
  try {
    ids = JSON.parse(readFileSync(idsFile, 'utf8'));
  } catch (err) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `The image bank ids could not be read: ${(err as Error).message}`, {
      file: idsFile, field: 'imageBank.ids', expected: 'a JSON array of strings', fix: 'rebuild the bank with mindeye-rt bank',
    });
  }
  if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The image bank ids are not a list of strings.', {
      file: idsFile, field: 'imageBank.ids', expected: 'a JSON array of strings', fix: 'rebuild the bank with mindeye-rt bank',
    });
  }
  if (!Number.isInteger(spec.dim) || spec.dim <= 0) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'Invalid image bank width.', {
      file: model.manifestPath, field: 'imageBank.dim', value: spec.dim, expected: 'a positive integer', fix: 'rebuild the bank',
    });
  }
  const embeddings = readF32(join(model.dir, spec.embeddings), ids.length * spec.dim, 'imageBank.embeddings');
  return { ids: ids as string[], embeddings, dim: spec.dim };
}
