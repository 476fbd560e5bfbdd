"""Networks of the demo decoder (PyTorch 1.13; exported to ONNX by train_demo.py).

All widths are small on purpose: the committed model directory has a 4 MB budget and the
whole training has to run in about 20 minutes on 2 CPU cores.

Shapes (B = batch):
- ImageEncoder: image [B, 3, 64, 64] in [0, 1] -> unit-norm embedding [B, EMBED_DIM].
- AutoEncoder: image [B, 3, 64, 64] in [0, 1] <-> latents [B, 4, 16, 16] (unscaled).
- Backbone: voxels [B, V] (z-scored betas) -> latent [B, hidden].
- RetrievalHead: latent [B, hidden] -> unit-norm embedding [B, EMBED_DIM].
- LowLevelHead: latent [B, hidden] -> scaled autoencoder latents [B, 4, 16, 16].
- Denoiser: noisy scaled latents [B, 4, 16, 16], timestep [B] float32, condition [B, EMBED_DIM]
  -> epsilon [B, 4, 16, 16]. A zero condition is the null condition of classifier-free guidance.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

IMAGE_SIZE = 64
LATENT_SHAPE = (4, 16, 16)
EMBED_DIM = 64


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResBlock(nn.Module):
    """Pre-norm residual block of two 3x3 convolutions, optionally shifted by an embedding."""

    def __init__(self, channels_in: int, channels_out: int, embed_dim: int = 0):
        super().__init__()
        self.norm1 = group_norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = group_norm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * channels_out) if embed_dim else None
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.embed is not None:
            # FiLM conditioning: per-channel scale and shift from the time/condition embedding.
            scale, shift = self.embed(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class AutoEncoder(nn.Module):
    """Deterministic convolutional autoencoder, 64x64 RGB <-> 4x16x16 (downsampling factor 4)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), ResBlock(w, w),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), ResBlock(2 * w, 2 * w),
            group_norm(2 * w), nn.SiLU(), nn.Conv2d(2 * w, LATENT_SHAPE[0], 1),
        )
        self.decoder = AEDecoder(width)

    def encode(self, image):
        return self.encoder(image * 2 - 1)

    def forward(self, image):
        return self.decoder(self.encode(image))


class AEDecoder(nn.Module):
    """Decoder half of AutoEncoder: unscaled latents -> image [B, 3, 64, 64], about [0, 1]."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(LATENT_SHAPE[0], 2 * w, 3, padding=1), ResBlock(2 * w, 2 * w),
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(2 * w, w, 3, padding=1), ResBlock(w, w),
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(w, w // 2, 3, padding=1), ResBlock(w // 2, w // 2),
            group_norm(w // 2), nn.SiLU(), nn.Conv2d(w // 2, 3, 3, padding=1),
        )

    def forward(self, latents):
        return self.net(latents) * 0.5 + 0.5


class ScaledDecoder(nn.Module):
    """Decoder as exported: the caller divides scaled latents by `scale` first, and the output is clipped to [0, 1]."""

    def __init__(self, decoder: AEDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, latents):
        return self.decoder(latents).clamp(0.0, 1.0)


class ImageEncoder(nn.Module):
    """Small CNN that keeps the 4x4 spatial layout before its projection, so the embedding
    carries where things are in the image (the brain's receptive fields see layout), not only
    what they are."""

    def __init__(self, width: int = 24):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), group_norm(2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 3 * w, 4, stride=2, padding=1), group_norm(3 * w), nn.SiLU(),
            nn.Conv2d(3 * w, 3 * w, 4, stride=2, padding=1), group_norm(3 * w), nn.SiLU(),
        )
        self.project = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(3 * w * 16, EMBED_DIM))

    def forward(self, image):
        return F.normalize(self.project(self.features(image * 2 - 1)), dim=-1)


class ResidualMLPBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x):
        return x + self.net(x)


class Backbone(nn.Module):
    """MindEye's BrainNetwork shape, narrowed: Linear + LayerNorm + GELU + dropout 0.5, then
    residual blocks with dropout 0.15."""

    def __init__(self, voxel_count: int, hidden: int, blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(voxel_count, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(0.5))
        self.blocks = nn.Sequential(*[ResidualMLPBlock(hidden, 0.15) for _ in range(blocks)])

    def forward(self, voxels):
        return self.blocks(self.stem(voxels))


class RetrievalHead(nn.Module):
    """Projector from the backbone latent to a unit-norm embedding in the image encoder's space."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, EMBED_DIM))

    def forward(self, latent):
        return F.normalize(self.net(latent), dim=-1)


class LowLevelHead(nn.Module):
    """Linear map from the backbone latent to 32x4x4, then two upsampling convolution stages to 4x16x16 latents."""

    def __init__(self, hidden: int, width: int = 32):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(hidden, width * 16)
        self.up = nn.Sequential(
            group_norm(width), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(width, width, 3, padding=1), group_norm(width), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(width, LATENT_SHAPE[0], 3, padding=1),
        )

    def forward(self, latent):
        return self.up(self.linear(latent).view(-1, self.width, 4, 4))


class BrainDecoder(nn.Module):
    """Backbone plus both heads, trained together."""

    def __init__(self, voxel_count: int, hidden: int, blocks: int = 2):
        super().__init__()
        self.backbone = Backbone(voxel_count, hidden, blocks)
        self.retrieval = RetrievalHead(hidden)
        self.low_level = LowLevelHead(hidden)

    def forward(self, voxels):
        latent = self.backbone(voxels)
        return latent, self.retrieval(latent), self.low_level(latent)


def timestep_features(timestep, dim: int):
    """Sinusoidal timestep features (as DDPM's UNet), timestep float32 [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = timestep.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class Denoiser(nn.Module):
    """Two-level UNet (16x16 -> 8x8 -> 4x4) predicting epsilon, conditioned through FiLM on the
    timestep and the unit-normalized image embedding."""

    def __init__(self, width: int = 32, embed_width: int = 128):
        super().__init__()
        w, e = width, embed_width
        self.time_mlp = nn.Sequential(nn.Linear(64, e), nn.SiLU(), nn.Linear(e, e))
        self.cond_mlp = nn.Sequential(nn.Linear(EMBED_DIM, e), nn.SiLU(), nn.Linear(e, e))
        self.stem = nn.Conv2d(LATENT_SHAPE[0], w, 3, padding=1)
        self.down1 = ResBlock(w, w, e)
        self.pool1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * w, 2 * w, e)
        self.pool2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * w, 2 * w, e)
        self.up2 = ResBlock(4 * w, 2 * w, e)
        self.up1 = ResBlock(3 * w, w, e)
        self.out = nn.Sequential(group_norm(w), nn.SiLU(), nn.Conv2d(w, LATENT_SHAPE[0], 3, padding=1))

    def forward(self, noisy_latents, timestep, condition):
        # x / max(|x|, eps) keeps the all-zero null condition at zero.
        norm = condition.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        emb = F.silu(self.time_mlp(timestep_features(timestep, 64)) + self.cond_mlp(condition / norm))
        h0 = self.down1(self.stem(noisy_latents), emb)
        h1 = self.down2(self.pool1(h0), emb)
        h = self.mid(self.pool2(h1), emb)
        h = F.interpolate(h, scale_factor=2.0, mode='nearest')
        h = self.up2(torch.cat([h, h1], dim=1), emb)
        h = F.interpolate(h, scale_factor=2.0, mode='nearest')
        h = self.up1(torch.cat([h, h0], dim=1), emb)
        return self.out(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
