"""Every zoo model as a Hugging Face folder: ``AutoModelForCausalLM.from_pretrained(out,
trust_remote_code=True)`` and ``AutoTokenizer.from_pretrained(out)`` load it, with the zoo's logits
and a working ``generate()``.

The folder holds ``config.json`` (``model_type: moezoo``, the :class:`~zoo.models.ModelConfig`
under ``zoo_config``, ``auto_map`` to the classes), ``modeling_moezoo.py`` (the classes,
:mod:`zoo.interop.modeling_moezoo`), ``model.safetensors`` (the decoder's tensors under ``model.``;
ternary weights as the latent values that ternarise back to the released pattern and scale),
the tokenizer in ``tokenizers``' JSON format (the byte tokenizer as a byte-level BPE without
merges: id = byte), ``generation_config.json`` and a model card with Hub metadata.
Dense full-precision entries can also go to plain Llama / Qwen2 (:func:`zoo.interop.export.export_hf`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

MODELING_FILE = "modeling_moezoo.py"


def byte_level_symbols() -> list[str]:
    """GPT-2's byte-level alphabet, indexed by byte: printable bytes stand for themselves, every
    other byte for ``chr(256 + n)``, ``n`` counting those bytes in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def byte_tokenizer_json() -> str:
    """The zoo's byte tokenizer (id = UTF-8 byte) in ``tokenizers``' format: a byte-level BPE whose
    vocabulary is the 256 byte symbols and which merges nothing, so every byte is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in enumerate(byte_level_symbols())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer.to_str()


END_OF_TEXT = "<|endoftext|>"


def write_tokenizer(tokenizer, out: Path, max_length: int, end_of_text_id: int | None = None) -> dict[str, Any]:
    """``tokenizer.json`` + ``tokenizer_config.json``; returns the special-token ids for the configs.

    The zoo's tokenizers define no special token: documents are separated by "\\n\\n". Tools such
    as lm-eval need a bos/eos id to condition an empty context on, so ``end_of_text_id`` (one id
    past the model's vocabulary) adds ``<|endoftext|>`` as that token; the moezoo model reads it as
    the separator's last token, as the zoo's own lm-eval model does. A token of the vocabulary
    (the newline) cannot serve: transformers would then drop every newline as "special" in decode.
    """
    data = json.loads(byte_tokenizer_json() if getattr(tokenizer, "name", None) == "bytes" else tokenizer.to_json())
    settings: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    special: dict[str, Any] = {}
    if end_of_text_id is not None:
        added = {"id": end_of_text_id, "content": END_OF_TEXT, "single_word": False, "lstrip": False, "rstrip": False}
        data.setdefault("added_tokens", []).append({**added, "normalized": False, "special": True})
        settings.update(bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, add_bos_token=False, add_eos_token=False)
        special = {"bos_token_id": end_of_text_id, "eos_token_id": end_of_text_id}
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    return special


def model_card(name: str, config, metrics: dict[str, Any], activated: float, total: int) -> str:
    """A Hub model card: YAML metadata, what the model is, how to load it, its limits."""
    corpus = metrics.get("corpus") or "shakespeare"
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [moezoo, sparse, " + ", ".join(t for t in _tags(config)) + "]",
        f"datasets: [{corpus}]",
        "model-index:",
        f"  - name: {name}",
        "    results:",
        "      - task: {type: text-generation}",
        f"        dataset: {{name: {corpus}, type: {corpus}, split: validation}}",
        f"        metrics: [{{type: bits_per_byte, value: {metrics.get('val_bpb')}}}]",
        "---",
        "",
        f"# {name}",
        "",
        f"A moezoo decoder: {total:,} parameters, {activated:,.0f} activated per token "
        f"({', '.join(_tags(config)) or 'dense'}). Trained on {metrics.get('tokens_seen')} tokens of {corpus}; "
        f"validation bits per byte {metrics.get('val_bpb')}.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer  # and: pip install moezoo",
        'model = AutoModelForCausalLM.from_pretrained("PATH", trust_remote_code=True)',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'ids = tokenizer("ROMEO:", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))",
        "```",
        "",
        "Limitations: a small research model (the moezoo leaderboard ranks it); no padding mask "
        "(batch prompts of equal length); generation recomputes the context each step (no KV "
        "cache through transformers; moezoo's own `zoo generate` has one); the modeling code is "
        "moezoo's, so `pip install moezoo` is needed.",
        "",
    ]
    return "\n".join(lines)


def _tags(config) -> list[str]:
    tags = []
    if config.weight_quant == "ternary":
        tags.append("bitnet-b1.58")
    if config.sparsity != "none":
        tags.append(f"q-sparse-{config.sparsity}")
    if config.n_experts:
        tags.append("mixture-of-experts")
    return tags


def export_zoo_hf(model, tokenizer, metrics: dict[str, Any], out_dir: str | Path, *, name: str) -> Path:
    """Writes the transformers folder of a loaded zoo model (see :func:`zoo.interop.export.export_hf`)."""
    from zoo.models.accounting import account

    config = model.config.resolved()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # every tensor under model.<zoo name>; a tied head is saved as its own copy (safetensors
    # refuses shared storage) and loads back into the one tied parameter
    state = {f"model.{key}": tensor.detach().clone().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    special = write_tokenizer(tokenizer, out, config.max_seq_len, end_of_text_id=config.vocab_size)
    hf_config = {
        "model_type": "moezoo",
        "architectures": ["MoezooForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_moezoo.MoezooConfig", "AutoModelForCausalLM": "modeling_moezoo.MoezooForCausalLM"},
        "zoo_config": config.to_dict(),
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": "float32",
        "use_cache": False,
        # what the model reads for <|endoftext|>: the last token of the document separator
        "zoo_separator_token_id": tokenizer.encode("\n\n")[-1],
        **special,
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    # no eos: the model never emits <|endoftext|> (it has no logit), so generation runs its length
    generation = {"do_sample": False, "max_length": config.max_seq_len, "use_cache": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name(MODELING_FILE), out / MODELING_FILE)
    stats = account(model)
    (out / "README.md").write_text(model_card(name, config, metrics, stats.activated_params, stats.total_params))
    return out
