"""The zoo decoder: one Llama-style transformer (RMSNorm, RoPE, grouped-query attention, gated
FFN) whose projections and FFN are chosen by :class:`ModelConfig`: Q-Sparse top-K inputs
(arXiv 2407.10969), BitNet b1.58 ternary weights (arXiv 2402.17764), dropless MoE (MegaBlocks,
Gale et al. 2022). Embeddings and the LM head stay full precision and dense in every entry.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.models.attention import Attention, KVCache, rope_frequencies
from zoo.models.config import ModelConfig
from zoo.models.ffn import build_ffn
from zoo.models.linear import ZooLinear
from zoo.models.norm import RMSNorm


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps, config.kernel)
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps, config.kernel)
        self.ffn = build_ffn(config)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        h = x + self.attn(self.attn_norm(x), freqs, cache)
        return h + self.ffn(self.ffn_norm(h))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps, config.kernel)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        # Not a buffer: it is derived from the config, so it stays out of the state dict.
        self._freqs: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.tok_embeddings.weight.is_meta:
            # No storage to fill (accounting builds meta models of every entry); meta normal_()
            # still runs torch's decompositions and cost `zoo list` about 6 s.
            return
        std = self.config.init_std
        # GPT-2's scaled init: each residual branch's output projection shrinks with depth.
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (ZooLinear, nn.Linear)):
                is_output = name.endswith(("attn.wo", "ffn.w_down"))
                nn.init.normal_(module.weight, std=residual_std if is_output else std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        for module in self.modules():
            if hasattr(module, "reset_expert_parameters"):
                module.reset_expert_parameters(std, residual_std)

    def rope(self, device: torch.device) -> torch.Tensor:
        if self._freqs is None or self._freqs.device != device:
            cfg = self.config
            llama3 = None
            if cfg.rope_scaling == "llama3":
                llama3 = (cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_original_max_seq_len)
            self._freqs = rope_frequencies(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device, llama3=llama3)
        return self._freqs

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> list[KVCache]:
        """One empty KV cache per layer, for incremental decoding with :meth:`forward`."""
        param = self.tok_embeddings.weight
        max_len = max_len or self.config.max_seq_len
        return [KVCache.empty(batch, self.config, max_len, param.device, dtype or param.dtype) for _ in self.layers]

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``[B, T]``; with ``caches`` continues after them."""
        start = caches[0].length if caches else 0
        seq = tokens.shape[1]
        if start + seq > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + seq} positions exceeds max_seq_len={self.config.max_seq_len}")
        freqs = self.rope(tokens.device)[start : start + seq]
        x = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, caches[i] if caches else None)
        return self.lm_head(self.norm(x))

    def balance_experts(self) -> None:
        """One step of every MoE layer's bias balancing (``ModelConfig.balance_bias_rate``); the
        training loop calls it once per optimizer step."""
        for module in self.modules():
            if hasattr(module, "update_selection_bias"):
                module.update_selection_bias()

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Sum over layers of the auxiliary losses the last forward left on MoE modules (empty if dense)."""
        totals: dict[str, torch.Tensor] = {}
        for module in self.modules():
            for name, value in getattr(module, "last_aux_losses", {}).items():
                totals[name] = totals[name] + value if name in totals else value
        return totals
