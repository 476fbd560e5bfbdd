"""Write a tiny render model directory for the render tests (run with /usr/bin/python3).

The directory has a manifest, a low-level head (voxels -> latents), a VAE decoder with known
weights and a small random UNet, each exported to ONNX; the UNet is also saved as TorchScript
so that tools/render_reference.py can run it without ONNX Runtime.

Known VAE decoder: pixel(c, y, x) = tanh(sum_k W[c, k] * z[k, y // 2, x // 2] + b[c]),
with W[c, k] = 0.5 * (c + 1) * (-1) ** k / C and b = [-0.2, 0, 0.2]; the tests recompute it.
"""
import argparse
import json
import os

import numpy as np
import torch
from torch import nn


class KnownDecoder(nn.Module):
    def __init__(self, channels: int, gray: bool):
        super().__init__()
        out = 1 if gray else 3
        weight = torch.tensor([[0.5 * (c + 1) * (-1) ** k / channels for k in range(channels)] for c in range(out)])
        self.register_buffer('weight', weight)
        self.register_buffer('bias', torch.tensor([-0.2, 0.0, 0.2][:out]))

    def forward(self, z):
        mixed = torch.einsum('ck,bkhw->bchw', self.weight, z) + self.bias.view(1, -1, 1, 1)
        up = nn.functional.interpolate(mixed, scale_factor=2, mode='nearest')
        return torch.tanh(up)


class TinyUnet(nn.Module):
    """Epsilon predictor: conv layers with timestep and condition added as channel biases."""

    def __init__(self, channels: int, cond_dim: int, slow: int):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, 16, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 16)
        self.time = nn.Linear(2, 16)
        self.conv_out = nn.Conv2d(16, channels, 3, padding=1)
        self.slow = slow
        if slow > 0:
            self.register_buffer('heavy', torch.randn(384, 384) / 20.0)

    def forward(self, sample, timestep, condition):
        t = timestep.to(torch.float32).view(-1, 1) / 1000.0
        temb = self.time(torch.cat([torch.sin(3.0 * t), torch.cos(3.0 * t)], dim=1))
        h = self.conv_in(sample) + (temb + self.cond(condition)).unsqueeze(-1).unsqueeze(-1)
        out = self.conv_out(torch.nn.functional.silu(h))
        if self.slow > 0:
            # Matrix products that depend on the input, so ONNX Runtime cannot fold them away.
            m = self.heavy + sample.mean() * 1e-3
            for _ in range(self.slow):
                m = torch.tanh(m @ self.heavy)
            out = out + 0.0 * m.mean()
        return out


class LowLevel(nn.Module):
    def __init__(self, voxels: int, count: int):
        super().__init__()
        self.linear = nn.Linear(voxels, count)

    def forward(self, x):
        return self.linear(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', required=True)
    parser.add_argument('--latent-shape', default='4,8,8')
    parser.add_argument('--cond-dim', type=int, default=16)
    parser.add_argument('--seed', type=int, default=3)
    parser.add_argument('--slow', type=int, default=0, help='matrix products added to each UNet call')
    parser.add_argument('--timestep-dtype', choices=['float32', 'int64'], default='float32')
    parser.add_argument('--fixed-batch', action='store_true', help='export the UNet with batch size 1')
    parser.add_argument('--gray', action='store_true', help='one-channel decoder output')
    parser.add_argument('--no-unet', action='store_true')
    parser.add_argument('--null-embedding', action='store_true', help='write a non-zero null embedding file')
    parser.add_argument('--unet-fields', default='{}', help='JSON merged into heads.unet')
    parser.add_argument('--vae-fields', default='{}', help='JSON merged into heads.vaeDecoder')
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    c, h, w = (int(v) for v in args.latent_shape.split(','))
    os.makedirs(args.out, exist_ok=True)
    voxels = 10

    low = LowLevel(voxels, c * h * w).eval()
    torch.onnx.export(low, torch.zeros(1, voxels), os.path.join(args.out, 'low_level.onnx'),
                      input_names=['voxels'], output_names=['latents'], opset_version=14)

    decoder = KnownDecoder(c, args.gray).eval()
    torch.onnx.export(decoder, torch.zeros(1, c, h, w), os.path.join(args.out, 'vae_decoder.onnx'),
                      input_names=['latents'], output_names=['image'], opset_version=14)

    heads = {
        'lowLevel': {'file': 'low_level.onnx', 'input': 'voxels', 'latentShape': [c, h, w]},
        'vaeDecoder': {'file': 'vae_decoder.onnx', 'input': 'lowLevel', 'scale': 0.5, 'outputRange': [-1, 1],
                       'imageSize': [2 * h, 2 * w]},
    }
    heads['vaeDecoder'].update(json.loads(args.vae_fields))

    if not args.no_unet:
        unet = TinyUnet(c, args.cond_dim, args.slow).eval()
        batch = 1 if args.fixed_batch else 2
        dtype = torch.int64 if args.timestep_dtype == 'int64' else torch.float32
        example = (torch.zeros(batch, c, h, w), torch.zeros(batch, dtype=dtype), torch.zeros(batch, args.cond_dim))
        dynamic = None if args.fixed_batch else {'sample': {0: 'batch'}, 'timestep': {0: 'batch'},
                                                  'condition': {0: 'batch'}, 'eps': {0: 'batch'}}
        torch.onnx.export(unet, example, os.path.join(args.out, 'unet.onnx'),
                          input_names=['sample', 'timestep', 'condition'], output_names=['eps'],
                          dynamic_axes=dynamic, opset_version=14)
        torch.jit.trace(unet, example).save(os.path.join(args.out, 'unet.torchscript.pt'))
        heads['unet'] = {'file': 'unet.onnx', 'input': 'lowLevel', 'scheduler': 'ddim', 'steps': 10, 'strength': 0.85,
                         'guidance': 3.0, 'trainTimesteps': 1000, 'betaSchedule': 'scaled_linear',
                         'betaStart': 0.00085, 'betaEnd': 0.012, 'condDim': args.cond_dim}
        if args.null_embedding:
            null = (np.arange(args.cond_dim, dtype=np.float32) - args.cond_dim / 2) / args.cond_dim
            null.astype('<f4').tofile(os.path.join(args.out, 'null_embedding.f32'))
            heads['unet']['nullCondition'] = 'null_embedding.f32'
        heads['unet'].update(json.loads(args.unet_fields))

    manifest = {'format': 'mindeye-rt-model', 'version': 1, 'name': 'tiny-render-test',
                'provenance': {'tool': 'test/render/make_tiny_model.py', 'seed': args.seed},
                'voxels': {'count': voxels}, 'heads': heads}
    with open(os.path.join(args.out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2)


if __name__ == '__main__':
    main()
