#!/usr/bin/python3
"""Export MindEye PyTorch checkpoints to a mindeye-rt model directory (ONNX + manifest.json).

Usage: /usr/bin/python3 tools/mindeye_export.py --checkpoint FILE --arch mindeye1|mindeye2
       --subject N --out DIR [--lowlevel-checkpoint FILE] [--fp16] [--width W]

Shapes are read from the checkpoint. Without --width the export insists on the published
sizes (hidden width 4096, the subject's nsdgeneral voxel count); --width W accepts a reduced
hidden width W and any voxel count, for test models. Errors are reported as one
`MINDEYE_EXPORT_ERROR <json>` line on stderr with exit status 3 (see mindeye/errors.py).
"""
import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import onnx  # noqa: F401  (checked here so the message names both packages)
except ImportError as missing:
    sys.stderr.write('MINDEYE_EXPORT_ERROR ' + json.dumps({
        'code': 'PYTHON_DEPENDENCY_MISSING', 'summary': f'Python module missing: {missing.name}.',
        'value': sys.executable, 'expected': 'python3-torch and python3-onnx',
        'fix': 'apt-get install python3-torch python3-onnx'}) + '\n')
    sys.exit(3)

from mindeye import me1, me2  # noqa: E402
from mindeye.checkpoint import count_indexed, read_state_dict, require_key, strict_load  # noqa: E402
from mindeye.errors import EXIT_EXPORT_ERROR, ExportError  # noqa: E402
from mindeye.onnx_io import export_onnx  # noqa: E402

FULL_WIDTH = 4096
ME2_VOXELS_PER_SUBJECT = me1.VOXELS_PER_SUBJECT
BATCH_AXIS = {0: 'batch'}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--checkpoint', required=True, help='MindEye .pth (MindEye1: prior + voxel2clip; MindEye2: model)')
    p.add_argument('--arch', required=True, choices=['mindeye1', 'mindeye2'])
    p.add_argument('--subject', required=True, type=int, help='NSD subject 1-8')
    p.add_argument('--out', required=True, help='model directory to write')
    p.add_argument('--lowlevel-checkpoint', help='MindEye1 low-level autoencoder .pth (optional)')
    p.add_argument('--fp16', action='store_true', help='store weights and tensors as float16 (CUDA only)')
    p.add_argument('--width', type=int, help='reduced hidden width of a test model (default: 4096, full size)')
    p.add_argument('--prior-timesteps', type=int, default=100,
                   help='prior timesteps when the checkpoint has no noise_scheduler buffers')
    p.add_argument('--guidance', type=float,
                   help='classifier-free guidance scale for the manifest (default: 3.5 MindEye1, 1 MindEye2)')
    p.add_argument('--prior-steps', type=int,
                   help='prior sampling steps for the manifest (default: all timesteps (DDPM) MindEye1, 20 (DDIM) MindEye2)')
    p.add_argument('--ridge-index', type=int, help='MindEye2: which ridge.linears entry to export')
    return p.parse_args(argv)


def check_sizes(args, path, hidden, voxels):
    expected_hidden = args.width if args.width is not None else FULL_WIDTH
    if hidden != expected_hidden:
        raise ExportError('CHECKPOINT_SHAPE', 'The checkpoint hidden width differs from the requested one.', file=path,
                          field='hidden width', value=hidden, expected=str(expected_hidden),
                          fix=f'pass --width {hidden} for a reduced test model, or use the published checkpoint')
    if args.width is None and voxels != me1.VOXELS_PER_SUBJECT[args.subject]:
        raise ExportError('MODEL_VOXELS_MISMATCH', 'The checkpoint input width is not the subject voxel count.',
                          file=path, field='input voxels', value=voxels,
                          expected=f'{me1.VOXELS_PER_SUBJECT[args.subject]} (nsdgeneral voxels of subject {args.subject})',
                          fix=f'pass the --subject this checkpoint was trained on ({subject_for(voxels)})')


def subject_for(voxels):
    matches = [s for s, v in me1.VOXELS_PER_SUBJECT.items() if v == voxels]
    return f'subject {matches[0]}' if matches else 'no NSD subject has this count'


def export_mindeye1(args, out, manifest):
    path = args.checkpoint
    state = read_state_dict(path)
    bare = 'lin0.0.weight' in state and not any(k.startswith('voxel2clip.') for k in state)
    prefix = '' if bare else 'voxel2clip.'
    hidden, voxels = require_key(state, prefix + 'lin0.0.weight', path, 'MindEye1 voxel2clip').shape
    out_dim = require_key(state, prefix + 'lin1.weight', path, 'MindEye1 voxel2clip').shape[0]
    has_projector = prefix + 'projector.0.weight' in state
    if has_projector:
        clip_size = state[prefix + 'projector.0.weight'].shape[0]
    elif out_dim % 768 == 0:
        clip_size = 768
    else:
        clip_size = out_dim
    check_sizes(args, path, hidden, voxels)
    voxel2clip = me1.BrainNetwork(voxels, out_dim, clip_size, h=hidden,
                                  n_blocks=count_indexed(state, prefix + 'mlp.', '.0.weight'),
                                  use_projector=has_projector, has_temp=(prefix + 'temp') in state)
    tokens = out_dim // clip_size
    if bare:
        strict_load(voxel2clip, state, path, 'MindEye1 voxel2clip network')
        prior = None
    else:
        net, timesteps = build_prior_net(state, path, args)
        prior = me1.BrainDiffusionPrior(voxel2clip, net, timesteps)
        # The checkpoint's schedule buffers, when present, replace the recomputed ones.
        strict_load(prior, state, path, 'MindEye1 diffusion prior (with voxel2clip)',
                    optional=lambda k: k.endswith('rotary_emb.freqs') or k.startswith('noise_scheduler.')
                    or k == 'voxel2clip.temp')
    # load_state_dict copied the tensors into the module, so freeing the checkpoint saves one model size.
    state.clear()
    manifest['voxels'] = {'count': int(voxels)}
    heads = manifest['heads']
    x = torch.randn(2, voxels)
    files = export_onnx(BackboneOnly(voxel2clip), (x,), os.path.join(out, 'backbone.onnx'), ['voxels'], ['latent'],
                        {'voxels': BATCH_AXIS, 'latent': BATCH_AXIS}, fp16=args.fp16)
    heads['backbone'] = head(files, 'voxels', 'voxels', 'latent', args, dim=clip_size, tokens=tokens)
    if has_projector:
        latent = torch.randn(2, tokens, clip_size)
        files = export_onnx(voxel2clip.projector, (latent,), os.path.join(out, 'retrieval.onnx'), ['latent'],
                            ['embedding'], {'latent': BATCH_AXIS, 'embedding': BATCH_AXIS}, fp16=args.fp16)
        heads['retrieval'] = head(files, 'backbone', 'latent', 'embedding', args, dim=clip_size, tokens=tokens,
                                  space='clip-vit-l14-hidden' if tokens == 257 else 'clip-vit-l14')
    if prior is not None:
        export_prior(prior, out, heads, args, tokens, clip_size,
                     guidance=3.5 if args.guidance is None else args.guidance,
                     steps=args.prior_steps or prior.noise_scheduler.num_timesteps)
    if args.lowlevel_checkpoint:
        export_lowlevel(args, out, heads, voxels)


def build_prior_net(state, path, args, what='MindEye1 diffusion prior'):
    null = require_key(state, 'net.null_brain_embeds', path, what)
    tokens, dim = null.shape
    layer = 'net.causal_transformer.layers.'
    depth = count_indexed(state, layer, '.0.to_q.weight')
    dim_head = require_key(state, layer + '0.0.null_kv', path, what).shape[1]
    heads = state[layer + '0.0.to_q.weight'].shape[0] // dim_head
    ff_inner = require_key(state, layer + '0.1.1.weight', path, what).shape[0] // 2
    betas = state.get('noise_scheduler.betas')
    timesteps = betas.shape[0] if betas is not None else args.prior_timesteps
    net = me1.VersatileDiffusionPriorNetwork(dim, tokens, depth, dim_head, heads)
    if ff_inner != 4 * dim:
        raise ExportError('CHECKPOINT_SHAPE', 'The prior feed-forward width is not 4 x dim.', file=path,
                          field=layer + '0.1.1.weight', value=list(state[layer + '0.1.1.weight'].shape),
                          expected=f'[{8 * dim}, {dim}]', fix='only ff_mult 4 (the MindEye1 setting) is supported')
    return net, timesteps


class BackboneOnly(torch.nn.Module):
    def __init__(self, voxel2clip):
        super().__init__()
        self.voxel2clip = voxel2clip

    def forward(self, voxels):
        return self.voxel2clip.backbone(voxels)


def export_prior(prior, out, heads, args, tokens, dim, guidance, steps):
    wrapper = me1.DenoiserForExport(prior.net)
    b = 2
    sample_args = (torch.randn(b, tokens, dim), torch.tensor([10.0, 3.0]), torch.randn(b, tokens, dim), torch.ones(b))
    names = ['image_embed', 'timestep', 'brain_embed', 'cond_keep']
    files = export_onnx(wrapper, sample_args, os.path.join(out, 'prior.onnx'), names, ['pred_x_start'],
                        {n: BATCH_AXIS for n in names + ['pred_x_start']}, fp16=args.fp16)
    schedule = prior.noise_scheduler
    schedule_doc = {name: [float(v) for v in getattr(schedule, name)] for name in me1.SCHEDULE_BUFFERS}
    with open(os.path.join(out, 'prior_schedule.json'), 'w') as f:
        json.dump(schedule_doc, f)
    heads['prior'] = head(files, 'backbone', 'brain_embed', 'pred_x_start', args, dim=dim, tokens=tokens,
                          inputNames=names, timesteps=schedule.num_timesteps, steps=steps, guidance=guidance,
                          schedule='cosine', scheduleFile='prior_schedule.json', predict='x_start',
                          nullConditioning='brain+image')


def export_lowlevel(args, out, heads, voxels):
    path = args.lowlevel_checkpoint
    from mindeye.vae_decoder import rename_legacy_attention_keys
    state = rename_legacy_attention_keys(read_state_dict(path))
    hidden, ll_voxels = require_key(state, 'lin0.0.weight', path, 'MindEye1 low-level head').shape
    check_sizes(args, path, hidden, ll_voxels)
    if ll_voxels != voxels:
        raise ExportError('MODEL_VOXELS_MISMATCH', 'The low-level checkpoint takes another voxel count than the backbone.',
                          file=path, field='lin0.0.weight', value=int(ll_voxels), expected=str(voxels),
                          fix='export checkpoints of the same subject together')
    model = me1.Voxel2StableDiffusionModel(ll_voxels, h=hidden, n_blocks=count_indexed(state, 'mlp.', '.0.weight'),
                                           use_cont='maps_projector.0.weight' in state)
    strict_load(model, state, path, 'MindEye1 low-level head (Voxel2StableDiffusionModel, 4x upsampler)')
    state.clear()
    files = export_onnx(model, (torch.randn(2, ll_voxels),), os.path.join(out, 'lowlevel.onnx'), ['voxels'],
                        ['latents'], {'voxels': BATCH_AXIS, 'latents': BATCH_AXIS}, fp16=args.fp16)
    heads['lowLevel'] = head(files, 'voxels', 'voxels', 'latents', args, latentShape=[4, 64, 64])


def export_mindeye2(args, out, manifest):
    path = args.checkpoint
    state = read_state_dict(path)
    n_ridge = count_indexed(state, 'ridge.linears.', '.weight')
    if n_ridge == 0:
        require_key(state, 'ridge.linears.0.weight', path, 'MindEye2 model')
    sizes = [state[f'ridge.linears.{i}.weight'].shape[1] for i in range(n_ridge)]
    hidden = state['ridge.linears.0.weight'].shape[0]
    index = pick_ridge(args, path, sizes)
    check_sizes(args, path, hidden, sizes[index])
    seq_len = require_key(state, 'backbone.mixer_blocks2.0.0.weight', path, 'MindEye2 backbone').shape[0]
    clip_size = require_key(state, 'backbone.clip_proj.0.weight', path, 'MindEye2 backbone').shape[0]
    out_dim = require_key(state, 'backbone.backbone_linear.weight', path, 'MindEye2 backbone').shape[0]
    tokens = out_dim // clip_size
    if seq_len != 1:
        raise ExportError('CHECKPOINT_SHAPE', 'Only MindEye2 models with seq_len 1 are supported.', file=path,
                          field='backbone.mixer_blocks2.0.0.weight', value=[seq_len], expected='[1]',
                          fix='the published MindEye2 checkpoints use seq_len 1; retrain or extend tools/mindeye/me2.py')
    blurry = 'backbone.blin1.weight' in state
    module = me2.MindEyeModule(me2.RidgeRegression(sizes, hidden),
                               me2.BrainNetwork(hidden, seq_len, count_indexed(state, 'backbone.mixer_blocks1.', '.0.weight'),
                                                tokens, clip_size, blurry=blurry))
    if blurry:
        # Checkpoints saved with diffusers < 0.14 name the decoder attention query/key/value/proj_attn.
        from mindeye.vae_decoder import rename_legacy_attention_keys
        state = rename_legacy_attention_keys(state)
    strict_load(module, state, path, 'MindEye2 ridge + backbone' + (' with the blurry branch' if blurry else ''),
                ignored=lambda k: k.startswith(ME2_PRIOR_PREFIX))
    prior = build_mindeye2_prior(state, path, args, tokens, clip_size)
    state.clear()
    voxels = sizes[index]
    manifest['voxels'] = {'count': int(voxels)}
    heads = manifest['heads']
    files = export_onnx(me2.Mindeye2Backbone(module, index), (torch.randn(2, voxels),), os.path.join(out, 'backbone.onnx'),
                        ['voxels'], ['latent'], {'voxels': BATCH_AXIS, 'latent': BATCH_AXIS}, fp16=args.fp16)
    heads['backbone'] = head(files, 'voxels', 'voxels', 'latent', args, dim=clip_size, tokens=tokens)
    files = export_onnx(module.backbone.clip_proj, (torch.randn(2, tokens, clip_size),), os.path.join(out, 'retrieval.onnx'),
                        ['latent'], ['embedding'], {'latent': BATCH_AXIS, 'embedding': BATCH_AXIS}, fp16=args.fp16)
    heads['retrieval'] = head(files, 'backbone', 'latent', 'embedding', args, dim=clip_size, tokens=tokens,
                              space='openclip-vit-bigg14-hidden')
    if prior is not None:
        export_prior(prior, out, heads, args, tokens, clip_size,
                     guidance=1.0 if args.guidance is None else args.guidance, steps=args.prior_steps or 20)
    if blurry:
        files = export_onnx(me2.Mindeye2Blurry(module, index), (torch.randn(2, voxels),), os.path.join(out, 'lowlevel.onnx'),
                            ['voxels'], ['latents'], {'voxels': BATCH_AXIS, 'latents': BATCH_AXIS}, fp16=args.fp16)
        heads['lowLevel'] = head(files, 'voxels', 'voxels', 'latents', args, latentShape=[4, 28, 28])


ME2_PRIOR_PREFIX = 'diffusion_prior.'


def build_mindeye2_prior(state, path, args, tokens, clip_size):
    """Load MindEye2's prior (keys diffusion_prior.net.* and .noise_scheduler.*), or return None.

    MindEye2's PriorNetwork has the same code as MindEye1's VersatileDiffusionPriorNetwork, at
    256 x 1664 tokens, so the same module and export serve both.
    """
    prior_state = {k[len(ME2_PRIOR_PREFIX):]: v for k, v in state.items() if k.startswith(ME2_PRIOR_PREFIX)}
    if not prior_state:
        return None
    what = 'MindEye2 diffusion prior'
    net, timesteps = build_prior_net(prior_state, path, args, what)
    if (net.num_tokens, net.dim) != (tokens, clip_size):
        raise ExportError('CHECKPOINT_SHAPE', 'The prior token shape differs from the backbone output.', file=path,
                          field='diffusion_prior.net.null_brain_embeds', value=[net.num_tokens, net.dim],
                          expected=str([tokens, clip_size]), fix='export a checkpoint whose prior was trained with this backbone')
    prior = me1.BrainDiffusionPrior(None, net, timesteps)
    strict_load(prior, prior_state, path, what,
                optional=lambda k: k.endswith('rotary_emb.freqs') or k.startswith('noise_scheduler.'))
    return prior


def pick_ridge(args, path, sizes):
    if args.ridge_index is not None:
        if not 0 <= args.ridge_index < len(sizes):
            raise ExportError('CHECKPOINT_SHAPE', 'No ridge layer has that index.', file=path, field='--ridge-index',
                              value=args.ridge_index, expected=f'0..{len(sizes) - 1}', fix='pick an existing index')
        return args.ridge_index
    if len(sizes) == 1:
        return 0
    wanted = me1.VOXELS_PER_SUBJECT[args.subject]
    if wanted in sizes:
        return sizes.index(wanted)
    raise ExportError('MODEL_VOXELS_MISMATCH', 'No ridge layer takes the subject voxel count.', file=path,
                      field='ridge.linears.*.weight', value=sizes, expected=str(wanted),
                      fix='pass --ridge-index to pick one, or the --subject the model was trained on')


def head(files, source, input_name, output_name, args, **extra):
    spec = {'file': files[0], 'input': source, 'inputName': input_name, 'outputName': output_name}
    if len(files) > 1:
        spec['externalData'] = files[1]
    if args.fp16:
        spec['dtype'] = 'float16'
    spec.update(extra)
    return spec


def main(argv):
    args = parse_args(argv)
    if args.subject not in me1.VOXELS_PER_SUBJECT:
        raise ExportError('CLI_USAGE', 'Invalid subject.', field='--subject', value=args.subject,
                          expected='an NSD subject from 1 to 8', fix='pass --subject 1 to 8')
    if args.width is not None and args.width <= 0:
        raise ExportError('CLI_USAGE', 'Invalid width.', field='--width', value=args.width,
                          expected='a positive integer', fix='omit --width for the published checkpoints')
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    manifest = {
        'format': 'mindeye-rt-model', 'version': 1,
        'name': f'{args.arch}-subj{args.subject:02d}' + (f'-w{args.width}' if args.width else ''),
        'subject': str(args.subject),
        'provenance': {
            'tool': 'tools/mindeye_export.py', 'arch': args.arch,
            'checkpoint': os.path.basename(args.checkpoint),
            'lowlevelCheckpoint': os.path.basename(args.lowlevel_checkpoint) if args.lowlevel_checkpoint else None,
            'torch': torch.__version__, 'fp16': args.fp16, 'width': args.width,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        },
        'normalization': {'kind': 'running'},
        'heads': {},
    }
    if args.arch == 'mindeye1':
        export_mindeye1(args, out, manifest)
    else:
        export_mindeye2(args, out, manifest)
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2)
    sys.stdout.write(json.dumps({'out': out, 'heads': sorted(manifest['heads'])}) + '\n')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except ExportError as err:
        err.report()
        sys.exit(EXIT_EXPORT_ERROR)
