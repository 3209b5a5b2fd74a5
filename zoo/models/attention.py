"""Causal grouped-query self-attention (Ainslie et al. 2023) with rotary embeddings (Su et al.
2021) through PyTorch SDPA, and a KV cache for incremental decoding.

Q-Sparse (arXiv 2407.10969) sparsifies the attention input (shared by q, k and v, which are one
fused projection) and the o_proj input, never the attention internals. With ternary weights
BitNet b1.58 (arXiv 2402.17764) adds a sub-norm on the attention output before o_proj.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.config import ModelConfig
from zoo.models.linear import ZooLinear
from zoo.models.norm import RMSNorm


def llama3_inverse_frequencies(inv_freq: torch.Tensor, factor: float, low: float, high: float, original_len: int) -> torch.Tensor:
    """Llama 3's RoPE scaling: rotations slower than ``original_len / low`` positions per turn are
    slowed by ``factor``, those faster than ``original_len / high`` kept, and the band between
    blended linearly in ``original_len / wavelength`` (so long contexts reuse the trained angles)."""
    wavelength = 2 * math.pi / inv_freq
    blend = ((original_len / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    return inv_freq * (blend + (1 - blend) / factor)


def rope_frequencies(head_dim: int, max_seq_len: int, theta: float, device=None, *, llama3: tuple | None = None) -> torch.Tensor:
    """``[max_seq_len, head_dim/2]`` complex rotations e^{i·pos·θ^(-2j/d)}; ``llama3`` =
    (factor, low_freq_factor, high_freq_factor, original_max_seq_len) applies Llama 3's scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    if llama3 is not None:
        inv_freq = llama3_inverse_frequencies(inv_freq, *llama3)
    angles = torch.outer(torch.arange(max_seq_len, device=device, dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotates channel pairs (2j, 2j+1) of ``x [B, H, T, D]`` by ``freqs [T, D/2]``."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs).flatten(-2).to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of one layer for positions ``[0, length)``; preallocated to ``max_len``."""

    keys: torch.Tensor  # [B, n_kv_heads, max_len, head_dim]
    values: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch: int, config: ModelConfig, max_len: int, device, dtype) -> KVCache:
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        # empty, not zeros: only positions < length are ever read, and untouched pages of a long
        # context cost no memory until decoding reaches them
        return cls(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KVCache: {end} positions exceed the cache's max_len={self.keys.shape[2]}")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        qkv_out = (config.n_heads + 2 * config.kv_heads) * config.head_dim
        self.wqkv = ZooLinear.from_config(config, config.dim, qkv_out, site="attn_in", bias=config.qkv_bias)
        self.sub_norm = RMSNorm(config.dim, config.norm_eps, config.kernel) if config.has_sub_norm else nn.Identity()
        self.wo = ZooLinear.from_config(config, config.dim, config.dim, site="attn_out")

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, seq, _ = x.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, freqs), apply_rope(k, freqs)

        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.append(k, v)
        gqa = self.n_heads != self.n_kv_heads
        if start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif seq == 1:
            # One new query, the last position: it sees every cached key, so no mask to build
            # (decoding's common case, where building one cost more than the attention itself).
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        else:
            # New queries sit at positions start..start+seq-1 and see every cached key up to their own.
            positions = torch.arange(start, start + seq, device=x.device)
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= positions[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(batch, seq, q_size)
        return self.wo(self.sub_norm(out))
