"""Import Hugging Face Llama, Mistral and Qwen2 checkpoints as moezoo releases, and export back.

``import_hf`` reads a directory as ``huggingface_hub.snapshot_download`` leaves it
(``config.json`` plus ``model.safetensors`` or a sharded ``model.safetensors.index.json``),
maps it through :mod:`zoo.interop.convert`, and writes a release (:mod:`zoo.hub.release`). Keyword
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
from safetensors.torch import save_file

from zoo.interop.convert import check_exportable, config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from zoo.models.config import ModelConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
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


def _import_tokenizer(src: Path, vocab_size: int):
    """The checkpoint's BPE ``tokenizer.json`` if :func:`zoo.tokenizer.load_tokenizer` reads it, else bytes."""
    from zoo.tokenizer import TOKENIZER_FILE, ByteTokenizer, load_tokenizer

    file = src / TOKENIZER_FILE
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


def _param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    from zoo.models.accounting import meta_model

    return {name: tuple(t.shape) for name, t in meta_model(config).state_dict().items()}


def apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """``config`` with ``overrides``, refused when they would change the parameter names or shapes."""
    if not overrides:
        return config
    target = config.replace(**overrides)
    before, after = _param_shapes(config), _param_shapes(target)
    if before != after:
        changed = sorted(set(before) ^ set(after)) + sorted(k for k in set(before) & set(after) if before[k] != after[k])
        hint = " (set sub_norm=false to keep BitNet's sub-norms out)" if target.has_sub_norm and not config.has_sub_norm else ""
        raise ValueError(
            f"overrides {overrides} change the imported parameters ({changed[:5]}); only overrides that reuse the "
            f"same weights are allowed, such as sparsity, k_ratio, block_size, act_quant, weight_quant, kernel, max_seq_len{hint}"
        )
    return target


HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]


def resolve_hf_source(src: str | Path) -> Path:
    """A local model folder as it is, or a Hub repository (``org/name``, ``org/name@revision`` or
    ``hf://org/name@revision``) fetched through huggingface_hub: its config, safetensors and
    tokenizer only (never a pickle), into huggingface_hub's cache (offline with ``HF_HUB_OFFLINE``)."""
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    from zoo.hub.hf_source import parse_repo_id

    repo = parse_repo_id(str(src))
    if repo is None:
        raise FileNotFoundError(f"{src}: neither a model folder nor a Hugging Face repository id (org/name[@revision])")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo[0], revision=repo[1], allow_patterns=HUB_FILES))
    except Exception as error:  # huggingface_hub raises many types (offline, 404, gated, network)
        raise FileNotFoundError(f"{src}: cannot fetch the repository from the Hugging Face Hub ({type(error).__name__}: {error})") from None


def import_hf(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    dtype: str | None = None,
    **arch_overrides: Any,
) -> Path:
    """Writes a moezoo release of the Hugging Face checkpoint in ``src_dir`` (a folder or a Hub
    repository id, see :func:`resolve_hf_source`) to ``out_dir``.

    ``arch_overrides`` are :class:`ModelConfig` fields applied on top of the imported config;
    ``dtype`` (``float32`` by default, ``bfloat16``, ``float16``) is the dtype of the stored
    weights. Returns ``out_dir``.
    """
    from zoo.hub.release import load_weights, save_release
    from zoo.models.decoder import Decoder

    origin = str(src_dir)
    src = resolve_hf_source(src_dir)
    if Path(out_dir).resolve() == src.resolve():
        raise ValueError(f"{out_dir}: the release would overwrite the Hugging Face files it is read from; pick another out_dir")
    hf_config = read_hf_config(src)
    config = config_from_hf(hf_config)
    target = apply_overrides(config, arch_overrides)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    hf_weight_files(src)  # refuse pickles and missing shards before anything else is read
    tokenizer = _import_tokenizer(src, config.vocab_size)
    state = state_dict_from_hf(read_hf_weights(src), config)

    model = load_weights(Decoder(target), state, str(src))
    del state
    if dtype is not None:
        model.to(DTYPES[dtype])
    metrics = {
        "source": "huggingface",
        "hf_model_type": hf_config["model_type"],
        "hf_source": origin if not Path(origin).is_dir() else str(src.resolve()),
        "hf_special_tokens": {k: hf_config[k] for k in SPECIAL_TOKEN_FIELDS if hf_config.get(k) is not None},
        "tokenizer": tokenizer.name,
        "overrides": dict(arch_overrides),
        "steps": 0,
    }
    label = origin if not Path(origin).is_dir() else src.resolve().name
    return save_release(model, tokenizer, out_dir, metrics, name=name or f"{label} ({hf_config['model_type']})")


# Writing a Hugging Face directory ----------------------------------------------------------------
def _owning(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with storage of its own (safetensors refuses views sharing one)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def export_hf(source: str | Path, out_dir: str | Path, model_type: str | None = None, *, dtype: str = "float32") -> Path:
    """Writes a transformers folder for ``source`` (a zoo name, release directory or checkpoint).

    ``model_type`` ``moezoo`` (the default for ternary, top-K and MoE models) writes the zoo's own
    classes for ``trust_remote_code`` (:mod:`zoo.interop.hf_export`); ``llama`` / ``mistral`` /
    ``qwen2`` / ``mixtral`` (the defaults for full-precision models they express exactly: Mixtral
    for dropless top-k MoE, Qwen2 with q/k/v biases, else Llama) write a plain checkpoint that
    transformers loads with its own code. Both come
    with the tokenizer in ``tokenizers``' format and a ``generation_config.json``. Returns ``out_dir``.
    """
    from zoo.hub.release import load_model_source
    from zoo.interop.hf_export import export_zoo_hf, write_tokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model, tokenizer, metrics = load_model_source(source)
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
        label = Path(str(source)).name if Path(str(source)).exists() else str(source)
        return export_zoo_hf(model, tokenizer, metrics, out_dir, name=label)
    hf_config = config_to_hf(config, model_type)
    hf_config["torch_dtype"] = dtype
    hf_config.update(metrics.get("hf_special_tokens") or {})
    state = state_dict_to_hf(model.state_dict(), config, model_type)
    state = {name: _owning(t.to(DTYPES[dtype])) for name, t in state.items()}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / SINGLE_FILE), metadata={"format": "pt"})
    # plain Llama cannot read an id past its vocabulary, so no <|endoftext|> here (lm-eval: pass
    # prefix_token_id=<the separator's last id>); a release imported from transformers keeps its own
    special = {**write_tokenizer(tokenizer, out, config.max_seq_len), **(metrics.get("hf_special_tokens") or {})}
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    generation = {"do_sample": False, "max_length": config.max_seq_len, **special}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out


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


def cmd_export_hf(args: argparse.Namespace) -> int:
    out = export_hf(args.src, args.out, getattr(args, "model_type", None), dtype=getattr(args, "dtype", None) or "float32")
    print(f"Hugging Face checkpoint written to {out}")
    return 0
