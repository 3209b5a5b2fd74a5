"""transformers model classes for every moezoo entry (``trust_remote_code=True``): a zoo decoder —
BitNet b1.58 ternary weights (arXiv 2402.17764), Q-Sparse top-K activations (arXiv 2407.10969),
MegaBlocks-style dropless MoE (arXiv 2211.15841) — behind ``PreTrainedModel`` and ``GenerationMixin``.

``zoo export-hf`` copies this file next to ``config.json``; transformers imports it from there. The
model is moezoo's own :class:`~zoo.models.Decoder`, so the logits are the zoo's by construction
(this file needs ``pip install moezoo``). Generation recomputes the whole context each step (no
KV cache through transformers): exact, and fast enough for the zoo's small models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder


class MoezooConfig(PretrainedConfig):
    """``zoo_config`` holds the :class:`~zoo.models.ModelConfig` fields (validated when the model is built)."""

    model_type = "moezoo"

    def __init__(self, zoo_config: dict | None = None, **kwargs) -> None:
        self.zoo_config = dict(zoo_config or {})
        # the names transformers' generation utilities (and lm-eval) read
        names = {
            "vocab_size": "vocab_size",
            "max_seq_len": "max_position_embeddings",
            "dim": "hidden_size",
            "n_layers": "num_hidden_layers",
        }
        names |= {"n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads"}
        for field, name in names.items():
            if self.zoo_config.get(field) is not None:
                kwargs.setdefault(name, self.zoo_config[field])
        kwargs.setdefault("tie_word_embeddings", bool(self.zoo_config.get("tie_embeddings", True)))
        super().__init__(**kwargs)


class MoezooForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MoezooConfig
    base_model_prefix = "model"
    _supports_cache_class = False
    # the zoo decoder ties lm_head to the embedding itself when its config says so
    _tied_weights_keys = None

    def __init__(self, config: MoezooConfig) -> None:
        super().__init__(config)
        self.model = Decoder(ModelConfig.from_dict(config.zoo_config, source="config.json zoo_config"))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass  # weights come from the checkpoint; the zoo decoder initialises its own when built

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.tok_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        # A zoo model has no padding mask: batches of unequal prompts must be generated one by one.
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("moezoo models have no padding mask: pass prompts of equal length (or one at a time)")
        # <|endoftext|> (one id past the vocabulary, for tools that need a bos/eos) reads as the
        # last token of the document separator, which the model saw before every document
        separator = getattr(self.config, "zoo_separator_token_id", None)
        if separator is not None:
            input_ids = input_ids.masked_fill(input_ids >= self.model.config.vocab_size, separator)
        logits = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **kwargs) -> dict:
        # the whole context every step (no cache), cut to the model's window
        return {"input_ids": input_ids[:, -self.model.config.max_seq_len :], "attention_mask": None}
