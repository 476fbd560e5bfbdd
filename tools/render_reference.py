"""Reference img2img run (numpy + torch) for checking src/render against an independent code path.

Reads the DDIM settings from a model directory's manifest.json (heads.unet and
heads.lowLevel.latentShape) and runs the UNet as TorchScript, not with ONNX Runtime. Writes
every intermediate value as JSON: alphas_cumprod, timesteps, the noise, the noised start
latents and, per step, the guided noise prediction, the predicted clean latents x0 and the
next latents.

Formulas follow diffusers' DDIMScheduler (eta = 0, epsilon prediction) and the img2img
pipelines' get_timesteps (diffusers 0.2x), written out here with numpy. The trial noise is the
same mulberry32 + Box-Muller stream as src/render/noise.ts, so the run needs only the seeds.

Usage (with Debian's interpreter, which has torch):
  /usr/bin/python3 tools/render_reference.py --model DIR --unet-torchscript unet.pt \
      --latents latents.f32 --condition cond.f32 --seed 0 --trial-id 3 --out reference.json
"""
import argparse
import json
import math
import os

import numpy as np
import torch

MASK32 = 0xFFFFFFFF


def imul(a, b):
    """32-bit wrapping multiplication, like JavaScript's Math.imul (unsigned result)."""
    return (a * b) & MASK32


def trial_seed(run_seed, trial_id):
    h = imul((run_seed & MASK32) ^ 0x9E3779B9, 0x85EBCA6B)
    h = imul(h ^ (h >> 13) ^ (trial_id & MASK32), 0xC2B2AE35)
    h ^= h >> 16
    return h & MASK32


def gaussian_noise(length, seed):
    state = seed & MASK32

    def uniform():
        nonlocal state
        state = (state + 0x6D2B79F5) & MASK32
        t = state
        t = imul(t ^ (t >> 15), t | 1)
        t ^= (t + imul(t ^ (t >> 7), t | 61)) & MASK32
        return ((t ^ (t >> 14)) & MASK32) / 4294967296.0

    out = np.zeros(length, dtype=np.float32)
    for i in range(0, length, 2):
        radius = math.sqrt(-2.0 * math.log(1.0 - uniform()))
        angle = 2.0 * math.pi * uniform()
        out[i] = radius * math.cos(angle)
        if i + 1 < length:
            out[i + 1] = radius * math.sin(angle)
    return out


def make_betas(cfg):
    n = cfg['trainTimesteps']
    schedule = cfg['betaSchedule']
    if schedule == 'linear':
        return np.linspace(cfg['betaStart'], cfg['betaEnd'], n, dtype=np.float64)
    if schedule == 'scaled_linear':
        return np.linspace(cfg['betaStart'] ** 0.5, cfg['betaEnd'] ** 0.5, n, dtype=np.float64) ** 2
    if schedule == 'squaredcos_cap_v2':
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], dtype=np.float64)
    raise ValueError(f'unknown betaSchedule {schedule!r}')


def make_timesteps(cfg):
    total, steps = cfg['trainTimesteps'], cfg['steps']
    if cfg['timestepSpacing'] == 'leading':
        ratio = total // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + cfg['stepsOffset']
    ratio = total / steps
    return np.round(np.arange(total, 0, -ratio)).astype(np.int64) - 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', required=True, help='model directory with manifest.json')
    parser.add_argument('--unet-torchscript', required=True, help='the same UNet saved with torch.jit')
    parser.add_argument('--latents', required=True, help='low-level latents, little-endian float32')
    parser.add_argument('--condition', required=True, help='condition embedding, little-endian float32')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--trial-id', type=int, required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args()

    with open(os.path.join(args.model, 'manifest.json')) as f:
        manifest = json.load(f)
    head = manifest['heads']['unet']
    shape = manifest['heads']['lowLevel']['latentShape']
    cfg = {
        'trainTimesteps': head.get('trainTimesteps', 1000), 'betaSchedule': head['betaSchedule'],
        'betaStart': head.get('betaStart', 0.0), 'betaEnd': head.get('betaEnd', 0.0), 'steps': head.get('steps', 20),
        'strength': head.get('strength', 0.85), 'timestepSpacing': head.get('timestepSpacing', 'leading'),
        'stepsOffset': head.get('stepsOffset', 0), 'setAlphaToOne': head.get('setAlphaToOne', True),
        'guidance': head.get('guidance', 3.5),
    }
    cond_dim = head['condDim']
    if head.get('nullCondition', 'zeros') != 'zeros':
        null = np.fromfile(os.path.join(args.model, head['nullCondition']), dtype='<f4')
    else:
        null = np.zeros(cond_dim, dtype=np.float32)

    alphas_cumprod = np.cumprod(1.0 - make_betas(cfg))
    final_alpha = 1.0 if cfg['setAlphaToOne'] else alphas_cumprod[0]
    all_timesteps = make_timesteps(cfg)
    init_steps = min(int(cfg['steps'] * cfg['strength']), cfg['steps'])
    timesteps = all_timesteps[max(cfg['steps'] - init_steps, 0):]
    stride = cfg['trainTimesteps'] // cfg['steps']

    latents = np.fromfile(args.latents, dtype='<f4').astype(np.float64)
    condition = np.fromfile(args.condition, dtype='<f4')
    noise = gaussian_noise(latents.size, trial_seed(args.seed, args.trial_id)).astype(np.float64)
    start_alpha = alphas_cumprod[timesteps[0]] if len(timesteps) else 1.0
    sample = math.sqrt(start_alpha) * latents + math.sqrt(1 - start_alpha) * noise

    unet = torch.jit.load(args.unet_torchscript).eval()
    conds = torch.from_numpy(np.stack([null, condition]).astype(np.float32))
    steps = []
    start = sample.copy()
    for t in timesteps:
        x = torch.from_numpy(np.stack([sample, sample]).reshape(2, *shape).astype(np.float32))
        with torch.no_grad():
            eps_pair = unet(x, torch.full((2,), float(t)), conds).double().numpy().reshape(2, -1)
        eps = eps_pair[0] + cfg['guidance'] * (eps_pair[1] - eps_pair[0])
        a_t = alphas_cumprod[t]
        prev_t = t - stride
        a_prev = alphas_cumprod[prev_t] if prev_t >= 0 else final_alpha
        x0 = (sample - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        sample = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        steps.append({'timestep': int(t), 'alphaProduct': float(a_t), 'alphaProductPrev': float(a_prev),
                      'epsNull': eps_pair[0].tolist(), 'epsCond': eps_pair[1].tolist(), 'eps': eps.tolist(),
                      'predictedOriginal': x0.tolist(), 'prevSample': sample.tolist()})

    result = {
        'alphasCumprod': alphas_cumprod.tolist(), 'allTimesteps': all_timesteps.tolist(),
        'timesteps': [int(t) for t in timesteps], 'startAlphaProduct': float(start_alpha),
        'noise': noise.tolist(), 'start': start.tolist(), 'steps': steps, 'final': sample.tolist(),
    }
    with open(args.out, 'w') as f:
        json.dump(result, f)


if __name__ == '__main__':
    main()
