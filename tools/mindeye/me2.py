"""MindEye2's per-subject ridge and shared backbone (MedARC-AI/MindEyeV2, src/models.py and
the training notebook's MindEyeModule), rebuilt for export.

- ridge.linears.<i>: Linear(V_subject, h), one per training subject.
- backbone: n_blocks MLP-mixer blocks over (seq_len, h), Linear(h * seq_len, 256 * 1664) to
  OpenCLIP ViT-bigG/14 tokens, and `clip_proj` (the retrieval projector, width 1664).
- backbone blurry branch (optional): `blin1` to 64 x 7 x 7, GroupNorm, and a diffusers Decoder
  (channels 32/64/128) to [4, 28, 28] SD VAE latents. `b_maps_projector` is used only in training.
The diffusion prior is not rebuilt here. docs/models.md lists what is missing.
"""
from torch import nn

from .vae_decoder import Decoder


class RidgeRegression(nn.Module):
    def __init__(self, input_sizes, out_features):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(size, out_features) for size in input_sizes])


def _mlp(in_dim, out_dim):
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Identity(), nn.Linear(out_dim, out_dim))


class BrainNetwork(nn.Module):
    def __init__(self, h, seq_len, n_blocks, tokens, clip_size, blurry=False):
        super().__init__()
        self.seq_len = seq_len
        self.clip_size = clip_size
        self.mixer_blocks1 = nn.ModuleList([nn.Sequential(nn.LayerNorm(h), _mlp(h, h)) for _ in range(n_blocks)])
        self.mixer_blocks2 = nn.ModuleList([
            nn.Sequential(nn.LayerNorm(seq_len), _mlp(seq_len, seq_len)) for _ in range(n_blocks)
        ])
        self.backbone_linear = nn.Linear(h * seq_len, tokens * clip_size)
        self.clip_proj = nn.Sequential(
            nn.LayerNorm(clip_size), nn.GELU(), nn.Linear(clip_size, clip_size),
            nn.LayerNorm(clip_size), nn.GELU(), nn.Linear(clip_size, clip_size),
            nn.LayerNorm(clip_size), nn.GELU(), nn.Linear(clip_size, clip_size),
        )
        if blurry:
            self.blin1 = nn.Linear(h * seq_len, 4 * 28 * 28)
            self.bnorm = nn.GroupNorm(1, 64)
            self.bupsampler = Decoder(64, 4, [32, 64, 128], layers_per_block=1)
            self.b_maps_projector = nn.Sequential(
                nn.Conv2d(64, 512, 1, bias=False), nn.GroupNorm(1, 512), nn.ReLU(True),
                nn.Conv2d(512, 512, 1, bias=False), nn.GroupNorm(1, 512), nn.ReLU(True),
                nn.Conv2d(512, 512, 1, bias=True),
            )

    def features(self, x):
        """x [B, seq_len, h] -> mixer output flattened to [B, seq_len * h]."""
        residual1 = x
        residual2 = x.permute(0, 2, 1)
        for block1, block2 in zip(self.mixer_blocks1, self.mixer_blocks2):
            x = block1(x) + residual1
            residual1 = x
            x = x.permute(0, 2, 1)
            x = block2(x) + residual2
            residual2 = x
            x = x.permute(0, 2, 1)
        return x.reshape(x.size(0), -1)

    def latent(self, x):
        """x [B, seq_len, h] -> backbone tokens [B, tokens, clip]."""
        x = self.features(x)
        return self.backbone_linear(x).reshape(x.shape[0], -1, self.clip_size)

    def blurry_latents(self, x):
        """x [B, seq_len, h] -> blurry-image SD VAE latents [B, 4, 28, 28]."""
        b = self.blin1(self.features(x)).reshape(-1, 64, 7, 7)
        return self.bupsampler(self.bnorm(b))


class MindEyeModule(nn.Module):
    def __init__(self, ridge, backbone):
        super().__init__()
        self.ridge = ridge
        self.backbone = backbone


class Mindeye2Backbone(nn.Module):
    """Voxels [B, V] of one subject -> bigG tokens [B, tokens, clip], with seq_len 1."""

    def __init__(self, module, ridge_index):
        super().__init__()
        self.ridge = module.ridge.linears[ridge_index]
        self.backbone = module.backbone

    def forward(self, voxels):
        return self.backbone.latent(self.ridge(voxels)[:, None, :])


class Mindeye2Blurry(Mindeye2Backbone):
    """Voxels [B, V] of one subject -> blurry-image latents [B, 4, 28, 28]."""

    def forward(self, voxels):
        return self.backbone.blurry_latents(self.ridge(voxels)[:, None, :])
