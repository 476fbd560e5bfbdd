/**
 * `bench --full-width`: the full-size MindEye1 heads (subject 1, random weights) on one machine,
 * onnxruntime-node (ours) next to PyTorch (Debian python3-torch), at batch 1 and batch 8.
 *
 * tools/bench_full_width.py builds the networks, exports them with the exporter's ONNX writer
 * (the 3.8 GB backbone goes to external data) and times PyTorch. Then this process loads the
 * same files with onnxruntime-node and times them. Peak RSS is read after the backbone session
 * is created: the weights load from the file path inside onnxruntime, so they never pass through
 * the JS heap. The files are deleted at the end. Needs about 12 GB of free disk and memory.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync, statSync, readdirSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MindeyeError } from '../errors.ts';
import { CUDA_INSTALL_COMMAND, detectCudaProvider, loadHead, ort, runHead, type Device, type LoadedHead } from '../decode/ort.ts';
import type { LoadedManifest, ModelManifest } from '../decode/manifest.ts';
import { logger } from '../log.ts';

const SCRIPT = fileURLToPath(new URL('../../tools/bench_full_width.py', import.meta.url));
const REQUIRED_FREE_BYTES = 12 * 1024 ** 3;
const VOXELS = 15724;
const TOKENS = 257;
const CLIP = 768;

export interface FullWidthOptions {
  device?: Device;
  /** Folder for the ONNX files (default: the OS temp folder). */
  scratchDir?: string;
  batches?: number[];
  repeats?: number;
  python?: string;
}

interface TorchReport {
  torch: string;
  threads: number;
  params: Record<string, number>;
  files: Record<string, string[]>;
  exportSeconds: number;
  timingsMs: Record<string, Record<string, number>>;
  peakRssMb: number;
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    if (line) return line.split(':')[1].trim();
  } catch {
    // Not Linux: fall back to what Node reports.
  }
  return cpus()[0]?.model ?? 'unknown';
}

function runPython(python: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new MindeyeError('DEVICE_UNAVAILABLE', `The PyTorch side of the full-width bench failed (exit ${code}).`, {
        file: SCRIPT, value: stderr.trim().split('\n').slice(-5).join(' | '),
        fix: 'check python3-torch and python3-onnx (apt-get install python3-torch python3-onnx), free memory and disk',
      }));
    });
  });
}

async function median(fn: () => Promise<unknown>, repeats: number): Promise<number> {
  await fn();
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const started = performance.now();
    await fn();
    samples.push(performance.now() - started);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

function randomFloat32(size: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = Math.random() * 2 - 1;
  return out;
}

function mb(bytes: number): number {
  return Math.round(bytes / 1024 / 1024);
}

/** Runs the comparison and returns its figures (timings in ms, memory in MB). */
export async function benchFullWidth(opts: FullWidthOptions = {}): Promise<Record<string, unknown>> {
  const device = opts.device ?? 'cpu';
  const batches = opts.batches ?? [1, 8];
  const repeats = opts.repeats ?? 3;
  if (device === 'cuda') {
    // Fail before the long PyTorch export when the CUDA provider is not installed.
    const cuda = detectCudaProvider();
    if (!cuda.available) {
      throw new MindeyeError('DEVICE_UNAVAILABLE', 'The CUDA execution provider of onnxruntime-node is not installed.', {
        field: '--device', value: 'cuda', expected: `${cuda.missing.join(', ')} in ${cuda.binDir}`,
        fix: `install it with \`${CUDA_INSTALL_COMMAND}\` (see docs/models.md), or run the bench with --device cpu`,
      });
    }
  }
  const base = opts.scratchDir ?? tmpdir();
  const fs = statfsSync(base);
  const freeBytes = fs.bavail * fs.bsize;
  if (freeBytes < REQUIRED_FREE_BYTES) {
    throw new MindeyeError('DEVICE_UNAVAILABLE', 'Not enough free disk for the full-width bench.', {
      file: base, value: `${mb(freeBytes)} MB free`, expected: `at least ${mb(REQUIRED_FREE_BYTES)} MB`,
      fix: 'free disk space or set TMPDIR to a larger disk',
    });
  }
  const dir = mkdtempSync(join(base, 'mindeye-full-width-'));
  try {
    logger.info({ dir }, 'full-width bench: building and exporting the PyTorch networks');
    const torchOut = await runPython(opts.python ?? '/usr/bin/python3', [SCRIPT, '--out', dir, '--batch', batches.join(','), '--repeats', String(repeats)]);
    const torchReport = JSON.parse(torchOut.trim().split('\n').pop() as string) as TorchReport;
    const diskBytes = readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0);

    const manifest: ModelManifest = {
      format: 'mindeye-rt-model', version: 1, name: 'full-width-random', voxels: { count: VOXELS },
      heads: {
        backbone: { file: 'backbone.onnx', input: 'voxels', inputName: 'voxels', outputName: 'latent' },
        retrieval: { file: 'retrieval.onnx', input: 'backbone', inputName: 'latent', outputName: 'embedding' },
        lowLevel: { file: 'lowlevel.onnx', input: 'voxels', inputName: 'voxels', outputName: 'latents' },
        prior: { file: 'prior.onnx', input: 'backbone', inputName: 'brain_embed', outputName: 'pred_x_start' },
      },
    };
    const model: LoadedManifest = { dir, manifestPath: join(dir, 'manifest.json'), manifest };
    const rssBefore = process.memoryUsage().rss;
    const loadStarted = performance.now();
    const backbone = await loadHead(model, 'backbone', { device });
    const backboneLoadMs = performance.now() - loadStarted;
    const rssAfterBackbone = process.memoryUsage().rss;
    const heapAfterBackbone = process.memoryUsage().heapUsed;
    const heads: Record<string, LoadedHead> = { backbone };
    for (const name of ['retrieval', 'lowLevel', 'prior']) heads[name] = await loadHead(model, name, { device });

    const timingsMs: Record<string, Record<string, number>> = {};
    for (const batch of batches) {
      const voxels = new ort.Tensor('float32', randomFloat32(batch * VOXELS), [batch, VOXELS]);
      const latentData = await runHead(backbone, { voxels });
      const latent = new ort.Tensor('float32', latentData, [batch, TOKENS, CLIP]);
      const row: Record<string, number> = {
        backbone: await median(() => runHead(backbone, { voxels }), repeats),
        retrieval: await median(() => runHead(heads.retrieval, { latent }), repeats),
        lowLevel: await median(() => runHead(heads.lowLevel, { voxels }), repeats),
        prior: await median(() => runHead(heads.prior, {
          image_embed: latent, brain_embed: latent,
          timestep: new ort.Tensor('float32', new Float32Array(batch).fill(50), [batch]),
          cond_keep: new ort.Tensor('float32', new Float32Array(batch).fill(1), [batch]),
        }), repeats),
      };
      row.total = row.backbone + row.retrieval + row.lowLevel + row.prior;
      timingsMs[String(batch)] = row;
    }
    await Promise.all(Object.values(heads).map((h) => h.session.release()));

    const ratio: Record<string, number> = {};
    for (const batch of batches) {
      const key = String(batch);
      ratio[key] = Number((torchReport.timingsMs[key].total / timingsMs[key].total).toFixed(3));
    }
    return {
      hardware: { nproc: availableParallelism(), cpuModel: cpuModel(), device },
      params: torchReport.params,
      diskMb: mb(diskBytes),
      exportSeconds: Number(torchReport.exportSeconds.toFixed(1)),
      onnxruntime: {
        timingsMs,
        backboneLoadMs: Math.round(backboneLoadMs),
        rssBeforeLoadMb: mb(rssBefore),
        rssAfterBackboneMb: mb(rssAfterBackbone),
        heapUsedAfterBackboneMb: mb(heapAfterBackbone),
        peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      },
      pytorch: { version: torchReport.torch, threads: torchReport.threads, timingsMs: torchReport.timingsMs, peakRssMb: Math.round(torchReport.peakRssMb) },
      // PyTorch time / onnxruntime time for backbone + retrieval + low-level + one prior step; above 1 means ours is faster.
      ratioTorchOverOurs: ratio,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const result = await benchFullWidth();
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}
