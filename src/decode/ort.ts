/**
 * ONNX Runtime sessions for model heads. Every network at inference runs here, on the CPU by
 * default or on CUDA when asked.
 *
 * Sessions are created once per head (`loadHead`), warmed up with one zero batch so that the
 * first trial does not pay for kernel selection, and reused. `runBatch` stacks several trials
 * into one call when more than one is ready.
 *
 * CUDA: onnxruntime-node ships its CUDA provider (libonnxruntime_providers_cuda.so and
 * libonnxruntime_providers_shared.so) outside the npm package. Its install script downloads
 * them from NuGet (Microsoft.ML.OnnxRuntime.Gpu.Linux), a step this project skips through
 * `onnxruntime-node-install=skip` in .npmrc. docs/models.md gives the install command.
 */
import * as ort from 'onnxruntime-node';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { MindeyeError } from '../errors.ts';
import { stageLogger } from '../log.ts';
import type { HeadSpec, LoadedManifest } from './manifest.ts';

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device: Device;
  /** Intra-op threads; 0 lets onnxruntime choose. */
  threads?: number;
}

const log = stageLogger('decode');

export const CUDA_INSTALL_COMMAND = 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js';

export interface CudaProviderStatus {
  available: boolean;
  /** Folder where onnxruntime-node looks for the provider libraries. */
  binDir: string;
  missing: string[];
}

/** Checks whether onnxruntime-node's CUDA provider libraries are installed beside its binding. */
export function detectCudaProvider(): CudaProviderStatus {
  const require = createRequire(import.meta.url);
  const pkgDir = dirname(require.resolve('onnxruntime-node/package.json'));
  const binDir = join(pkgDir, 'bin', 'napi-v6', process.platform, process.arch);
  const required = ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'];
  const missing = process.platform === 'linux' && process.arch === 'x64'
    ? required.filter((name) => !existsSync(join(binDir, name)))
    : required;
  return { available: missing.length === 0, binDir, missing };
}

function cudaUnavailable(file: string, reason: string): MindeyeError {
  return new MindeyeError('DEVICE_UNAVAILABLE', `The CUDA execution provider of onnxruntime-node is not available: ${reason}`, {
    file, field: '--device', value: 'cuda',
    expected: 'onnxruntime-node CUDA 12 provider libraries, CUDA 12 and cuDNN 9 on the library path (Linux x64 only)',
    fix: `install the provider with \`${CUDA_INSTALL_COMMAND}\` (downloads from NuGet; see docs/models.md), or use --device cpu`,
  });
}

export async function createSession(file: string, opts: SessionOptions): Promise<ort.InferenceSession> {
  if (!existsSync(file)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'ONNX file not found.', { file, fix: 'check the model directory and its manifest.json' });
  }
  if (opts.device === 'cuda') {
    const cuda = detectCudaProvider();
    if (!cuda.available) throw cudaUnavailable(file, `${cuda.missing.join(', ')} not found in ${cuda.binDir}`);
  }
  const options: ort.InferenceSession.SessionOptions = {
    // No CPU fallback for --device cuda, so that a CUDA set-up problem is an error and not a slow run.
    executionProviders: opts.device === 'cuda' ? ['cuda'] : ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads ?? 0,
  };
  try {
    return await ort.InferenceSession.create(file, options);
  } catch (err) {
    const message = (err as Error).message;
    if (opts.device === 'cuda' && /cuda|cudnn|provider|libcu/i.test(message)) throw cudaUnavailable(file, message);
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `onnxruntime could not load the model: ${message}`, {
      file, fix: 'check that the file is a valid ONNX model (python3 -c "import onnx; onnx.checker.check_model(FILE)")',
    });
  }
}

/**
 * Rejects float16 heads on the CPU, because float16 is meant for CUDA. onnxruntime 1.31 can run
 * the exporter's float16 graphs on the CPU, but through float32 casts. There they lose accuracy
 * (max abs diff 1.7e-3 against float32 on the parity test backbone).
 */
function float16OnCpu(file: string, field: string): MindeyeError {
  return new MindeyeError('MODEL_DTYPE_UNSUPPORTED', 'This head is stored in float16, which mindeye-rt runs only with --device cuda.', {
    file, field, value: 'float16', expected: 'a float32 head on --device cpu',
    fix: 'use --device cuda, or re-export without --fp16 (mindeye-rt export ... without --fp16)',
  });
}

/** One head of a model directory with its session and tensor names. */
export interface LoadedHead {
  name: string;
  file: string;
  spec: HeadSpec;
  session: ort.InferenceSession;
  device: Device;
  inputNames: readonly string[];
  outputName: string;
}

function tensorMetadata(session: ort.InferenceSession, name: string, kind: 'input' | 'output'): ort.InferenceSession.TensorValueMetadata | undefined {
  const list = kind === 'input' ? session.inputMetadata : session.outputMetadata;
  const found = list.find((m) => m.name === name);
  return found !== undefined && found.isTensor ? found : undefined;
}

/**
 * Creates the session of head `name`, checks its tensor names and data types against the
 * manifest, and warms it up with one zero batch.
 */
export async function loadHead(model: LoadedManifest, name: string, opts: SessionOptions): Promise<LoadedHead> {
  const spec = model.manifest.heads[name];
  if (spec === undefined) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `The model has no "${name}" head.`, {
      file: model.manifestPath, field: `heads.${name}`, expected: `one of ${Object.keys(model.manifest.heads).join(', ')}`,
      fix: 'use a model directory that has this head, or export it (mindeye-rt export)',
    });
  }
  const file = join(model.dir, spec.file);
  if (typeof spec.externalData === 'string' && !existsSync(join(model.dir, spec.externalData))) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'The external weight file of an ONNX head does not exist.', {
      file: model.manifestPath, field: `heads.${name}.externalData`, value: spec.externalData,
      expected: `a file at ${join(model.dir, spec.externalData)}`, fix: 'copy the .data file next to the .onnx file',
    });
  }
  if (spec.dtype === 'float16' && opts.device === 'cpu') throw float16OnCpu(file, `heads.${name}.dtype`);
  const session = await createSession(file, opts);
  const inputNames = session.inputNames;
  const outputName = spec.outputName ?? session.outputNames[0];
  if (!session.outputNames.includes(outputName)) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The ONNX head has no output with the name the manifest gives.', {
      file, field: `heads.${name}.outputName`, value: outputName, expected: `one of ${session.outputNames.join(', ')}`,
      fix: 'fix outputName in manifest.json or re-export the model',
    });
  }
  for (const input of inputNames) {
    const meta = tensorMetadata(session, input, 'input');
    if (meta?.type === 'float16' && opts.device === 'cpu') throw float16OnCpu(file, `input ${input}`);
  }
  const head: LoadedHead = { name, file, spec, session, device: opts.device, inputNames, outputName };
  await warmUp(head);
  return head;
}

/** Concrete shape of a head input for `batch` rows; symbolic dimensions other than the first must be fixed. */
export function inputShape(head: LoadedHead, input: string, batch: number): number[] {
  const meta = tensorMetadata(head.session, input, 'input');
  if (meta === undefined || meta.shape.length === 0) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The ONNX head does not declare the shape of an input.', {
      file: head.file, field: `input ${input}`, expected: 'a tensor input with a known rank', fix: 're-export the model',
    });
  }
  return meta.shape.map((d, i) => {
    if (i === 0) return batch;
    if (typeof d !== 'number') {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'An ONNX head input has a symbolic dimension after the batch axis.', {
        file: head.file, field: `input ${input} dimension ${i}`, value: String(d), expected: 'a fixed size',
        fix: 're-export the model with only the batch axis dynamic',
      });
    }
    return d;
  });
}

function rowSize(shape: readonly number[]): number {
  return shape.slice(1).reduce((a, b) => a * b, 1);
}

/** Runs one zero batch of size 1 so that the first real call does not pay for set-up. */
export async function warmUp(head: LoadedHead): Promise<void> {
  const started = performance.now();
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of head.inputNames) {
    const shape = inputShape(head, input, 1);
    const meta = tensorMetadata(head.session, input, 'input');
    const size = shape.reduce((a, b) => a * b, 1);
    feeds[input] = meta?.type === 'float16'
      ? new ort.Tensor('float16', new Uint16Array(size), shape)
      : new ort.Tensor('float32', new Float32Array(size), shape);
  }
  await head.session.run(feeds);
  log.debug({ head: head.name, device: head.device, warmUpMs: performance.now() - started }, 'head warmed up');
}

/**
 * Checks that a head which takes voxels has an input as wide as the mask's voxel count.
 * Reads the session's input metadata, so it catches an ONNX file exported for another subject.
 */
export function checkHeadShapes(loaded: LoadedHead, voxelCount: number): void {
  if (loaded.spec.input !== 'voxels') return;
  const input = loaded.spec.inputName ?? loaded.inputNames[0];
  const meta = tensorMetadata(loaded.session, input, 'input');
  if (meta === undefined) {
    throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The ONNX head has no input with the name the manifest gives.', {
      file: loaded.file, field: `heads.${loaded.name}.inputName`, value: input,
      expected: `one of ${loaded.inputNames.join(', ')}`, fix: 'fix inputName in manifest.json or re-export the model',
    });
  }
  const width = meta.shape[meta.shape.length - 1];
  if (meta.shape.length !== 2 || width !== voxelCount) {
    throw new MindeyeError('MODEL_VOXELS_MISMATCH', 'The ONNX head input width differs from the mask voxel count.', {
      file: loaded.file, field: `input tensor "${input}"`, value: `[${meta.shape.join(', ')}]`,
      expected: `[batch, ${voxelCount}] (voxels inside the mask)`,
      fix: 'use the mask the model was trained with, or export the model for this subject (--subject N)',
    });
  }
}

/**
 * Runs a batch of rows through a single-input head in one call and returns one output row per
 * input row. Every row must have the input's row size.
 */
export async function runBatch(head: LoadedHead, rows: readonly Float32Array[]): Promise<Float32Array[]> {
  if (rows.length === 0) return [];
  const input = head.spec.inputName ?? head.inputNames[0];
  const shape = inputShape(head, input, rows.length);
  const size = rowSize(shape);
  const data = new Float32Array(size * rows.length);
  rows.forEach((row, i) => {
    if (row.length !== size) {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'An input row does not match the head input size.', {
        file: head.file, field: `input tensor "${input}" row ${i}`, value: `${row.length} values`,
        expected: `${size} values (shape [${shape.slice(1).join(', ')}])`, fix: 'pass rows of the size the model takes',
      });
    }
    data.set(row, i * size);
  });
  const output = await runHead(head, { [input]: new ort.Tensor('float32', data, shape) });
  const outSize = output.length / rows.length;
  return rows.map((_, i) => output.slice(i * outSize, (i + 1) * outSize));
}

/** Runs a head with the given feeds and returns its output as float32. */
export async function runHead(head: LoadedHead, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const result = await head.session.run(feeds);
  const tensor = result[head.outputName];
  if (tensor.type !== 'float32') {
    throw new MindeyeError('MODEL_DTYPE_UNSUPPORTED', 'The head returned a tensor that is not float32.', {
      file: head.file, field: `output ${head.outputName}`, value: tensor.type, expected: 'float32',
      fix: 're-export the model without --fp16 for this device',
    });
  }
  return tensor.data as Float32Array;
}

export { ort };
