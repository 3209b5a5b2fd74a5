"""The zoo's release format: a directory of plain files that anyone can read without pickle.

``model.safetensors``  weights (float tensors by name; nothing executable)
``config.yaml``        the resolved :class:`~zoo.models.ModelConfig`
``tokenizer.json``     the tokenizer (bytes or a locally trained BPE)
``metrics.json``       data, tokens seen, steps, hardware, validation loss and bits per byte
``README.md``          a short model card

:func:`load_lightning_checkpoint` reads a checkpoint written by ``zoo fit`` with
``torch.load(weights_only=True)``, so that no arbitrary object is ever unpickled;
:func:`zoo.hub.registry.load_published` a zoo name from the hub. Every loader here takes the same overrides
(:func:`override_config`, :func:`apply_dtype`); :func:`zoo.interop.loader.load_source` picks one
of them for any source.
"""

from __future__ import annotations

import json
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
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# ModelConfig fields that hold no parameter, named in the error for one that does
FREE_FIELDS = "sparsity, k_ratio, block_size, act_quant, weight_quant, kernel, top_k, moe_impl, max_seq_len"


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


def _param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    from zoo.models import Decoder

    return {name: tuple(t.shape) for name, t in Decoder.on_meta(config).state_dict().items()}


def override_config(config: ModelConfig, overrides: dict[str, Any], source: str) -> ModelConfig:
    """``config`` with ``overrides`` (:class:`ModelConfig` fields), refused with one message when
    they would change the parameter names or shapes of the weights ``source`` holds.

    Every form of source (a zoo name, a release folder, a ``.ckpt``, a transformers folder) goes
    through here, so an override means the same wherever the weights come from.
    """
    if not overrides:
        return config
    target = ModelConfig.from_dict({**config.to_dict(), **overrides}, source=f"{source} overrides")
    before, after = _param_shapes(config), _param_shapes(target)
    if before != after:
        changed = sorted(set(before) ^ set(after)) + sorted(k for k in set(before) & set(after) if before[k] != after[k])
        hint = " (set sub_norm=false to keep BitNet's sub-norms out)" if target.has_sub_norm and not config.has_sub_norm else ""
        raise ValueError(
            f"{source}: the override of {', '.join(sorted(overrides))} changes the released parameters ({changed[:5]}); "
            f"only fields that hold none can change, such as {FREE_FIELDS}{hint}"
        )
    return target


def split_dtype(overrides: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(``dtype`` override or None, the :class:`ModelConfig` overrides): ``dtype`` is the one
    override that is not a config field; checked here, before anything is read."""
    overrides = dict(overrides)
    dtype = overrides.pop("dtype", None)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype, overrides


def apply_dtype(model: Decoder, dtype: str | None) -> Decoder:
    """``model`` with its floating-point weights in ``dtype`` (``float32``, ``bfloat16``, ``float16``)."""
    return model if dtype is None else model.to(DTYPES[dtype])


def load_release(directory: str | Path, **overrides: Any) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) from a release directory.

    ``overrides`` change :class:`ModelConfig` fields that hold no parameter (``k_ratio``,
    ``kernel``, ``top_k``, ``moe_impl``...: Q-Sparse's top-K can be changed at inference); one that
    would change the released parameters is refused, naming it (:func:`override_config`).
    ``dtype=`` casts the loaded weights.
    """
    from zoo.tokenizer import load_tokenizer

    dtype, overrides = split_dtype(overrides)
    directory = Path(directory)
    missing = [f for f in ("model.safetensors", "config.yaml", "tokenizer.json") if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: not a moezoo release (missing {', '.join(missing)})")
    config = override_config(read_config(directory / "config.yaml"), overrides, str(directory))
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
    return apply_dtype(model.eval(), dtype), load_tokenizer(directory), metrics


def load_lightning_checkpoint(path: str | Path, **overrides: Any) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) from a ``zoo fit`` checkpoint, without unpickling objects;
    ``overrides`` as in :func:`load_release`."""
    from zoo.tokenizer import ByteTokenizer, load_tokenizer

    dtype, overrides = split_dtype(overrides)
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ValueError(f"{path}: not a readable zoo checkpoint ({type(error).__name__}: {error})") from error
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(hparams.get("arch"), dict):
        raise ValueError(f"{path}: checkpoint has no 'arch' hyper-parameters; was it written by zoo fit?")
    trained = ModelConfig.from_dict(hparams["arch"], source=f"{path}:hyper_parameters.arch")
    model = Decoder(override_config(trained, overrides, str(path)))
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
    return apply_dtype(load_weights(model, state, str(path)).eval(), dtype), tokenizer, metrics
