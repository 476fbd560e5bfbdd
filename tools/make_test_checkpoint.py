#!/usr/bin/python3
"""Write random-weight MindEye checkpoints at reduced width, plus PyTorch reference outputs.

The parity tests (test/decode/parity*.test.ts) run this, export the checkpoints with
tools/mindeye_export.py and compare onnxruntime-node's outputs with the references here.

Writes into --out: checkpoint.pth (MindEye1 prior + voxel2clip, or MindEye2 model),
lowlevel.pth (MindEye1), and reference/: reference.json (shapes, sampling runs) and
little-endian float32 arrays (.f32): voxels, backbone, retrieval, lowlevel, and per sampling
run <name>.noise_init, <name>.noise_steps, <name>.out.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from mindeye import me1, me2, sampling  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True)
    p.add_argument('--arch', choices=['mindeye1', 'mindeye2'], default='mindeye1')
    p.add_argument('--voxels', type=int, default=300)
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument('--tokens', type=int, default=5)
    p.add_argument('--clip', type=int, default=32, help='embedding width per token')
    p.add_argument('--prior-depth', type=int, default=2)
    p.add_argument('--dim-head', type=int, default=16)
    p.add_argument('--prior-heads', type=int, default=2)
    p.add_argument('--timesteps', type=int, default=100)
    p.add_argument('--batch', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--lowlevel', action='store_true',
                   help='MindEye1: also write a low-level head checkpoint; MindEye2: add the blurry branch')
    p.add_argument('--legacy-attention-names', action='store_true',
                   help='store the low-level decoder attention under diffusers < 0.14 names')
    p.add_argument('--sampling', default='ddpm:100:1,ddim:20:3.5',
                   help='comma-separated kind:steps:guidance sampling runs for the reference')
    p.add_argument('--extra-key', help='add an unexpected tensor with this name (for error tests)')
    return p.parse_args(argv)


def perturb(module, scale=0.05):
    """Move every trainable parameter off its initial value so that each weight matters."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


def save_f32(path, tensor):
    tensor.detach().to(torch.float32).contiguous().numpy().astype('<f4').tofile(path)


def sampling_references(args, ref_dir, net, schedule, latent):
    """Run the PyTorch sampling loop for each --sampling spec and store noise and results."""
    runs = []
    for spec in args.sampling.split(','):
        kind, steps, guidance = spec.split(':')
        steps = args.timesteps if kind == 'ddpm' else int(steps)
        name = f'{kind}{steps}_g{guidance}'
        updates = args.timesteps if steps >= args.timesteps else len(sampling.ddim_time_pairs(args.timesteps, steps))
        noise_init = torch.randn(args.batch, args.tokens, args.clip)
        noise_steps = torch.randn(updates, args.batch, args.tokens, args.clip)
        result = sampling.sample(net, schedule, latent, steps, float(guidance), noise_init, noise_steps)
        for suffix, tensor in (('noise_init', noise_init), ('noise_steps', noise_steps), ('out', result)):
            save_f32(os.path.join(ref_dir, f'{name}.{suffix}.f32'), tensor)
        runs.append({'name': name, 'kind': kind, 'steps': steps, 'guidance': float(guidance), 'updates': updates})
    return runs


def mindeye1(args, ref_dir):
    out_dim = args.tokens * args.clip
    voxel2clip = me1.BrainNetwork(args.voxels, out_dim, args.clip, h=args.hidden, use_projector=True)
    net = me1.VersatileDiffusionPriorNetwork(args.clip, args.tokens, args.prior_depth, args.dim_head, args.prior_heads)
    prior = me1.BrainDiffusionPrior(voxel2clip, net, args.timesteps)
    perturb(prior)
    prior.eval()
    state = prior.state_dict()
    if args.extra_key:
        state[args.extra_key] = torch.zeros(3, 4)
    torch.save({'epoch': 0, 'model_state_dict': state}, os.path.join(args.out, 'checkpoint.pth'))
    voxels = torch.randn(args.batch, args.voxels)
    save_f32(os.path.join(ref_dir, 'voxels.f32'), voxels)
    with torch.no_grad():
        latent, embedding = voxel2clip(voxels)
    save_f32(os.path.join(ref_dir, 'backbone.f32'), latent)
    save_f32(os.path.join(ref_dir, 'retrieval.f32'), embedding)
    runs = sampling_references(args, ref_dir, net, prior.noise_scheduler, latent)
    heads = {'backbone': [args.batch, args.tokens, args.clip], 'retrieval': [args.batch, args.tokens, args.clip]}
    if args.lowlevel:
        low = me1.Voxel2StableDiffusionModel(args.voxels, h=args.hidden, use_cont=True)
        perturb(low)
        low.eval()
        state = low.state_dict()
        if args.legacy_attention_names:
            renamed = {}
            for key, value in state.items():
                for new, old in (('to_q', 'query'), ('to_k', 'key'), ('to_v', 'value'), ('to_out.0', 'proj_attn')):
                    if f'.attentions.0.{new}.' in key:
                        key = key.replace(f'.attentions.0.{new}.', f'.attentions.0.{old}.')
                renamed[key] = value
            state = renamed
        torch.save({'epoch': 0, 'model_state_dict': state}, os.path.join(args.out, 'lowlevel.pth'))
        with torch.no_grad():
            save_f32(os.path.join(ref_dir, 'lowlevel.f32'), low(voxels))
        heads['lowLevel'] = [args.batch, 4, 64, 64]
    return heads, runs


def mindeye2(args, ref_dir):
    sizes = [args.voxels + 7, args.voxels]
    module = me2.MindEyeModule(me2.RidgeRegression(sizes, args.hidden),
                               me2.BrainNetwork(args.hidden, 1, 4, args.tokens, args.clip, blurry=args.lowlevel))
    net = me1.VersatileDiffusionPriorNetwork(args.clip, args.tokens, args.prior_depth, args.dim_head, args.prior_heads)
    prior = me1.BrainDiffusionPrior(None, net, args.timesteps)
    perturb(module)
    perturb(prior)
    module.eval()
    prior.eval()
    state = module.state_dict()
    state.update({f'diffusion_prior.{k}': v for k, v in prior.state_dict().items()})
    if args.extra_key:
        state[args.extra_key] = torch.zeros(3, 4)
    torch.save({'epoch': 0, 'model_state_dict': state}, os.path.join(args.out, 'checkpoint.pth'))
    voxels = torch.randn(args.batch, args.voxels)
    save_f32(os.path.join(ref_dir, 'voxels.f32'), voxels)
    with torch.no_grad():
        latent = me2.Mindeye2Backbone(module, 1)(voxels)
        embedding = module.backbone.clip_proj(latent)
    save_f32(os.path.join(ref_dir, 'backbone.f32'), latent)
    save_f32(os.path.join(ref_dir, 'retrieval.f32'), embedding)
    heads = {'backbone': [args.batch, args.tokens, args.clip], 'retrieval': [args.batch, args.tokens, args.clip]}
    if args.lowlevel:
        with torch.no_grad():
            save_f32(os.path.join(ref_dir, 'lowlevel.f32'), me2.Mindeye2Blurry(module, 1)(voxels))
        heads['lowLevel'] = [args.batch, 4, 28, 28]
    return heads, sampling_references(args, ref_dir, net, prior.noise_scheduler, latent)


def main(argv):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    ref_dir = os.path.join(args.out, 'reference')
    os.makedirs(ref_dir, exist_ok=True)
    heads, runs = (mindeye1 if args.arch == 'mindeye1' else mindeye2)(args, ref_dir)
    doc = {'arch': args.arch, 'voxels': args.voxels, 'hidden': args.hidden, 'tokens': args.tokens,
           'clip': args.clip, 'batch': args.batch, 'timesteps': args.timesteps, 'heads': heads, 'sampling': runs}
    with open(os.path.join(ref_dir, 'reference.json'), 'w') as f:
        json.dump(doc, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
