"""The diffusion-prior transformer parts of DALLE2-pytorch, as MindEye1 used them.

Rebuilt from lucidrains/DALLE2-pytorch (dalle2_pytorch/dalle2_pytorch.py, the 1.x releases that
MindEye1 pinned) and rotary-embedding-torch, with the same parameter names so that the prior's
state-dict keys load strictly. Dropout is left out because it is the identity at inference.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def l2norm(t):
    return F.normalize(t, dim=-1)


class LayerNorm(nn.Module):
    """DALLE2's bias-free layer norm; `stable` first divides by the row maximum."""

    def __init__(self, dim, eps=1e-5, stable=False):
        super().__init__()
        self.eps = eps
        self.stable = stable
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=-1, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half_dim = self.dim // 2
        scale = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim, device=x.device, dtype=x.dtype) * -scale)
        emb = x[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class MLP(nn.Module):
    """Two hidden SiLU layers of width 2 * dim_out, as DALLE2's MLP with its defaults."""

    def __init__(self, dim_in, dim_out, expansion_factor=2.0, depth=2):
        super().__init__()
        hidden = int(expansion_factor * dim_out)
        layers = [nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU(), nn.Identity())]
        for _ in range(depth - 1):
            layers.append(nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Identity()))
        layers.append(nn.Linear(hidden, dim_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.float())


def relative_position_buckets(i, j, num_buckets=32, max_distance=128):
    """T5-style buckets of (key position - query position), the way DALLE2's RelPosBias does it."""
    q_pos = torch.arange(i, dtype=torch.long)
    k_pos = torch.arange(j, dtype=torch.long)
    rel_pos = k_pos[None, :] - q_pos[:, None]
    n = torch.clamp(-rel_pos, min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # n is 0 where is_small holds, so the log of 0 there is discarded by the where below.
    safe_n = torch.clamp(n, min=1).float()
    large = max_exact + (torch.log(safe_n / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return torch.where(is_small, n, large)


class RelPosBias(nn.Module):
    def __init__(self, heads=8, num_buckets=32, max_distance=128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, i, j):
        buckets = relative_position_buckets(i, j, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)


class RotaryEmbedding(nn.Module):
    """rotary-embedding-torch's 'lang' frequencies; only `freqs` is in the state dict."""

    def __init__(self, dim, theta=10000):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def angles(self, seq_len):
        positions = torch.arange(seq_len, dtype=self.freqs.dtype, device=self.freqs.device)
        angles = positions[:, None] * self.freqs[None, :]
        return angles.repeat_interleave(2, dim=-1)


def rotate_half(x):
    x = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary(angles, t):
    rot_dim = angles.shape[-1]
    t_rot, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    t_rot = t_rot * angles.cos() + rotate_half(t_rot) * angles.sin()
    return torch.cat((t_rot, t_pass), dim=-1)


class Attention(nn.Module):
    """Multi-query cosine-similarity attention with a learned null key/value (DALLE2 prior)."""

    def __init__(self, dim, dim_head=64, heads=8, causal=False, rotary_emb=None, cosine_sim_scale=16):
        super().__init__()
        self.scale = cosine_sim_scale
        self.heads = heads
        self.causal = causal
        inner_dim = dim_head * heads
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.rotary_emb = rotary_emb
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim, bias=False), LayerNorm(dim))

    def forward(self, x, attn_bias, rotary_angles=None):
        b, n = x.shape[:2]
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q = q.reshape(b, n, self.heads, -1).permute(0, 2, 1, 3)
        q = q * self.scale
        if self.rotary_emb is not None:
            angles = rotary_angles if rotary_angles is not None else self.rotary_emb.angles(n)
            q = apply_rotary(angles, q)
            k = apply_rotary(angles, k)
        nk = self.null_kv[0].expand(b, 1, -1)
        nv = self.null_kv[1].expand(b, 1, -1)
        k = torch.cat((nk, k), dim=-2)
        v = torch.cat((nv, v), dim=-2)
        q, k = l2norm(q), l2norm(k)
        q = q * math.sqrt(self.scale)
        k = k * math.sqrt(self.scale)
        sim = torch.einsum('bhid,bjd->bhij', q, k)
        sim = sim + attn_bias
        if self.causal:
            i, j = sim.shape[-2:]
            mask = torch.ones((i, j), dtype=torch.bool, device=x.device).triu(j - i + 1)
            sim = sim.masked_fill(mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.einsum('bhij,bjd->bhid', attn, v)
        out = out.permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.to_out(out)


class SwiGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


def feed_forward(dim, mult=4):
    inner = int(mult * dim)
    return nn.Sequential(
        LayerNorm(dim),
        nn.Linear(dim, inner * 2, bias=False),
        SwiGLU(),
        nn.Identity(),
        nn.Identity(),
        nn.Linear(inner, dim, bias=False),
    )


class FlaggedCausalTransformer(nn.Module):
    """MindEye1's transformer: DALLE2's CausalTransformer with a switch for causal masking."""

    def __init__(self, dim, depth, dim_head=64, heads=8, ff_mult=4, causal=True):
        super().__init__()
        self.init_norm = nn.Identity()
        self.rel_pos_bias = RelPosBias(heads=heads)
        rotary = RotaryEmbedding(min(32, dim_head))
        self.layers = nn.ModuleList([])
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                Attention(dim, dim_head=dim_head, heads=heads, causal=causal, rotary_emb=rotary),
                feed_forward(dim, ff_mult),
            ]))
        self.norm = LayerNorm(dim, stable=True)
        self.project_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, attn_bias=None, rotary_angles=None):
        n = x.shape[1]
        x = self.init_norm(x)
        if attn_bias is None:
            attn_bias = self.rel_pos_bias(n, n + 1)
        for attn, ff in self.layers:
            x = attn(x, attn_bias, rotary_angles) + x
            x = ff(x) + x
        return self.project_out(self.norm(x))
