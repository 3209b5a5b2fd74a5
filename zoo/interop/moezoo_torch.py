"""The moezoo decoder in plain PyTorch, for a ``zoo export-hf`` folder loaded where moezoo is not
installed: ``modeling_moezoo.py`` falls back to it. It imports nothing of moezoo (transformers
copies it beside the modeling file) and computes what the zoo's torch reference computes, with the
same state-dict keys: Llama-style blocks (RMSNorm, RoPE with Llama 3 scaling, grouped-query
attention, a gated FFN), Q-Sparse top-K / N:M input sparsity (arXiv 2407.10969), BitNet b1.58
ternary weights and per-token int8 activations (arXiv 2402.17764, the weights held as W_q·α, unpacked
from the export's 2-bit codes) and a dropless top-k MoE (MegaBlocks, arXiv 2211.15841).

It is the exact fallback, not a fast one: no KV cache, no kernels; generation recomputes the window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5  # the quantisers' clamp (absmean and absmax)
PACKED, SCALE = ".weight_packed", ".weight_scale"


def kept(k_ratio: float, width: int) -> int:
    return int(math.floor(k_ratio * width + 1e-9))


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly ``k`` largest |x| a row; ties go to the lower channel index."""
    d = x.shape[-1]
    if k == d:
        return torch.ones_like(x, dtype=torch.bool)
    magnitude = x.abs()
    threshold = magnitude.kthvalue(d - k + 1, dim=-1, keepdim=True).values
    above, tied = magnitude > threshold, magnitude == threshold
    return above | (tied & (tied.cumsum(dim=-1) <= k - above.sum(dim=-1, keepdim=True)))


def int8_fake_quant(x: torch.Tensor) -> torch.Tensor:
    x32 = x.float()
    scale = 127.0 / x32.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    return ((x32 * scale).round().clamp(-128, 127) / scale).to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class InputRule:
    """A projection's input transform: top-K or N:M, then int8 (the config's choices)."""

    def __init__(self, config: dict, width: int) -> None:
        self.sparsity, self.int8 = config.get("sparsity", "none"), config.get("act_quant", "none") == "int8"
        self.block = config.get("block_size", 32) if self.sparsity == "block" else width
        self.n_keep = kept(config.get("k_ratio", 1.0), self.block)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sparsity != "none" and self.n_keep < self.block:
            grouped = x.reshape(*x.shape[:-1], x.shape[-1] // self.block, self.block)
            x = x * topk_mask(grouped, self.n_keep).reshape(x.shape)
        return int8_fake_quant(x) if self.int8 else x


class Projection(nn.Module):
    """``F.linear(rule(x), W)``; a ternary weight is held as ``W_q·α`` (what the zoo multiplies by)."""

    def __init__(self, config: dict, in_features: int, out_features: int, experts: int = 0, bias: bool = False) -> None:
        super().__init__()
        shape = (experts, out_features, in_features) if experts else (out_features, in_features)
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.rule = InputRule(config, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.rule(x), self.weight, self.bias)


class Norm(nn.Module):
    def __init__(self, shape, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(shape)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def glu(gate: torch.Tensor, up: torch.Tensor, kind: str) -> torch.Tensor:
    return (F.silu(gate) if kind == "swiglu" else F.relu(gate).square()) * up


class FeedForward(nn.Module):
    def __init__(self, config: dict, hidden: int) -> None:
        super().__init__()
        dim, eps = config["dim"], config.get("norm_eps", 1e-5)
        self.act = config.get("ffn_act", "swiglu")
        self.w_gate_up = Projection(config, dim, 2 * hidden)
        self.sub_norm = Norm(hidden, eps) if config["sub_norm"] else None
        self.w_down = Projection(config, hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = glu(*self.w_gate_up(x).chunk(2, dim=-1), self.act)
        return self.w_down(self.sub_norm(h) if self.sub_norm is not None else h)


class MixtureOfExperts(nn.Module):
    """Softmax top-k routing (fp32), each expert's gated FFN on its tokens, weighted sum in fp32."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        dim, eps, n = config["dim"], config.get("norm_eps", 1e-5), config["n_experts"]
        hidden = config.get("expert_ffn_dim") or config["ffn_dim"]
        self.n_experts, self.top_k, self.renormalize = n, config.get("top_k", 2), config.get("renormalize_router", True)
        self.act = config.get("ffn_act", "swiglu")
        self.router = nn.Linear(dim, n, bias=False)
        self.w_gate_up = Projection(config, dim, 2 * hidden, experts=n)
        self.sub_norm = Norm((n, hidden), eps) if config["sub_norm"] else None
        self.w_down = Projection(config, hidden, dim, experts=n)
        shared = config.get("n_shared_experts", 0)
        self.shared = FeedForward(config, shared * hidden) if shared else None
        if config.get("balance_bias_rate", 0):
            self.register_buffer("selection_bias", torch.zeros(n))
        else:
            self.selection_bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = F.linear(x.float(), self.router.weight.float())
        probs = torch.softmax(logits, dim=-1)
        if self.selection_bias is None:
            weights, experts = probs.topk(self.top_k, dim=-1)
        else:
            experts = (logits + self.selection_bias.float()).topk(self.top_k, dim=-1).indices
            weights = probs.gather(-1, experts)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        h = self.w_gate_up.rule(x)
        out = torch.zeros(x.shape[0], shape[-1], dtype=torch.float32, device=x.device)
        for e in range(self.n_experts):
            rows, slot = (experts == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            hidden = glu(*(h[rows] @ self.w_gate_up.weight[e].t()).chunk(2, dim=-1), self.act)
            if self.sub_norm is not None:
                hidden = rms_norm(hidden, self.sub_norm.weight[e], self.sub_norm.eps)
            y = self.w_down.rule(hidden) @ self.w_down.weight[e].t()
            out.index_add_(0, rows, y.float() * weights[rows, slot].float().unsqueeze(-1))
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(x)
        return out.reshape(shape)


def rope_frequencies(config: dict) -> torch.Tensor:
    head_dim = config["dim"] // config["n_heads"]
    inv_freq = 1.0 / (config.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if config.get("rope_scaling", "none") == "llama3":
        low, high = config.get("rope_low_freq_factor", 1.0), config.get("rope_high_freq_factor", 4.0)
        original, factor = config.get("rope_original_max_seq_len", 8192), config.get("rope_factor", 8.0)
        blend = ((original / (2 * math.pi / inv_freq) - low) / (high - low)).clamp(0.0, 1.0)
        inv_freq = inv_freq * (blend + (1 - blend) / factor)
    angles = torch.outer(torch.arange(config["max_seq_len"], dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        dim = config["dim"]
        self.n_heads, self.n_kv_heads = config["n_heads"], config["n_kv_heads"]
        self.head_dim = dim // self.n_heads
        qkv = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.wqkv = Projection(config, dim, qkv, bias=config.get("qkv_bias", False))
        self.sub_norm = Norm(dim, config.get("norm_eps", 1e-5)) if config["sub_norm"] else None
        self.wo = Projection(config, dim, dim)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = apply_rope(q.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2), freqs)
        k = apply_rope(k.view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2), freqs)
        v = v.view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_heads != self.n_kv_heads)
        out = out.transpose(1, 2).reshape(batch, seq, q_size)
        return self.wo(self.sub_norm(out) if self.sub_norm is not None else out)


class Block(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        eps = config.get("norm_eps", 1e-5)
        self.attn_norm, self.attn = Norm(config["dim"], eps), Attention(config)
        self.ffn_norm = Norm(config["dim"], eps)
        self.ffn = MixtureOfExperts(config) if config.get("n_experts", 0) else FeedForward(config, config["ffn_dim"])

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        h = x + self.attn(self.attn_norm(x), freqs)
        return h + self.ffn(self.ffn_norm(h))


def unpack_ternary(packed: torch.Tensor, n_out: int) -> torch.Tensor:
    """The export's 2-bit codes (``[K, ceil(N/4)]`` uint8, four outputs a byte, code = value + 1)."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8)
    codes = (packed.unsqueeze(-1) >> shifts) & 3
    return codes.reshape(packed.shape[0], -1)[:, :n_out].t().float() - 1


class TorchDecoder(nn.Module):
    """The zoo decoder of the ``zoo_config`` fields (resolved: ``n_kv_heads`` and ``sub_norm`` set)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config["vocab_size"], config["dim"])
        self.layers = nn.ModuleList(Block(config) for _ in range(config["n_layers"]))
        self.norm = Norm(config["dim"], config.get("norm_eps", 1e-5))
        self.lm_head = nn.Linear(config["dim"], config["vocab_size"], bias=False)
        if config.get("tie_embeddings", True):
            self.lm_head.weight = self.tok_embeddings.weight
        self.register_buffer("freqs", rope_frequencies(config), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(tokens).to(self.norm.weight.dtype)
        freqs = self.freqs[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x, freqs)
        return self.lm_head(self.norm(x))

    @torch.no_grad()
    def load_export(self, state: dict[str, torch.Tensor]) -> None:
        """Loads an export's tensors: each packed ternary weight becomes ``values·α``."""
        state = dict(state)
        weights = dict(self.named_parameters())
        for key in [k for k in state if k.endswith(PACKED)]:
            name = key[: -len(PACKED)]
            packed, alpha = state.pop(key), state.pop(name + SCALE).float()
            shape = weights[name + ".weight"].shape
            if packed.dim() == 3:  # an expert bank: one scale an expert
                values = torch.stack([unpack_ternary(p, shape[1]) for p in packed])
                state[name + ".weight"] = values * alpha.reshape(-1, 1, 1)
            else:
                state[name + ".weight"] = unpack_ternary(packed, shape[0]) * alpha.reshape(())
        if self.config.get("tie_embeddings", True):
            state.pop("lm_head.weight", None)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and self.config.get("tie_embeddings", True))]
        if missing or unexpected:
            raise ValueError(f"the export's tensors do not match its zoo_config (missing {missing[:5]}, unexpected {unexpected[:5]})")
