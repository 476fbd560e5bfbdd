/**
 * Evaluation settings of a run report, from the flags shared by replay, watch and serve:
 * `--eval-candidates N`, `--eval-draws D`, `--eval-seed S` and repeated
 * `--feature-net NAME=FILE.onnx[,size=S][,mean=R:G:B][,std=R:G:B][,metric=M]`.
 *
 * Feature networks take one image and return its features. Every network gets float32 NCHW
 * input, shape [1, 3, size, size], RGB scaled to [0, 1], resized (bilinear, aspect ratio not
 * kept) to size x size, then normalized per channel as (x - mean) / std. Its first output,
 * flattened, is the feature vector. The defaults for MindEye's networks are those of its
 * evaluation code (torchvision weights' transforms; OpenAI CLIP's mean and std).
 */
import { existsSync, statSync } from 'node:fs';
import { MindeyeError } from '../errors.ts';

export type FeatureMetric = 'two-way' | 'correlation-distance';
export const FEATURE_METRICS: readonly FeatureMetric[] = ['two-way', 'correlation-distance'];

export interface FeatureNetSpec {
  name: string;
  file: string;
  /** Input side in pixels; undefined means the ONNX input's static size. */
  size?: number;
  mean: [number, number, number];
  std: [number, number, number];
  metric: FeatureMetric;
}

export interface EvalOptions {
  /** Candidates per retrieval draw (N); undefined means all that are available. */
  candidates?: number;
  draws: number;
  seed: number;
  featureNets: FeatureNetSpec[];
}

export const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];
export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** MindEye's feature networks, the layer their ONNX output must be, and their preprocessing. */
export const KNOWN_FEATURE_NETS: Record<string, Omit<FeatureNetSpec, 'name' | 'file'> & { output: string }> = {
  alexnet2: { size: 256, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'two-way', output: 'torchvision AlexNet features.4' },
  alexnet5: { size: 256, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'two-way', output: 'torchvision AlexNet features.11' },
  inception: { size: 342, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'two-way', output: 'torchvision Inception v3 avgpool' },
  clip: { size: 224, mean: CLIP_MEAN, std: CLIP_STD, metric: 'two-way', output: 'OpenAI CLIP ViT-L/14 encode_image' },
  effnet: { size: 255, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'correlation-distance', output: 'torchvision EfficientNet-B1 avgpool' },
  swav: { size: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD, metric: 'correlation-distance', output: 'SwAV ResNet-50 avgpool' },
};

export const DEFAULT_EVAL_DRAWS = 30;

export const EVAL_FLAGS = {
  'eval-candidates': { type: 'string' },
  'eval-draws': { type: 'string', default: String(DEFAULT_EVAL_DRAWS) },
  'eval-seed': { type: 'string', default: '0' },
  'feature-net': { type: 'string', multiple: true },
} as const;

export const EVAL_HELP = `Evaluation (report metrics; see docs/evaluation.md):
  --eval-candidates N      image and brain retrieval top-1 among N candidates, the true one
                           included (MindEye uses 300; default: every candidate available)
  --eval-draws D           random candidate subsets averaged per trial (default ${DEFAULT_EVAL_DRAWS})
  --eval-seed S            seed of those draws (default 0)
  --feature-net NAME=FILE.onnx[,size=S][,mean=R:G:B][,std=R:G:B][,metric=two-way|correlation-distance]
                           image -> features network for a feature metric; repeatable. NAME is
                           alexnet2, alexnet5, inception, clip, effnet, swav (MindEye's settings)
                           or any other name (then give size, mean, std as needed)`;

function usage(flag: string, value: unknown, expected: string, fix: string): MindeyeError {
  return new MindeyeError('CLI_USAGE', `Invalid value for ${flag}.`, { field: flag, value, expected, fix });
}

function integerFlag(value: unknown, flag: string, min: number, example: string): number {
  const text = String(value);
  const x = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(x) || x < min) {
    throw usage(flag, value, `an integer >= ${min}`, `e.g. ${flag} ${example}`);
  }
  return x;
}

function triple(text: string, flag: string, key: string, positive: boolean): [number, number, number] {
  const parts = text.split(':').map(Number);
  if (parts.length !== 3 || parts.some((x) => !Number.isFinite(x) || (positive && x <= 0))) {
    throw usage(flag, `${key}=${text}`, `three ${positive ? 'positive ' : ''}numbers separated by colons, R:G:B`, `e.g. ${key}=0.485:0.456:0.406`);
  }
  return [parts[0], parts[1], parts[2]];
}

/** Parses one `--feature-net` value; checks the name, the file and every option. */
export function parseFeatureNet(value: string): FeatureNetSpec {
  const flag = '--feature-net';
  const match = /^([A-Za-z][A-Za-z0-9_-]*)=([^,]+)((?:,[^,]*)*)$/.exec(value);
  if (!match) {
    throw usage(flag, value, 'NAME=FILE.onnx with optional ,size=S ,mean=R:G:B ,std=R:G:B ,metric=M', `e.g. ${flag} alexnet2=alexnet2.onnx`);
  }
  const [, name, file, rest] = match;
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new MindeyeError('CLI_USAGE', `The feature network file for ${name} was not found.`, {
      file, field: flag, value, expected: 'an existing ONNX file', fix: 'check the path after NAME=',
    });
  }
  const known = KNOWN_FEATURE_NETS[name];
  const spec: FeatureNetSpec = {
    name, file, size: known?.size, mean: known?.mean ?? [0, 0, 0], std: known?.std ?? [1, 1, 1], metric: known?.metric ?? 'two-way',
  };
  for (const option of rest.split(',').slice(1)) {
    const eq = option.indexOf('=');
    const key = eq < 0 ? option : option.slice(0, eq);
    const text = eq < 0 ? '' : option.slice(eq + 1);
    if (key === 'size') spec.size = integerFlag(text, `${flag} ${name} size`, 1, '224');
    else if (key === 'mean') spec.mean = triple(text, flag, key, false);
    else if (key === 'std') spec.std = triple(text, flag, key, true);
    else if (key === 'metric') {
      if (!FEATURE_METRICS.includes(text as FeatureMetric)) throw usage(flag, option, FEATURE_METRICS.join(' or '), 'e.g. metric=two-way');
      spec.metric = text as FeatureMetric;
    } else {
      throw usage(flag, option, 'size=S, mean=R:G:B, std=R:G:B or metric=two-way|correlation-distance', 'remove or correct the option');
    }
  }
  return spec;
}

/** Reads the evaluation flags (parsed by node:util parseArgs with EVAL_FLAGS). */
export function evalFromFlags(v: Record<string, unknown>): EvalOptions {
  const options: EvalOptions = {
    draws: integerFlag(v['eval-draws'] ?? DEFAULT_EVAL_DRAWS, '--eval-draws', 1, '30'),
    seed: integerFlag(v['eval-seed'] ?? 0, '--eval-seed', 0, '0'),
    featureNets: ((v['feature-net'] as string[] | undefined) ?? []).map(parseFeatureNet),
  };
  if (v['eval-candidates'] !== undefined) options.candidates = integerFlag(v['eval-candidates'], '--eval-candidates', 2, '300');
  const names = options.featureNets.map((n) => n.name);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated !== undefined) {
    throw usage('--feature-net', repeated, 'each NAME once', `give ${repeated} only once`);
  }
  return options;
}
