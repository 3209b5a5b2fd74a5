"""The zoo's release format: a directory of plain files that anyone can read without pickle.

``model.safetensors``  weights (float tensors by name; nothing executable)
``config.yaml``        the resolved :class:`~zoo.models.ModelConfig`
``tokenizer.json``     the tokenizer (bytes or a locally trained BPE)
``metrics.json``       data, tokens seen, steps, hardware, validation loss and bits per byte
``README.md``          a short model card

:func:`load_model_source` also accepts a Lightning checkpoint written by ``zoo fit``, read with
``torch.load(weights_only=True)`` so that no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.models.packing import pack_state_dict, unpack_state_dict

RELEASE_FILES = ("model.safetensors", "config.yaml", "tokenizer.json", "metrics.json", "README.md")


def _state_for_saving(model: Decoder, pack: bool, bf16: bool) -> dict[str, torch.Tensor]:
    state = pack_state_dict(model) if pack else model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # safetensors refuses shared storage; the tie is in the config
    compact = {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous().cpu()
        if bf16 and tensor.dtype == torch.float32 and tensor.dim() >= 2:
            # full-precision matrices (embeddings, projections, experts) travel as bf16, half the
            # bytes; vectors (norms, biases, ternary scales) are tiny and stay exact
            tensor = tensor.to(torch.bfloat16)
        compact[name] = tensor
    return compact


def model_card(name: str, config: ModelConfig, metrics: dict[str, Any]) -> str:
    lines = [f"# {name}", "", "A moezoo checkpoint (decoder-only LM).", "", "| choice | value |", "|---|---|"]
    resolved = config.resolved().to_dict()
    for key in (
        "dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "ffn_dim",
        "ffn_act",
        "weight_quant",
        "act_quant",
        "sub_norm",
        "sparsity",
        "k_ratio",
        "n_experts",
        "top_k",
    ):
        lines.append(f"| {key} | {resolved[key]} |")
    lines += ["", "## Training", "", "```json", json.dumps(metrics, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def save_release(
    model: Decoder,
    tokenizer,
    out_dir: str | Path,
    metrics: dict[str, Any],
    name: str = "moezoo model",
    *,
    pack: bool = True,
    bf16: bool = False,
) -> Path:
    """Writes the five release files into ``out_dir`` (created) and returns it.

    ``pack`` stores ternary weights as 2-bit patterns plus scales (see :mod:`zoo.models.packing`);
    ``pack=False`` keeps their full-precision latent values, e.g. to continue training exactly.
    ``bf16`` stores full-precision matrices as bf16 (half the bytes; loaded back into the model's
    dtype), as the published checkpoints are.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors writes the metadata map in a random order, and a second key would
    # make the same weights hash differently on every export.
    save_file(_state_for_saving(model, pack, bf16), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.yaml").write_text(yaml.safe_dump(model.config.resolved().to_dict(), sort_keys=False))
    tokenizer.save(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(model_card(name, model.config, metrics))
    return out


def read_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the model config ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of ModelConfig fields")
    return ModelConfig.from_dict(values, source=str(path))


def load_weights(model: Decoder, state: dict[str, torch.Tensor], source: str) -> Decoder:
    """Loads ``state`` strictly, with an error naming ``source`` and the mismatching keys."""
    if model.config.tie_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    expected = {k for k in model.state_dict() if not (model.config.tie_embeddings and k == "lm_head.weight")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the model config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for key, tensor in state.items():
        want = model.state_dict()[key].shape
        if tensor.shape != want:
            raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, the config expects {tuple(want)}")
    model.load_state_dict(state, strict=False)
    return model


def load_release(directory: str | Path, **overrides: Any) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) from a release directory.

    ``overrides`` change :class:`ModelConfig` fields that hold no parameter (``k_ratio``,
    ``kernel``, ``top_k``, ``moe_impl``...: Q-Sparse's top-K can be changed at inference); one that
    would change the released parameters is refused, naming it.
    """
    from zoo.tokenizer import load_tokenizer

    directory = Path(directory)
    missing = [f for f in ("model.safetensors", "config.yaml", "tokenizer.json") if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: not a moezoo release (missing {', '.join(missing)})")
    released = read_config(directory / "config.yaml")
    config = ModelConfig.from_dict({**released.to_dict(), **overrides}, source="overrides") if overrides else released
    model = Decoder(config)
    weights = directory / "model.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights}: not a readable safetensors file ({error})") from error
    try:
        load_weights(model, unpack_state_dict(state, model), str(weights))
    except ValueError as error:
        if not overrides:
            raise
        changed = ", ".join(sorted(overrides))
        raise ValueError(
            f"{directory}: the override of {changed} changes the released parameters; only fields that hold none can change"
        ) from error
    metrics_path = directory / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return model.eval(), load_tokenizer(directory), metrics


def load_release_model(directory: str | Path, **overrides: Any) -> Decoder:
    return load_release(directory, **overrides)[0]


def load_lightning_checkpoint(path: str | Path) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) from a ``zoo fit`` checkpoint, without unpickling objects."""
    from zoo.tokenizer import ByteTokenizer, load_tokenizer

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ValueError(f"{path}: not a readable zoo checkpoint ({type(error).__name__}: {error})") from error
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(hparams.get("arch"), dict):
        raise ValueError(f"{path}: checkpoint has no 'arch' hyper-parameters; was it written by zoo fit?")
    model = Decoder(ModelConfig.from_dict(hparams["arch"], source=f"{path}:hyper_parameters.arch"))
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    tokenizer = ByteTokenizer()
    if checkpoint.get("zoo_tokenizer_json"):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "tokenizer.json").write_text(checkpoint["zoo_tokenizer_json"])
            tokenizer = load_tokenizer(tmp)
    # zoo_metrics: the provenance zoo fit stores with each checkpoint (absent in older ones)
    metrics = checkpoint.get("zoo_metrics") or {
        "steps": checkpoint.get("global_step"),
        "hparams": {k: v for k, v in hparams.items() if k != "arch"},
    }
    return load_weights(model, state, str(path)).eval(), tokenizer, metrics


def looks_like_a_path(source: str) -> bool:
    """A source with a folder separator or a file suffix is a path, never a zoo model name."""
    return (
        "/" in source or os.sep in source or source.endswith((".ckpt", ".safetensors", ".yaml", ".json")) or source.startswith(("~", "."))
    )


def load_model_source(source: str | Path, *, hub: str | None = None, inference: bool = False):
    """(model, tokenizer, metrics) from a release directory, a ``.ckpt`` file, or a zoo name (downloaded).

    ``inference=True`` converts the model into its inference form (packed ternary weights run by
    the packed kernels, see :mod:`zoo.models.inference`), which generation and evaluation use.
    """
    model, tokenizer, metrics = _load_model_source(source, hub=hub)
    if inference:
        from zoo.models.inference import to_inference

        model = to_inference(model)
    return model, tokenizer, metrics


def _load_model_source(source: str | Path, *, hub: str | None = None):
    path = Path(source)
    if path.is_dir():
        return load_release(path)
    if path.is_file():
        return load_lightning_checkpoint(path)
    if looks_like_a_path(str(source)):
        raise FileNotFoundError(f"{source}: no such file or directory")
    from zoo.hub import UnknownCheckpointError, download

    try:
        return load_release(download(str(source), hub=hub))
    except UnknownCheckpointError as error:
        raise FileNotFoundError(f"{source}: neither a release directory, a checkpoint file, nor a published zoo model ({error})") from None
