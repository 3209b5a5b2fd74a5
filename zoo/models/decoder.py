"""The zoo decoder: one Llama-style transformer (RMSNorm, RoPE, grouped-query attention, gated
FFN) whose projections and FFN are chosen by :class:`ModelConfig`: Q-Sparse top-K inputs
(arXiv 2407.10969), BitNet b1.58 ternary weights (arXiv 2402.17764), dropless MoE (MegaBlocks,
Gale et al. 2022). Embeddings and the LM head stay full precision and dense in every entry.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.attention import Attention, KVCache, rope_frequencies
from zoo.models.config import ModelConfig
from zoo.models.ffn import GatedFeedForward
from zoo.models.initialization import init_weights
from zoo.models.moe import MoEFeedForward
from zoo.models.norm import RMSNorm
from zoo.models.protocols import ExpertRouting


def build_ffn(config: ModelConfig) -> nn.Module:
    """The FFN of one block: dense, or the dropless mixture of experts when ``n_experts > 0``."""
    return MoEFeedForward(config) if config.is_moe else GatedFeedForward(config)


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
    # The tokenizer a loader attached (zoo.interop.loader), read by the text layer (zoo.text);
    # an object beside the weights, not state: None for a bare decoder, which then reads bytes.
    tokenizer = None

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
        init_weights(self, config)

    @classmethod
    def on_meta(cls, config: ModelConfig) -> Decoder:
        """A decoder with no storage, for accounting full-size configs (a 7B in milliseconds)."""
        with torch.device("meta"):
            return cls(config)

    def rope(self, device: torch.device) -> torch.Tensor:
        if self._freqs is None or self._freqs.device != device:
            cfg = self.config
            llama3 = None
            if cfg.rope_scaling == "llama3":
                llama3 = (cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_original_max_seq_len)
            self._freqs = rope_frequencies(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device, llama3=llama3)
        return self._freqs

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> list[KVCache]:
        """One empty KV cache per layer, for incremental decoding with :meth:`forward`, in the dtype
        the blocks compute in (the norms', which a bf16 embedding of the inference form does not change)."""
        param = self.norm.weight
        max_len = max_len or self.config.max_seq_len
        return [KVCache.empty(batch, self.config, max_len, param.device, dtype or param.dtype) for _ in self.layers]

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``[B, T]``; with ``caches`` continues after them."""
        start = caches[0].length if caches else 0
        seq = tokens.shape[1]
        if start + seq > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + seq} positions exceeds max_seq_len={self.config.max_seq_len}")
        freqs = self.rope(tokens.device)[start : start + seq]
        # the inference form may hold the embedding / LM head in bf16 (half the bytes of the largest
        # tensors) while the blocks run in the norms' fp32: cast at both ends (no-ops otherwise)
        x = self.tok_embeddings(tokens).to(self.norm.weight.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, caches[i] if caches else None)
        h, head = self.norm(x), self.lm_head.weight  # an int8 head (zoo.models.inference.int8_table) takes fp32 inputs
        return self.lm_head(h.to(head.dtype) if head.is_floating_point() else h)

    def balance_experts(self) -> None:
        """One step of every MoE layer's bias balancing (``ModelConfig.balance_bias_rate``); the
        training loop calls it once per optimizer step."""
        for module in self.modules():
            if isinstance(module, ExpertRouting):
                module.update_selection_bias()

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Sum over layers of the auxiliary losses the last forward left on MoE modules (empty if dense)."""
        totals: dict[str, torch.Tensor] = {}
        for module in self.modules():
            if isinstance(module, ExpertRouting):
                for name, value in module.last_aux_losses.items():
                    totals[name] = totals[name] + value if name in totals else value
        return totals
