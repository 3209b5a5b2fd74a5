"""The one loader of model sources: ``zoo.from_pretrained``, ``zoo generate``, ``zoo eval``,
``zoo export``, ``zoo export-hf``, evaluation (:func:`zoo.eval.evaluate_source`), the lm-eval
model and ``model.init_from`` all load through :func:`load_source`, so they accept the same
sources, apply overrides the same way and fail with the same one-line :class:`SourceError`.

What a source string means is :mod:`zoo.hub.source`'s business (a zoo name, a local path,
``hf:org/name[@revision]``). What is read for each form:

- a zoo name: the published checkpoint, downloaded and verified from the hub (``hub=``,
  ``$ZOO_HUB`` or the shipped store), as :func:`zoo.create_model` with ``pretrained=True`` does;
- a folder: a zoo release (``config.yaml``), an inference-form release (``inference.json``,
  memory-mapped) or a transformers folder (``config.json`` +
  safetensors: Llama, Mistral, Qwen2, Mixtral, or a ``zoo export-hf`` folder), converted in memory;
- a file: a ``zoo fit`` checkpoint (``torch.load(weights_only=True)``: nothing is unpickled);
- a Hugging Face repository: a zoo release if the repository holds one, else its transformers
  files (config, safetensors, tokenizer; never a pickle), through huggingface_hub's cache.

It lives in interop, not the hub, because it reads transformers folders (:mod:`zoo.interop.hf`);
the hub keeps the zoo's own formats and never imports this room.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.hub.registry import load_published
from zoo.hub.release import RELEASE_FILES, load_lightning_checkpoint, load_release
from zoo.hub.source import Source, SourceError, missing_path, parse_source
from zoo.interop.hf import HUB_FILES, read_hf_folder, snapshot
from zoo.models.inference.release import META as INFERENCE_META
from zoo.models.inference.release import load_inference

__all__ = ["SourceError", "from_pretrained", "load_source", "parse_source"]


def load_folder(folder: Path, **overrides: Any):
    """(model, tokenizer, metrics) of a local folder: a zoo release, an inference-form release or a
    transformers folder."""
    if (folder / INFERENCE_META).is_file():
        return load_inference_release(folder, **overrides)
    if (folder / "config.yaml").is_file():
        return load_release(folder, **overrides)
    if (folder / "config.json").is_file():
        return read_hf_folder(folder, **overrides)
    return None


def load_inference_release(folder: Path, **overrides: Any):
    """An inference-form release (:mod:`zoo.models.inference.release`): memory-mapped, with the
    tokenizer saved beside it (raw bytes when there is none: the releases written before they
    carried one); overrides would change what was packed, so none."""
    from zoo.tokenizer import TOKENIZER_FILE, ByteTokenizer, load_tokenizer

    if overrides:
        raise ValueError(f"{folder}: an inference-form release takes no overrides yet, got {', '.join(sorted(overrides))}")
    tokenizer = load_tokenizer(folder) if (folder / TOKENIZER_FILE).is_file() else ByteTokenizer()
    return load_inference(folder), tokenizer, {"source": "inference release", "path": str(folder.resolve())}


def load_hf(source: Source, **overrides: Any):
    """A Hugging Face repository: the zoo release it holds, else its transformers files. The release
    files are asked for first, so a release repository never downloads anything else."""
    loaded = load_folder(snapshot(source, list(RELEASE_FILES)), **overrides)
    if loaded is None:
        loaded = load_folder(snapshot(source, HUB_FILES), **overrides)
    if loaded is None:
        raise SourceError(source.text, f"the Hugging Face repository {source} holds neither config.yaml nor config.json")
    return loaded


def load_source(source: str | Path, *, hub: str | None = None, inference: bool = False, **overrides: Any):
    """(model, tokenizer, metrics) of any source (see the module); the model in eval mode.

    ``overrides`` are :class:`~zoo.models.ModelConfig` fields that hold no parameter (``k_ratio``,
    ``sparsity``, ``kernel``, ``top_k``...) and ``dtype`` (``float32``, ``bfloat16``, ``float16``),
    applied alike to every form (:func:`zoo.hub.release.override_config`). ``inference=True``
    converts the model into its inference form (packed ternary weights run by the packed kernels,
    :mod:`zoo.models.inference`), which generation and evaluation use.
    """
    resolved = parse_source(source)
    if resolved.kind == "name":
        loaded = load_published(resolved.name, hub=hub, **overrides)
    elif resolved.kind == "hf":
        loaded = load_hf(resolved, **overrides)
    elif resolved.path.is_dir():
        loaded = load_folder(resolved.path, **overrides)
        if loaded is None:
            given = "a folder with neither a zoo release (config.yaml) nor a transformers model (config.json)"
            raise SourceError(resolved.text, given)
    elif resolved.path.is_file():
        loaded = load_lightning_checkpoint(resolved.path, **overrides)
    else:
        raise missing_path(resolved)
    model, tokenizer, metrics = loaded
    if inference:
        from zoo.models.inference import to_inference

        model = to_inference(model)
    model.tokenizer = tokenizer  # text in and out (zoo.text) without passing it separately
    return model, tokenizer, metrics


def from_pretrained(source: str | Path, *, inference: bool = False, hub: str | None = None, **overrides: Any):
    """The model of :func:`load_source` alone (what ``zoo.from_pretrained`` returns)."""
    return load_source(source, hub=hub, inference=inference, **overrides)[0]
