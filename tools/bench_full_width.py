#!/usr/bin/python3
"""Full-width MindEye1 heads with random weights: ONNX export and PyTorch CPU forward timings.

Used by src/bench/full-width.ts (`mindeye-rt bench --full-width`). The networks have subject 1's
sizes: 15,724 voxels, a backbone 4096 wide to 257 x 768, the projector, the low-level head and
a prior denoiser of depth 6 with 12 heads of 64. Each head is exported with the exporter's ONNX
writer into --out, PyTorch forwards are timed at each --batch, and one JSON line goes to stdout. Needs about 4.8 GB of
disk in --out and about 12 GB of memory while exporting the backbone.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from mindeye import me1  # noqa: E402
from mindeye.onnx_io import export_onnx  # noqa: E402


def timed(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--batch', default='1,8')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    voxels, tokens, clip = me1.VOXELS_PER_SUBJECT[1], 257, 768
    started = time.perf_counter()
    voxel2clip = me1.BrainNetwork(voxels, tokens * clip, clip, h=4096).eval()
    lowlevel = me1.Voxel2StableDiffusionModel(voxels, h=4096).eval()
    prior = me1.VersatileDiffusionPriorNetwork(clip, tokens, depth=6, dim_head=64, heads=12).eval()
    denoiser = me1.DenoiserForExport(prior).eval()
    build_s = time.perf_counter() - started
    params = {
        'backbone': sum(p.numel() for n, p in voxel2clip.named_parameters() if not n.startswith('projector')),
        'retrieval': sum(p.numel() for p in voxel2clip.projector.parameters()),
        'lowLevel': sum(p.numel() for p in lowlevel.parameters()),
        'prior': sum(p.numel() for p in prior.parameters() if p.requires_grad),
    }

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.voxel2clip = voxel2clip

        def forward(self, x):
            return self.voxel2clip.backbone(x)

    axis = {0: 'batch'}
    started = time.perf_counter()
    files = {
        'backbone': export_onnx(Backbone(), (torch.randn(1, voxels),), os.path.join(args.out, 'backbone.onnx'),
                                ['voxels'], ['latent'], {'voxels': axis, 'latent': axis}),
        'retrieval': export_onnx(voxel2clip.projector, (torch.randn(1, tokens, clip),), os.path.join(args.out, 'retrieval.onnx'),
                                 ['latent'], ['embedding'], {'latent': axis, 'embedding': axis}),
        'lowLevel': export_onnx(lowlevel, (torch.randn(1, voxels),), os.path.join(args.out, 'lowlevel.onnx'),
                                ['voxels'], ['latents'], {'voxels': axis, 'latents': axis}),
        'prior': export_onnx(denoiser, (torch.randn(1, tokens, clip), torch.tensor([50.0]), torch.randn(1, tokens, clip),
                                        torch.ones(1)), os.path.join(args.out, 'prior.onnx'),
                             ['image_embed', 'timestep', 'brain_embed', 'cond_keep'], ['pred_x_start'],
                             {n: axis for n in ['image_embed', 'timestep', 'brain_embed', 'cond_keep', 'pred_x_start']}),
    }
    export_s = time.perf_counter() - started
    timings = {}
    with torch.no_grad():
        for batch in [int(b) for b in args.batch.split(',')]:
            x = torch.randn(batch, voxels)
            latent = voxel2clip.backbone(x)
            row = {
                'backbone': timed(lambda: voxel2clip.backbone(x), args.repeats),
                'retrieval': timed(lambda: voxel2clip.projector(latent), args.repeats),
                'lowLevel': timed(lambda: lowlevel(x), args.repeats),
                'prior': timed(lambda: denoiser(latent, torch.full((batch,), 50.0), latent, torch.ones(batch)), args.repeats),
            }
            row['total'] = sum(row.values())
            timings[str(batch)] = row
    import resource
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'params': params, 'files': files,
                      'buildSeconds': build_s, 'exportSeconds': export_s, 'timingsMs': timings, 'peakRssMb': peak_rss_mb}))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
