"""Any model source as a transformers folder: the zoo's own classes for ``trust_remote_code``
(BitNet b1.58 ternary weights, arXiv 2402.17764; Q-Sparse top-K inputs, arXiv 2407.10969; MoE,
:mod:`zoo.interop.hf_export`), or plain Llama / Mistral / Qwen2 / Mixtral checkpoints where those
express the model exactly (the key maps of :mod:`zoo.interop.convert`).

It sits above the loader (any source: a zoo name, a path, ``hf:org/name``) and the two writers;
:mod:`zoo.interop.hf` is the import side, which the loader itself needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from zoo.hub.release import DTYPES
from zoo.hub.source import parse_source
from zoo.interop.convert import check_exportable, config_to_hf, state_dict_to_hf
from zoo.interop.hf import SINGLE_FILE
from zoo.interop.hf_export import GENERATION_DEFAULTS, export_zoo_hf, model_card, write_tokenizer
from zoo.interop.loader import load_source
from zoo.models.accounting import account


def owning_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with storage of its own (safetensors refuses views sharing one)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def export_hf(source: str | Path, out_dir: str | Path, model_type: str | None = None, *, dtype: str = "float32") -> Path:
    """Writes a transformers folder for ``source`` (any model source, see :mod:`zoo.interop.loader`).

    ``model_type`` ``moezoo`` (the default for ternary, top-K and MoE models) writes the zoo's own
    classes for ``trust_remote_code`` (:mod:`zoo.interop.hf_export`); ``llama`` / ``mistral`` /
    ``qwen2`` / ``mixtral`` (the defaults for full-precision models they express exactly: Mixtral
    for dropless top-k MoE, Qwen2 with q/k/v biases, else Llama) write a plain checkpoint that
    transformers loads with its own code. Both come
    with the tokenizer in ``tokenizers``' format and a ``generation_config.json``. Returns ``out_dir``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model, tokenizer, metrics = load_source(source)
    config = model.config
    full_precision = config.weight_quant == "none" and config.act_quant == "none" and config.sparsity == "none"
    if model_type is None:  # transformers' own code where it is exact, the zoo's classes elsewhere
        try:
            model_type = ("mixtral" if config.n_experts else "qwen2" if config.qkv_bias else "llama") if full_precision else "moezoo"
            if model_type != "moezoo":
                check_exportable(config, model_type)
        except ValueError:
            model_type = "moezoo"
    if model_type == "moezoo":
        resolved = parse_source(source)
        label = resolved.path.name if resolved.kind == "path" else str(resolved)
        return export_zoo_hf(model, tokenizer, metrics, out_dir, name=label)
    hf_config = config_to_hf(config, model_type)
    hf_config["torch_dtype"] = dtype
    hf_config.update(metrics.get("hf_special_tokens") or {})
    state = state_dict_to_hf(model.state_dict(), config, model_type)
    state = {name: owning_copy(t.to(DTYPES[dtype])) for name, t in state.items()}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / SINGLE_FILE), metadata={"format": "pt"})
    # plain Llama cannot read an id past its vocabulary, so no <|endoftext|> here: the separator's
    # last token is the bos lm-eval conditions on; a release imported from transformers keeps its own
    imported = metrics.get("hf_special_tokens") or {}
    prefix = None if imported else tokenizer.encode("\n\n")[-1]
    special = {**write_tokenizer(tokenizer, out, config.max_seq_len, prefix_id=prefix), **imported}
    hf_config.update(special)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    generation = {**GENERATION_DEFAULTS, **special}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    stats = account(model)
    card = model_card(Path(out_dir).name, config, metrics, stats.activated_params, stats.total_params, own_classes=False)
    (out / "README.md").write_text(card)
    return out


def cmd_export_hf(args: argparse.Namespace) -> int:
    out = export_hf(args.src, args.out, getattr(args, "model_type", None), dtype=getattr(args, "dtype", None) or "float32")
    print(f"Hugging Face checkpoint written to {out}")
    return 0
