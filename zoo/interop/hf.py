"""Import Hugging Face Llama, Mistral and Qwen2 checkpoints as moezoo releases, and export back;
read transformers' BitNet b1.58 checkpoints into the inference form (:mod:`zoo.interop.bitnet`).

:func:`read_hf_folder` reads a directory as ``huggingface_hub.snapshot_download`` leaves it
(``config.json`` plus ``model.safetensors`` or a sharded ``model.safetensors.index.json``) and
maps it through :mod:`zoo.interop.convert` into a zoo model, for the loader
(:mod:`zoo.interop.loader`) and for ``import_hf``, which writes it as a release. Keyword
overrides change how the same weights run, e.g. ``sparsity="topk", k_ratio=0.6`` to
continue-train a dense model with Q-Sparse top-K activations (arXiv 2407.10969 §2.3); an
override that would change the parameters themselves is refused.

``export_hf`` writes a folder ``transformers.AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load: plain Llama / Qwen2 for dense models, the zoo's own classes
(``trust_remote_code``, :mod:`zoo.interop.hf_export`) for every other entry.

Only safetensors are read: a ``pytorch_model.bin`` is a pickle, and unpickling runs code.
Nothing here imports ``transformers``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from zoo.hub.release import DTYPES, apply_dtype, load_weights, override_config, save_release, split_dtype
from zoo.hub.source import Source, SourceError, parse_source
from zoo.interop.bitnet import bitnet_model, config_from_bitnet
from zoo.interop.convert import config_from_hf, state_dict_from_hf
from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.models.packing import unpack_state_dict

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")
SPECIAL_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


# Reading a Hugging Face directory ----------------------------------------------------------------
def read_hf_config(src_dir: str | Path) -> dict[str, Any]:
    path = Path(src_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{src_dir}: no config.json; expected a Hugging Face model directory")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def _read_safetensors(path: Path, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        keys = f.keys() if names is None else names
        missing = sorted(set(keys) - set(f.keys()))
        if missing:
            raise ValueError(f"{path}: the index lists tensors this shard lacks: {missing[:5]}")
        return {name: f.get_tensor(name) for name in keys}


def hf_weight_files(src_dir: str | Path) -> list[tuple[Path, set[str] | None]]:
    """The safetensors files of a checkpoint, each with the tensor names to take (None: all).

    Raises before anything is read: ``FileNotFoundError`` when there are none (or a shard is
    missing), ``ValueError`` when the directory holds only pickles.
    """
    src = Path(src_dir)
    if (src / SINGLE_FILE).is_file():
        return [(src / SINGLE_FILE, None)]
    if (src / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((src / INDEX_FILE).read_text())["weight_map"]
            by_shard: dict[str, set[str]] = {}
            for name, shard in weight_map.items():
                by_shard.setdefault(shard, set()).add(name)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{src / INDEX_FILE}: not a safetensors index with a 'weight_map' ({error!r})") from None
        root = src.resolve()
        escaping = sorted(shard for shard in by_shard if not isinstance(shard, str) or not (src / shard).resolve().is_relative_to(root))
        if escaping:
            raise ValueError(f"{src / INDEX_FILE}: shard names must stay inside the model folder, got {escaping[:3]}")
        missing = sorted(shard for shard in by_shard if not (src / shard).is_file())
        if missing:
            raise FileNotFoundError(f"{src}: shard(s) {', '.join(missing)} named by {INDEX_FILE} are missing")
        return [(src / shard, names) for shard, names in sorted(by_shard.items())]
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in src.glob(pattern))
    if pickles:
        raise ValueError(
            f"{src}: holds only PyTorch pickle weights ({', '.join(pickles[:3])}); moezoo reads safetensors only, "
            "because loading a pickle can run arbitrary code. Convert it where you trust the file, e.g. "
            "transformers' from_pretrained(...).save_pretrained(dir, safe_serialization=True)"
        )
    raise FileNotFoundError(f"{src}: no {SINGLE_FILE} or {INDEX_FILE}")


def read_hf_weights(src_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards a ``model.safetensors.index.json`` names."""
    state: dict[str, torch.Tensor] = {}
    for path, names in hf_weight_files(src_dir):
        state.update(_read_safetensors(path, names))
    return state


def is_byte_tokenizer(file: Path) -> bool:
    """Whether ``file`` is the zoo's byte tokenizer as ``zoo export-hf`` writes it (a byte-level BPE
    over the 256 byte symbols with no merges, perhaps plus ``<|endoftext|>``): read back as bytes,
    so an exported model comes back with the tokenizer it was trained with."""
    from zoo.interop.hf_export import byte_level_symbols

    try:
        model = json.loads(file.read_text(encoding="utf-8")).get("model") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    byte_vocab = {symbol: byte for byte, symbol in enumerate(byte_level_symbols())}
    return model.get("type") == "BPE" and not model.get("merges") and model.get("vocab") == byte_vocab


def _import_tokenizer(src: Path, vocab_size: int):
    """The checkpoint's BPE ``tokenizer.json`` if :func:`zoo.tokenizer.load_tokenizer` reads it, else bytes."""
    from zoo.tokenizer import TOKENIZER_FILE, ByteTokenizer, load_tokenizer

    file = src / TOKENIZER_FILE
    if file.is_file() and is_byte_tokenizer(file):
        return ByteTokenizer()
    if file.is_file():
        try:
            tokenizer = load_tokenizer(file)
        except ValueError as error:
            reason = f"its {TOKENIZER_FILE} is not a BPE moezoo reads ({error})"
        else:
            if tokenizer.vocab_size > vocab_size:
                raise ValueError(f"{file}: {tokenizer.vocab_size} tokens, more than the model's vocab_size={vocab_size}")
            return tokenizer
    else:
        reason = f"it has no {TOKENIZER_FILE}"
    if vocab_size < ByteTokenizer.vocab_size:
        raise ValueError(
            f"{src}: {reason}, and vocab_size={vocab_size} is too small for the byte tokenizer "
            f"({ByteTokenizer.vocab_size} ids); add a BPE {TOKENIZER_FILE}"
        )
    # Byte ids are only meaningful for a model trained on bytes, so say loudly that this is a fallback.
    warnings.warn(f"{src}: {reason}; the release gets the byte tokenizer instead", stacklevel=3)
    return ByteTokenizer()


HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]
HF_FORMS = "a Hugging Face model folder (config.json + safetensors) or hf:org/name[@revision]"


def snapshot(source: Source, allow_patterns: list[str]) -> Path:
    """The files of a ``hf`` source that match ``allow_patterns``, through huggingface_hub's
    ``snapshot_download`` (its cache; offline with ``HF_HUB_OFFLINE``): the folder they are in."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source.repo, revision=source.revision, allow_patterns=allow_patterns))
    except Exception as error:  # huggingface_hub raises many types (offline, 404, gated, network)
        cause = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        found = "" if source.explicit else "no such local path, and "
        raise SourceError(source.text, f"{found}the Hugging Face repository {source} cannot be fetched ({cause})") from None


def resolve_hf_source(src: str | Path) -> Path:
    """A local model folder as it is, or a Hub repository (``hf:org/name[@revision]``, or a bare
    ``org/name[@revision]`` that is no local path, see :mod:`zoo.hub.source`) fetched through
    huggingface_hub: its config, safetensors and tokenizer only (never a pickle)."""
    source = parse_source(src)
    if source.kind == "hf":
        return snapshot(source, HUB_FILES)
    if source.kind == "path" and source.path.is_dir():
        return source.path
    if source.kind == "name":
        given = "a zoo name, which has no Hugging Face files to import"
    else:
        given = "a file, not a folder" if source.path.exists() else "no such file or directory"
    raise SourceError(src, given, HF_FORMS)


def _import_metrics(src: Path, hf_config: dict[str, Any], tokenizer, overrides: dict[str, Any]) -> dict[str, Any]:
    """What a model read from a transformers folder records of where it came from."""
    return {
        "source": "huggingface",
        "hf_model_type": hf_config["model_type"],
        "hf_source": str(src.resolve()),
        "hf_special_tokens": {k: hf_config[k] for k in SPECIAL_TOKEN_FIELDS if hf_config.get(k) is not None},
        "tokenizer": tokenizer.name,
        "overrides": dict(overrides),
        "steps": 0,
    }


def read_hf_folder(src: str | Path, **overrides: Any) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) of the Hugging Face checkpoint in the folder ``src``: Llama,
    Mistral, Qwen2 or Mixtral through :mod:`zoo.interop.convert`, or a folder ``zoo export-hf``
    wrote for ``trust_remote_code`` (``model_type`` ``moezoo``). ``overrides`` as for any source
    (:func:`zoo.hub.release.override_config`: only fields that hold no parameter; ``dtype``)."""
    src = Path(src)
    dtype, overrides = split_dtype(overrides)
    hf_config = read_hf_config(src)
    if hf_config.get("model_type") == "bitnet":
        return _read_bitnet_folder(src, hf_config, dtype, overrides)
    own_classes = hf_config.get("model_type") == "moezoo"  # the zoo's config and keys, under model.
    if own_classes:
        config = ModelConfig.from_dict(hf_config.get("zoo_config") or {}, source=f"{src / 'config.json'}: zoo_config")
    else:
        config = config_from_hf(hf_config)
    target = override_config(config, overrides, str(src))
    hf_weight_files(src)  # refuse pickles and missing shards before anything else is read
    tokenizer = _import_tokenizer(src, config.vocab_size)
    hf_state = read_hf_weights(src)
    model = Decoder(target)
    if own_classes:  # the zoo's keys under model., ternary weights packed as in a release
        state = unpack_state_dict({k.removeprefix("model."): v for k, v in hf_state.items()}, model)
    else:
        state = state_dict_from_hf(hf_state, config)
    del hf_state
    model = load_weights(model, state, str(src))
    return apply_dtype(model.eval(), dtype), tokenizer, _import_metrics(src, hf_config, tokenizer, overrides)


def _read_bitnet_folder(src: Path, hf_config: dict[str, Any], dtype: str | None, overrides: dict[str, Any]):
    """A transformers BitNet checkpoint, straight into the zoo's inference form
    (:mod:`zoo.interop.bitnet`); ``dtype`` casts the embedding and LM head only, the blocks stay
    packed ternary with fp32 norms."""
    if overrides:
        raise ValueError(f"{src}: a BitNet checkpoint takes no config overrides yet, got {', '.join(sorted(overrides))}")
    config = config_from_bitnet(hf_config)
    hf_weight_files(src)  # refuse pickles and missing shards before anything else is read
    tokenizer = _import_tokenizer(src, config.vocab_size)
    model = bitnet_model(hf_config, read_hf_weights(src), DTYPES[dtype] if dtype else None)
    return model, tokenizer, _import_metrics(src, hf_config, tokenizer, {})


def import_hf(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    dtype: str | None = None,
    **arch_overrides: Any,
) -> Path:
    """Writes a moezoo release of the Hugging Face checkpoint in ``src_dir`` (a folder or a Hub
    repository, see :func:`resolve_hf_source`) to ``out_dir``.

    ``arch_overrides`` are :class:`ModelConfig` fields applied on top of the imported config;
    ``dtype`` (``float32`` by default, ``bfloat16``, ``float16``) is the dtype of the stored
    weights. Returns ``out_dir``.
    """
    origin = str(src_dir)
    src = resolve_hf_source(src_dir)
    if read_hf_config(src).get("model_type") == "bitnet":
        raise ValueError(
            f"{origin}: a BitNet checkpoint loads straight into the inference form (zoo generate / zoo.from_pretrained {origin}); "
            "its per-segment scales have no zoo release format yet"
        )
    if Path(out_dir).resolve() == src.resolve():
        raise ValueError(f"{out_dir}: the release would overwrite the Hugging Face files it is read from; pick another out_dir")
    model, tokenizer, metrics = read_hf_folder(src, dtype=dtype, **arch_overrides)
    local = Path(origin).is_dir()
    if not local:
        metrics["hf_source"] = origin
    label = src.resolve().name if local else origin
    return save_release(model, tokenizer, out_dir, metrics, name=name or f"{label} ({metrics['hf_model_type']})")


# Writing a Hugging Face directory ----------------------------------------------------------------
# Command-line glue -------------------------------------------------------------------------------
def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["sparsity=topk", "k_ratio=0.6"]`` → ``{"sparsity": "topk", "k_ratio": 0.6}`` (values read as YAML scalars)."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like key=value, e.g. sparsity=topk")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


def cmd_import_hf(args: argparse.Namespace) -> int:
    out = import_hf(
        args.src,
        args.out,
        name=getattr(args, "name", None),
        dtype=getattr(args, "dtype", None),
        **parse_overrides(getattr(args, "overrides", None)),
    )
    print(f"release written to {out}")
    return 0
