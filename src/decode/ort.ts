/**
 * ONNX Runtime sessions for model heads. Every network at inference runs here, on the CPU by
 * default or on CUDA when asked.
 */
import * as ort from 'onnxruntime-node';
import { existsSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device: Device;
  /** Intra-op threads; 0 lets onnxruntime choose. */
  threads?: number;
}

export async function createSession(file: string, opts: SessionOptions): Promise<ort.InferenceSession> {
  if (!existsSync(file)) {
    throw new MindeyeError('MODEL_FILE_MISSING', 'ONNX file not found.', { file, fix: 'check the model directory and its manifest.json' });
  }
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: opts.device === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads ?? 0,
  };
  try {
    return await ort.InferenceSession.create(file, options);
  } catch (err) {
    const message = (err as Error).message;
    if (opts.device === 'cuda' && /cuda|provider/i.test(message)) {
      throw new MindeyeError('DEVICE_UNAVAILABLE', 'The CUDA execution provider of onnxruntime-node could not be loaded.', {
        file, field: '--device', value: 'cuda', expected: 'onnxruntime-node with its CUDA 12 / cuDNN 9 provider libraries',
        fix: 'reinstall with the provider: ONNXRUNTIME_NODE_INSTALL_CUDA=v12 npm rebuild onnxruntime-node (see docs/models.md), or use --device cpu',
      });
    }
    throw new MindeyeError('MODEL_MANIFEST_INVALID', `onnxruntime could not load the model: ${message}`, {
      file, fix: 'check that the file is a valid ONNX model (python3 -c "import onnx; onnx.checker.check_model(FILE)")',
    });
  }
}

export { ort };
