// End-to-end `mindeye-rt train-demo --quick`, which simulates, records betas through the live
// pipeline, trains and exports. The test then decodes the recorded test betas with the exported
// ONNX heads and compares the result with the trainer's own PyTorch evaluation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadManifest, readF32 } from '../../src/decode/manifest.ts';
import { createSession, ort } from '../../src/decode/ort.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'mindeye-rt.js');

interface RecordedTrial {
  stimulusId: string;
  row: number;
}

test('quick training writes a working model', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'train-demo-quick-'));
  const out = join(dir, 'model');
  const work = join(dir, 'work');
  try {
    const result = spawnSync(process.execPath, [BIN, 'train-demo', '--quick', '--seed', '3', '--out', out, '--work', work, '--threads', '1'],
      { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MINDEYE_LOG_LEVEL: 'warn' } });
    assert.equal(result.status, 0, result.stderr.slice(-3000));

    const { manifest } = loadManifest(out);
    assert.equal(manifest.simulated, true);
    assert.equal(manifest.name, 'demo-quick');
    const provenance = manifest.provenance as { seed: number; quick: boolean; evaluation: Record<string, number> };
    assert.equal(provenance.seed, 3);
    assert.equal(provenance.quick, true);
    const evaluation = provenance.evaluation;
    assert.ok(evaluation.candidates > 0);
    assert.equal(evaluation.retrievalChance, Number((1 / evaluation.candidates).toFixed(4)));

    // Test trials: the recorded final betas of the runs whose stimuli are in the test split.
    const split = JSON.parse(readFileSync(join(work, 'sim', 'simulation', 'stimuli.json'), 'utf8')) as { images: { id: number; split: string }[] };
    const testIds = new Set(split.images.filter((i) => i.split === 'test').map((i) => String(i.id)));
    const voxelCount = manifest.voxels.count;
    const queries: Float32Array[] = [];
    const truth: string[] = [];
    for (const name of readdirSync(join(work, 'betas')).sort()) {
      const recordDir = join(work, 'betas', name);
      const trials = readFileSync(join(recordDir, 'trials.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as RecordedTrial);
      const betas = readF32(join(recordDir, 'betas_final.f32'));
      for (const trial of trials) {
        if (!testIds.has(String(trial.stimulusId))) continue;
        queries.push(betas.subarray(trial.row * voxelCount, (trial.row + 1) * voxelCount));
        truth.push(String(trial.stimulusId));
      }
    }
    assert.equal(queries.length, evaluation.testTrials);

    // z-score with the model's calibration statistics, then backbone -> retrieval in onnxruntime.
    const norm = manifest.normalization as { mean: string; std: string };
    const mean = readF32(join(out, norm.mean), voxelCount);
    const std = readF32(join(out, norm.std), voxelCount);
    const input = new Float32Array(queries.length * voxelCount);
    queries.forEach((q, n) => { for (let v = 0; v < voxelCount; v++) input[n * voxelCount + v] = (q[v] - mean[v]) / std[v]; });
    const backbone = await createSession(join(out, manifest.heads.backbone.file), { device: 'cpu', threads: 1 });
    const retrieval = await createSession(join(out, manifest.heads.retrieval.file), { device: 'cpu', threads: 1 });
    const latent = (await backbone.run({ voxels: new ort.Tensor('float32', input, [queries.length, voxelCount]) })).latent;
    const embedding = (await retrieval.run({ latent })).embedding.data as Float32Array;

    const bankIds = JSON.parse(readFileSync(join(out, manifest.imageBank!.ids), 'utf8')) as string[];
    const dim = manifest.imageBank!.dim;
    const bank = readF32(join(out, manifest.imageBank!.embeddings), bankIds.length * dim);
    let correct = 0;
    for (let q = 0; q < queries.length; q++) {
      let best = -1, bestScore = -Infinity;
      for (let r = 0; r < bankIds.length; r++) {
        let score = 0;
        for (let k = 0; k < dim; k++) score += embedding[q * dim + k] * bank[r * dim + k];
        if (score > bestScore) { bestScore = score; best = r; }
      }
      if (bankIds[best] === truth[q]) correct++;
    }
    // Same betas, same weights: ONNX and PyTorch agree up to a near-tie flipping one trial.
    assert.ok(Math.abs(correct / queries.length - evaluation.retrievalTop1) <= 1 / queries.length + 1e-4,
      `onnxruntime top-1 ${correct}/${queries.length}, trainer ${evaluation.retrievalTop1}`);
    assert.ok(existsSync(join(out, manifest.imageBank!.thumbnails as string, `${bankIds[0]}.jpg`)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
