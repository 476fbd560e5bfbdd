"""The diffusers `Decoder` (SD VAE style) that MindEye's low-level heads use as an upsampler.

Rebuilt with diffusers' parameter names (diffusers.models.vae.Decoder with UpDecoderBlock2D
blocks, no time embedding). Older diffusers releases named the mid-block attention weights
query/key/value/proj_attn; `rename_legacy_attention_keys` maps them to to_q/to_k/to_v/to_out.0.
"""
import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32
EPS = 1e-6


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection."""

    def __init__(self, channels):
        super().__init__()
        self.group_norm = nn.GroupNorm(GROUPS, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Identity()])

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        attn = torch.softmax(q @ k.transpose(1, 2) / (c ** 0.5), dim=-1)
        out = self.to_out[0](attn @ v)
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class MidBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels)])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels), ResnetBlock2D(channels, channels)])

    def forward(self, x):
        x = self.resnets[0](x)
        return self.resnets[1](self.attentions[0](x))


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, add_upsample):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        ])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_channels, out_channels, block_out_channels, layers_per_block=1):
        super().__init__()
        reversed_channels = list(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(in_channels, reversed_channels[0], 3, padding=1)
        self.mid_block = MidBlock(reversed_channels[0])
        self.up_blocks = nn.ModuleList([])
        output_channel = reversed_channels[0]
        for i, channels in enumerate(reversed_channels):
            previous = output_channel
            output_channel = channels
            is_last = i == len(block_out_channels) - 1
            self.up_blocks.append(UpDecoderBlock2D(previous, output_channel, layers_per_block + 1, not is_last))
        self.conv_norm_out = nn.GroupNorm(GROUPS, block_out_channels[0], eps=EPS)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


LEGACY_ATTENTION_NAMES = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


def rename_legacy_attention_keys(state_dict):
    """Map diffusers < 0.14 mid-block attention names to the current ones; returns a new dict."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split('.')
        if 'attentions' in parts and len(parts) >= 2 and parts[-2] in LEGACY_ATTENTION_NAMES:
            key = '.'.join(parts[:-2] + [LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        out[key] = value
    return out
