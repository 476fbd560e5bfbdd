"""MindEye1 networks (MedARC-AI/fMRI-reconstruction-NSD, src/models.py), rebuilt for export.

Names and layer order follow the public code so that its checkpoints load with strict keys:
- BrainNetwork (`voxel2clip`): Linear(V, h) + LayerNorm + GELU, 4 residual blocks of width h,
  Linear(h, tokens * clip) and the retrieval projector clip -> 2048 -> 2048 -> clip.
- VersatileDiffusionPriorNetwork (`net`): the diffusion prior's denoiser, one call per timestep.
- NoiseSchedule (`noise_scheduler`): DALLE2's cosine schedule buffers, kept in float32.
- Voxel2StableDiffusionModel: the low-level head, voxels -> 4x64x64 SD VAE latents.
Dropout is left out (identity at inference).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .dalle2_parts import MLP, FlaggedCausalTransformer, SinusoidalPosEmb, relative_position_buckets
from .vae_decoder import Decoder

VOXELS_PER_SUBJECT = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}


class BrainNetwork(nn.Module):
    def __init__(self, in_dim, out_dim, clip_size, h=4096, n_blocks=4, use_projector=True, has_temp=False):
        super().__init__()
        if has_temp:
            # Some MindEye1 releases store a contrastive temperature; it is unused at inference.
            self.temp = nn.Parameter(torch.tensor(0.006))
        self.lin0 = nn.Sequential(nn.Linear(in_dim, h), nn.LayerNorm(h), nn.GELU(), nn.Identity())
        self.mlp = nn.ModuleList([
            nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(), nn.Identity()) for _ in range(n_blocks)
        ])
        self.lin1 = nn.Linear(h, out_dim)
        self.clip_size = clip_size
        self.use_projector = use_projector
        if use_projector:
            self.projector = projector(clip_size, clip_size, 2048)

    def backbone(self, x):
        """Voxels [B, V] -> latent [B, tokens, clip]."""
        x = self.lin0(x)
        residual = x
        for block in self.mlp:
            x = block(x) + residual
            residual = x
        return self.lin1(x).reshape(x.shape[0], -1, self.clip_size)

    def forward(self, x):
        latent = self.backbone(x)
        if self.use_projector:
            return latent, self.projector(latent)
        return latent


def projector(in_dim, out_dim, h):
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.GELU(), nn.Linear(in_dim, h),
        nn.LayerNorm(h), nn.GELU(), nn.Linear(h, h),
        nn.LayerNorm(h), nn.GELU(), nn.Linear(h, out_dim),
    )


class VersatileDiffusionPriorNetwork(nn.Module):
    """The prior's denoiser with learned_query_mode 'pos_emb' and continuous time embeddings.

    Tokens are [brain (T), time (1), noisy image + positional embedding (T)]; the last T outputs
    predict the clean image embedding (x_start).
    """

    def __init__(self, dim, num_tokens, depth, dim_head, heads, causal=False):
        super().__init__()
        self.dim = dim
        self.num_tokens = num_tokens
        self.to_time_embeds = nn.Sequential(nn.Sequential(SinusoidalPosEmb(dim), MLP(dim, dim)))
        self.learned_query = nn.Parameter(torch.randn(num_tokens, dim) * dim ** -0.5)
        self.causal_transformer = FlaggedCausalTransformer(dim, depth, dim_head=dim_head, heads=heads, causal=causal)
        self.null_brain_embeds = nn.Parameter(torch.randn(num_tokens, dim))
        self.null_image_embed = nn.Parameter(torch.randn(num_tokens, dim))

    def forward(self, image_embed, timesteps, brain_embed, cond_keep, attn_bias=None, rotary_angles=None):
        """cond_keep [B] is 1 to keep the conditioning and 0 to swap in the null embeddings.

        MindEye1's forward_with_cond_scale drops the brain and the image embedding together for
        the unconditional pass, so one flag covers both.
        """
        keep = (cond_keep > 0.5)[:, None, None]
        brain_embed = torch.where(keep, brain_embed, self.null_brain_embeds[None])
        image_embed = torch.where(keep, image_embed, self.null_image_embed[None])
        time_embed = self.to_time_embeds(timesteps.float()).reshape(-1, 1, self.dim)
        image_embed = image_embed + self.learned_query[None]
        tokens = torch.cat((brain_embed, time_embed, image_embed), dim=-2)
        tokens = self.causal_transformer(tokens, attn_bias, rotary_angles)
        return tokens[..., -self.num_tokens:, :]


class DenoiserForExport(nn.Module):
    """The denoiser with its position tables precomputed, because the token count is fixed.

    The relative-position buckets and rotary angles depend only on the sequence length, so they
    become constants of the ONNX graph. The learned bias table stays a weight.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net
        n = 2 * net.num_tokens + 1
        transformer = net.causal_transformer
        self.register_buffer('buckets', relative_position_buckets(
            n, n + 1, transformer.rel_pos_bias.num_buckets, transformer.rel_pos_bias.max_distance))
        self.register_buffer('rotary_angles', transformer.layers[0][0].rotary_emb.angles(n).detach().clone())

    def forward(self, image_embed, timestep, brain_embed, cond_keep):
        bias = self.net.causal_transformer.rel_pos_bias.relative_attention_bias(self.buckets).permute(2, 0, 1)
        return self.net(image_embed, timestep, brain_embed, cond_keep, bias, self.rotary_angles)


SCHEDULE_BUFFERS = [
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
    'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod',
    'posterior_variance', 'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2',
    'p2_loss_weight',
]


def cosine_betas(timesteps, s=0.008):
    steps = timesteps + 1
    x = torch.linspace(0, timesteps, steps, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


class NoiseSchedule(nn.Module):
    """DALLE2's NoiseScheduler buffers: computed in float64, stored as float32."""

    def __init__(self, timesteps):
        super().__init__()
        betas = cosine_betas(timesteps)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        values = {
            'betas': betas,
            'alphas_cumprod': alphas_cumprod,
            'alphas_cumprod_prev': alphas_cumprod_prev,
            'sqrt_alphas_cumprod': torch.sqrt(alphas_cumprod),
            'sqrt_one_minus_alphas_cumprod': torch.sqrt(1.0 - alphas_cumprod),
            'log_one_minus_alphas_cumprod': torch.log(1.0 - alphas_cumprod),
            'sqrt_recip_alphas_cumprod': torch.sqrt(1.0 / alphas_cumprod),
            'sqrt_recipm1_alphas_cumprod': torch.sqrt(1.0 / alphas_cumprod - 1),
            'posterior_variance': posterior_variance,
            'posterior_log_variance_clipped': torch.log(posterior_variance.clamp(min=1e-20)),
            'posterior_mean_coef1': betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            'posterior_mean_coef2': (1.0 - alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - alphas_cumprod),
            'p2_loss_weight': (1.0 + alphas_cumprod / (1.0 - alphas_cumprod)) ** -0.0,
        }
        for name in SCHEDULE_BUFFERS:
            self.register_buffer(name, values[name].to(torch.float32))
        self.num_timesteps = timesteps


class BrainDiffusionPrior(nn.Module):
    """The container whose state dict MindEye1's prior checkpoints store (keys net.*,
    voxel2clip.*, noise_scheduler.*)."""

    def __init__(self, voxel2clip, net, timesteps):
        super().__init__()
        self.net = net
        self.voxel2clip = voxel2clip
        self.noise_scheduler = NoiseSchedule(timesteps)


class Voxel2StableDiffusionModel(nn.Module):
    """Low-level head ('4x' upsampling mode): voxels -> [B, 4, 64, 64] SD VAE latents."""

    def __init__(self, in_dim, h=4096, n_blocks=4, use_cont=False):
        super().__init__()
        self.lin0 = nn.Sequential(nn.Linear(in_dim, h, bias=False), nn.LayerNorm(h), nn.SiLU(), nn.Identity())
        self.mlp = nn.ModuleList([
            nn.Sequential(nn.Linear(h, h, bias=False), nn.LayerNorm(h), nn.SiLU(), nn.Identity())
            for _ in range(n_blocks)
        ])
        self.lin1 = nn.Linear(h, 16384, bias=False)
        self.norm = nn.GroupNorm(1, 64)
        self.upsampler = Decoder(64, 4, [64, 128, 256], layers_per_block=1)
        if use_cont:
            # Contrastive feature projector used only in training; loaded so keys match, not exported.
            self.maps_projector = nn.Sequential(
                nn.LayerNorm(512), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))

    def forward(self, x):
        x = self.lin0(x)
        residual = x
        for block in self.mlp:
            x = block(x) + residual
            residual = x
        x = self.lin1(x).reshape(-1, 64, 16, 16)
        return self.upsampler(self.norm(x))
