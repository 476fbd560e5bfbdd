/**
 * ONNX Runtime wrappers for the two render networks.
 *
 * VAE decoder: one input, latents float32 [1, C, H, W] (already divided by `scale`); first
 * output (or `outputName`) the image float32 [1, 1 or 3, imageH, imageW] in `outputRange`.
 *
 * UNet: three inputs, named by the manifest (`inputName`, `timestepName`, `conditionName`), else
 * found by usual names (`sample`, `noisy_latents`, `timestep`, `condition`, `encoder_hidden_states`)
 * and otherwise by rank (4 = sample, 0 or 1 = timestep, 2 or 3 = condition):
 * noisy latents float32 [B, C, H, W], timestep [B] (float32, float64, int32 or int64, as the
 * graph declares), condition float32 [B, D] or [B, 1, D]; output epsilon float32 [B, C, H, W].
 * Classifier-free guidance runs the null and the real condition as one batch of 2 unless the
 * graph fixes the batch size to 1, in which case it makes two calls.
 */
import { MindeyeError } from '../errors.ts';
import { createSession, ort, type Device } from '../decode/ort.ts';
import type { UnetSettings, VaeSettings } from './config.ts';

type Session = ort.InferenceSession;

function tensorMeta(session: Session, name: string): ort.InferenceSession.TensorValueMetadata | undefined {
  const meta = session.inputMetadata.find((m) => m.name === name);
  return meta !== undefined && meta.isTensor ? meta : undefined;
}

function outputOf(file: string, session: Session, results: ort.InferenceSession.ReturnType, name?: string): ort.Tensor {
  const key = name ?? session.outputNames[0];
  const tensor = results[key];
  if (tensor === undefined) {
    throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The ONNX graph has no output of the configured name.', {
      file, field: 'outputName', value: key, expected: `one of ${session.outputNames.join(', ')}`, fix: 'fix outputName in manifest.json',
    });
  }
  return tensor;
}

/** VAE decoder session: latents to a planar image. */
export class VaeDecoder {
  private constructor(
    private readonly settings: VaeSettings,
    private readonly session: Session,
    private readonly inputName: string,
    readonly latentShape: [number, number, number],
  ) {}

  static async load(settings: VaeSettings, latentShape: [number, number, number], device: Device): Promise<VaeDecoder> {
    const session = await createSession(settings.file, { device });
    const inputName = settings.inputName ?? session.inputNames[0];
    if (!session.inputNames.includes(inputName)) {
      throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The VAE decoder graph has no input of the configured name.', {
        file: settings.file, field: 'heads.vaeDecoder.inputName', value: inputName, expected: `one of ${session.inputNames.join(', ')}`,
        fix: 'fix inputName in manifest.json',
      });
    }
    return new VaeDecoder(settings, session, inputName, latentShape);
  }

  /**
   * Decodes scaled latents (C*H*W values) to a planar image, with its channel count and size.
   * Throws MODEL_SHAPE_MISMATCH when the output is not an image of 1 or 3 channels of the
   * configured size.
   */
  async decode(latents: Float32Array): Promise<{ planar: Float32Array; channels: number; height: number; width: number }> {
    const [c, h, w] = this.latentShape;
    const scaled = new Float32Array(latents.length);
    for (let i = 0; i < latents.length; i++) scaled[i] = latents[i] / this.settings.scale;
    const results = await this.session.run({ [this.inputName]: new ort.Tensor('float32', scaled, [1, c, h, w]) });
    const out = outputOf(this.settings.file, this.session, results, this.settings.outputName);
    const dims = out.dims;
    const size = this.settings.imageSize;
    const shapeOk = dims.length === 4 && dims[0] === 1 && (dims[1] === 1 || dims[1] === 3)
      && (size === undefined || (dims[2] === size[0] && dims[3] === size[1]));
    if (!shapeOk || out.type !== 'float32') {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The VAE decoder returned an unexpected image tensor.', {
        file: this.settings.file, field: 'heads.vaeDecoder', value: `${out.type} [${dims.join(', ')}]`,
        expected: `float32 [1, 3 or 1, ${size ? size.join(', ') : 'H, W'}]`,
        fix: 'export the decoder with an NCHW float32 image output, or fix heads.vaeDecoder.imageSize',
      });
    }
    return { planar: out.data as Float32Array, channels: dims[1], height: dims[2], width: dims[3] };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

type TimestepType = 'float32' | 'float64' | 'int32' | 'int64';

/** UNet session with classifier-free guidance. */
export class Unet {
  private constructor(
    private readonly settings: UnetSettings,
    private readonly session: Session,
    private readonly names: { sample: string; timestep: string; condition: string },
    private readonly timestepType: TimestepType,
    private readonly timestepRank: number,
    private readonly conditionRank: number,
    private readonly batchOfTwo: boolean,
    readonly latentShape: [number, number, number],
  ) {}

  static async load(settings: UnetSettings, latentShape: [number, number, number], device: Device): Promise<Unet> {
    const session = await createSession(settings.file, { device });
    const file = settings.file;
    const byName = (...candidates: (string | undefined)[]) => candidates.find((n) => n !== undefined && session.inputNames.includes(n));
    const byRank = (...ranks: number[]) => session.inputMetadata.find((m) => m.isTensor && ranks.includes(m.shape.length))?.name;
    const configured = { sample: settings.inputName, timestep: settings.timestepName, condition: settings.conditionName };
    for (const [role, name] of Object.entries(configured)) {
      if (name !== undefined && !session.inputNames.includes(name)) {
        const field = role === 'sample' ? 'inputName' : `${role}Name`;
        throw new MindeyeError('MODEL_MANIFEST_INVALID', 'The UNet graph has no input of the configured name.', {
          file, field: `heads.unet.${field}`, value: name, expected: `one of ${session.inputNames.join(', ')}`, fix: 'fix the name in manifest.json',
        });
      }
    }
    const names = {
      sample: byName(configured.sample, 'sample', 'noisy_latents', 'latents', 'x') ?? byRank(4),
      timestep: byName(configured.timestep, 'timestep', 'timesteps', 't') ?? byRank(0, 1),
      condition: byName(configured.condition, 'condition', 'encoder_hidden_states', 'cond') ?? byRank(2, 3),
    };
    const resolved = names as { sample: string; timestep: string; condition: string };
    const timestepMeta = tensorMeta(session, resolved.timestep);
    const timestepType = (timestepMeta?.type ?? 'float32') as string;
    if (!['float32', 'float64', 'int32', 'int64'].includes(timestepType)) {
      throw new MindeyeError('MODEL_DTYPE_UNSUPPORTED', 'The UNet timestep input has an unsupported type.', {
        file, field: resolved.timestep, value: timestepType, expected: 'float32, float64, int32 or int64', fix: 're-export the UNet',
      });
    }
    const sampleBatch = tensorMeta(session, resolved.sample)?.shape[0];
    return new Unet(
      settings, session, resolved, timestepType as TimestepType,
      timestepMeta?.shape.length ?? 1,
      tensorMeta(session, resolved.condition)?.shape.length ?? 2,
      sampleBatch !== 1,
      latentShape,
    );
  }

  private timestepTensor(t: number, batch: number): ort.Tensor {
    const dims = this.timestepRank === 0 ? [] : [batch];
    const count = this.timestepRank === 0 ? 1 : batch;
    switch (this.timestepType) {
      case 'int64': return new ort.Tensor('int64', new BigInt64Array(count).fill(BigInt(t)), dims);
      case 'int32': return new ort.Tensor('int32', new Int32Array(count).fill(t), dims);
      case 'float64': return new ort.Tensor('float64', new Float64Array(count).fill(t), dims);
      default: return new ort.Tensor('float32', new Float32Array(count).fill(t), dims);
    }
  }

  private async predict(sample: Float32Array, t: number, conditions: Float32Array[]): Promise<Float32Array> {
    const [c, h, w] = this.latentShape;
    const batch = conditions.length;
    const samples = new Float32Array(sample.length * batch);
    const conds = new Float32Array(this.settings.condDim * batch);
    conditions.forEach((cond, i) => {
      samples.set(sample, i * sample.length);
      conds.set(cond, i * this.settings.condDim);
    });
    const condDims = this.conditionRank === 3 ? [batch, 1, this.settings.condDim] : [batch, this.settings.condDim];
    const results = await this.session.run({
      [this.names.sample]: new ort.Tensor('float32', samples, [batch, c, h, w]),
      [this.names.timestep]: this.timestepTensor(t, batch),
      [this.names.condition]: new ort.Tensor('float32', conds, condDims),
    });
    const out = outputOf(this.settings.file, this.session, results, this.settings.outputName);
    if (out.type !== 'float32' || out.data.length !== samples.length) {
      throw new MindeyeError('MODEL_SHAPE_MISMATCH', 'The UNet returned a noise prediction of the wrong shape.', {
        file: this.settings.file, field: 'heads.unet', value: `${out.type} [${out.dims.join(', ')}]`,
        expected: `float32 [${batch}, ${c}, ${h}, ${w}]`, fix: 'export the UNet so that its output has the shape of its sample input',
      });
    }
    return out.data as Float32Array;
  }

  /** Predicts the noise for the null and the real condition: returns [epsNull, epsCond]. */
  async predictPair(sample: Float32Array, t: number, condition: Float32Array): Promise<[Float32Array, Float32Array]> {
    const n = sample.length;
    if (this.batchOfTwo) {
      const both = await this.predict(sample, t, [this.settings.nullCondition, condition]);
      return [both.subarray(0, n), both.subarray(n, 2 * n)];
    }
    const epsNull = await this.predict(sample, t, [this.settings.nullCondition]);
    const epsCond = await this.predict(sample, t, [condition]);
    return [epsNull, epsCond];
  }

  /** Predicts the noise for the real condition only (guidance 1 needs no null pass). */
  async predictConditional(sample: Float32Array, t: number, condition: Float32Array): Promise<Float32Array> {
    return this.predict(sample, t, [condition]);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
