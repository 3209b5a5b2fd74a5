"""Every zoo model as a Hugging Face folder: ``AutoModelForCausalLM.from_pretrained(out,
trust_remote_code=True)`` and ``AutoTokenizer.from_pretrained(out)`` load it, with the zoo's logits
and a working ``generate()``.

The folder holds ``config.json`` (``model_type: moezoo``, the :class:`~zoo.models.ModelConfig`
under ``zoo_config``, ``auto_map`` to the classes), ``modeling_moezoo.py`` (the classes,
:mod:`zoo.interop.modeling_moezoo`), ``model.safetensors`` (the decoder's tensors under ``model.``;
ternary weights packed at 2 bits with their scale, as in a zoo release),
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

from zoo.text import DEFAULT_SAMPLING

MODELING_FILE = "modeling_moezoo.py"
# generate()'s defaults in every export: the zoo's one sampling default (greedy decoding of the
# tiny byte-level entries falls into loops of spaces), not transformers' greedy; top_k 0 is
# transformers' "no top-k" (its own default is 50)
GENERATION_DEFAULTS = {
    "do_sample": True,
    "temperature": DEFAULT_SAMPLING["temperature"],
    "top_p": DEFAULT_SAMPLING["top_p"],
    "top_k": DEFAULT_SAMPLING["top_k"] or 0,
}
TORCH_TWIN_FILE = "moezoo_torch.py"  # the decoder in plain PyTorch, for where moezoo is not installed


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


def write_tokenizer(
    tokenizer, out: Path, max_length: int, end_of_text_id: int | None = None, prefix_id: int | None = None
) -> dict[str, Any]:
    """``tokenizer.json`` + ``tokenizer_config.json``; returns the special-token ids for the configs.

    The zoo's tokenizers define no special token: documents are separated by "\\n\\n". Tools such
    as lm-eval need a bos/eos id to condition an empty context on, so ``end_of_text_id`` (one id
    past the model's vocabulary) adds ``<|endoftext|>`` as that token; the moezoo model reads it as
    the separator's last token, as the zoo's own lm-eval model does. A token of the vocabulary
    (the newline) cannot serve: transformers would then drop every newline as "special" in decode.
    A plain Llama export cannot read an id past its vocabulary, so it names the separator's last
    token (``prefix_id``) as its bos instead, at that price: lm-eval then runs without arguments.
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
    elif prefix_id is not None:
        symbol = {index: text for text, index in data["model"]["vocab"].items()}[prefix_id]
        settings.update(bos_token=symbol, add_bos_token=False)
        special = {"bos_token_id": prefix_id}
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    return special


OWN_CLASSES_NOTES = (
    "It loads as moezoo's inference form: ternary weights stay packed at 2 bits (on disk too) "
    "and run through moezoo's kernels, and `generate` keeps a KV cache (one compiled decode "
    "step a token). `from_pretrained(..., zoo_inference=False)` keeps the training form for "
    "fine-tuning.",
    "",
    "Limitations: a small research model (the moezoo leaderboard ranks it); no padding mask "
    "(batch prompts of equal length); the modeling code is moezoo's, so `pip install moezoo` "
    "is needed; `save_pretrained` is not supported (write exports with `zoo export-hf`).",
)
PLAIN_NOTES = (
    "A plain transformers checkpoint (transformers' own classes compute the zoo's function, up to float rounding). Its "
    "tokenizer is the zoo's byte tokenizer (id = UTF-8 byte); bos is the newline that separates "
    "documents, which lm-eval conditions empty contexts on (so `decode(..., skip_special_tokens=True)` "
    "drops newlines).",
    "",
    "Limitations: a small research model (the moezoo leaderboard ranks it).",
)


def model_card(name: str, config, metrics: dict[str, Any], activated: float, total: int, *, own_classes: bool = True) -> str:
    """A Hub model card: YAML metadata, what the model is, how to load it, its limits. ``own_classes``:
    the folder runs moezoo's classes (``trust_remote_code``), else transformers' own (plain Llama...)."""
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
        "from transformers import AutoModelForCausalLM, AutoTokenizer" + ("  # and: pip install moezoo" if own_classes else ""),
        'model = AutoModelForCausalLM.from_pretrained("PATH"' + (", trust_remote_code=True)" if own_classes else ")"),
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'ids = tokenizer("ROMEO:", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))",
        "```",
        "",
        *(OWN_CLASSES_NOTES if own_classes else PLAIN_NOTES),
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
    from zoo.models.packing import pack_state_dict

    # every tensor under model.<zoo name>, ternary weights packed at 2 bits with their scale (the
    # class in modeling_moezoo.py reads them itself); a tied head is left out, the embedding is it
    packed = pack_state_dict(model)
    if config.tie_embeddings:
        packed.pop("lm_head.weight", None)
    state = {f"model.{key}": tensor.detach().clone().contiguous() for key, tensor in packed.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    special = write_tokenizer(tokenizer, out, config.max_seq_len, end_of_text_id=config.vocab_size)
    hf_config = {
        "model_type": "moezoo",
        "architectures": ["MoezooForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_moezoo.MoezooConfig", "AutoModelForCausalLM": "modeling_moezoo.MoezooForCausalLM"},
        "zoo_config": config.to_dict(),
        # the tokenizer's size: <|endoftext|> is one id past the model's vocabulary, and the
        # model's logits get a column for it (see MoezooForCausalLM.with_end_of_text)
        "vocab_size": config.vocab_size + (1 if special else 0),
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": "float32",
        "use_cache": True,
        # what the model reads for <|endoftext|>: the last token of the document separator
        "zoo_separator_token_id": tokenizer.encode("\n\n")[-1],
        **special,
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    # the model never emits <|endoftext|> (it has no logit), so generation runs max_new_tokens; no
    # max_length here: transformers warns when a caller's max_new_tokens meets one
    generation = {**GENERATION_DEFAULTS, "use_cache": True, **special}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    for code in (MODELING_FILE, TORCH_TWIN_FILE):  # the classes, and their plain-PyTorch twin
        shutil.copyfile(Path(__file__).with_name(code), out / code)
    stats = account(model)
    (out / "README.md").write_text(model_card(name, config, metrics, stats.activated_params, stats.total_params))
    return out
