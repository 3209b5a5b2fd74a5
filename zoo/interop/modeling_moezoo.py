"""transformers model classes for every moezoo entry (``trust_remote_code=True``): a zoo decoder —
BitNet b1.58 ternary weights (arXiv 2402.17764), Q-Sparse top-K activations (arXiv 2407.10969),
MegaBlocks-style dropless MoE (arXiv 2211.15841) — behind ``PreTrainedModel`` and ``GenerationMixin``.

``zoo export-hf`` copies this file next to ``config.json``; transformers imports it from there, and
it runs moezoo's own code (``pip install moezoo``); without moezoo it runs the plain-PyTorch twin
``moezoo_torch.py`` copied beside it (the zoo's function, exactly, without the engine: no KV cache,
each step recomputes the window). Loading reads the folder's ``model.safetensors``
itself: ternary weights are stored packed at 2 bits with one scale each, as in a zoo release, which
transformers' loader cannot map onto parameters. The loaded model is moezoo's inference form (the
packed kernels, the compiled decode step) unless ``zoo_inference=False`` is passed, which keeps the
training form (latent weights, gradients) for fine-tuning.

Generation keeps moezoo's own KV cache inside the cache object transformers hands the model (or one
of its own when it hands none), so each new token runs one decode step rather than the whole context.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

try:  # moezoo's own code and engine; transformers' import check skips what a try block imports
    from zoo.hub.release import load_weights
    from zoo.models.config import ModelConfig
    from zoo.models.decoder import Decoder
    from zoo.models.generate import next_logits, prefill
    from zoo.models.inference import to_inference
    from zoo.models.packing import unpack_state_dict

    HAVE_MOEZOO = True
except ImportError:  # not installed: the plain-PyTorch twin beside this file, exact but slow
    HAVE_MOEZOO = False

if __package__:  # imported by transformers from the export folder, or as zoo.interop.modeling_moezoo
    from .moezoo_torch import TorchDecoder

WEIGHTS = "model.safetensors"
# transformers 5 names the cache "cache" in model outputs and inputs, 4.x "past_key_values"
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


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


class MoezooState:
    """moezoo's per-layer KV caches and the ids they hold, carried by transformers' cache object."""

    def __init__(self, caches, ids: torch.Tensor) -> None:
        self.caches, self.ids = caches, ids


class MoezooCache:
    """The cache object of a generation that transformers did not give one (transformers 4.x)."""

    moezoo_state: MoezooState | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.moezoo_state is None else int(self.moezoo_state.ids.shape[1])


def local_folder(source: str | Path, **hub_options) -> Path:
    """``source`` as a local folder: itself, or the Hugging Face repository's files in the hub cache."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    keys = ("revision", "cache_dir", "token", "local_files_only", "force_download")
    options = {key: hub_options[key] for key in keys if hub_options.get(key) is not None}
    return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"], **options))


class MoezooForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MoezooConfig
    base_model_prefix = "model"
    # the zoo decoder ties lm_head to the embedding itself when its config says so
    _tied_weights_keys = None

    def __init__(self, config: MoezooConfig) -> None:
        super().__init__(config)
        if HAVE_MOEZOO:
            self.model = Decoder(ModelConfig.from_dict(config.zoo_config, source="config.json zoo_config"))
        else:
            self.model = TorchDecoder(config.zoo_config)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass  # weights come from the checkpoint; the zoo decoder initialises its own when built

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, zoo_inference: bool = True, **kwargs):
        """The model of a ``zoo export-hf`` folder or repository; ``dtype``/``torch_dtype`` and
        ``device_map`` are not applied (the inference form keeps its own storage types)."""
        folder = local_folder(pretrained_model_name_or_path, **kwargs)
        if not isinstance(config, MoezooConfig):
            config = MoezooConfig.from_pretrained(folder)
        model = cls(config)
        if (folder / "generation_config.json").is_file():  # what transformers' own loader would read
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(folder)
        from safetensors.torch import load_file

        state = {key.removeprefix("model."): tensor for key, tensor in load_file(str(folder / WEIGHTS)).items()}
        if not HAVE_MOEZOO:
            model.model.load_export(state)
            return model.eval()
        load_weights(model.model, unpack_state_dict(state, model.model), str(folder / WEIGHTS))
        if zoo_inference:
            to_inference(model.model)
        return model.eval()

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.tok_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        # A zoo model has no padding mask: batches of unequal prompts must be generated one by one.
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("moezoo models have no padding mask: pass prompts of equal length (or one at a time)")
        # <|endoftext|> (one id past the vocabulary, for tools that need a bos/eos) reads as the
        # last token of the document separator, which the model saw before every document
        separator = getattr(self.config, "zoo_separator_token_id", None)
        if separator is not None:
            input_ids = input_ids.masked_fill(input_ids >= self.config.zoo_config["vocab_size"], separator)
        carrier = kwargs.get(CACHE_FIELD)
        if not HAVE_MOEZOO and labels is None and (use_cache or carrier is not None):
            input_ids = input_ids[:, -self.config.max_position_embeddings :]  # the fallback recomputes the window
        elif labels is None and (use_cache or carrier is not None) and not torch.is_grad_enabled():
            carrier = carrier if carrier is not None else MoezooCache()
            logits = self.with_end_of_text(self.decode(input_ids, carrier)[:, None])
            return CausalLMOutputWithPast(logits=logits, **{CACHE_FIELD: carrier})
        logits = self.with_end_of_text(self.model(input_ids))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def with_end_of_text(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits over the tokenizer's ids: <|endoftext|>, past the model's vocabulary, gets the
        lowest logit there is (the model never predicts it), so the widths agree with config.vocab_size."""
        missing = self.config.vocab_size - logits.shape[-1]
        if missing <= 0:
            return logits
        return torch.cat([logits, logits.new_full((*logits.shape[:-1], missing), torch.finfo(logits.dtype).min)], dim=-1)

    def decode(self, input_ids: torch.Tensor, carrier) -> torch.Tensor:
        """``[B, vocab]`` logits after ``input_ids``, reusing the KV state ``carrier`` holds when the
        ids continue the ones it has seen (one decode step a new token), else prefilling afresh."""
        state: MoezooState | None = getattr(carrier, "moezoo_state", None)
        window = self.model.config.max_seq_len
        seen = 0 if state is None else state.ids.shape[1]
        continues = state is not None and seen < input_ids.shape[1] and torch.equal(state.ids, input_ids[:, :seen])
        if continues and state.caches[0].length + input_ids.shape[1] - seen <= window:
            for position in range(seen, input_ids.shape[1]):
                logits = next_logits(self.model, input_ids[:, position], state.caches)
        else:  # a new prompt, or the window is full: the most recent half window (as zoo.generate)
            context = input_ids[:, -window:] if not continues else input_ids[:, -(window // 2) :]
            state = MoezooState(self.model.new_cache(input_ids.shape[0]), input_ids)
            logits = prefill(self.model, context, state.caches)
        state.ids = input_ids
        carrier.moezoo_state = state
        return logits

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **kwargs) -> dict:
        # the whole sequence every step: decode() feeds the cache only the ids it has not seen
        return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True, CACHE_FIELD: kwargs.get(CACHE_FIELD)}
