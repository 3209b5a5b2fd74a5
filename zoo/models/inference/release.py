"""An inference-form release: the tensors exactly as the engine holds them (BitNet b1.58 packed
ternary tiles and their scales, arXiv 2402.17764; Q-Sparse's transposed full-precision rows,
arXiv 2407.10969; fused norms; the bf16 or int8 table) in one safetensors file, beside
``inference.json`` (the config and the table's dtype).

Why a second format: the public shapes' models and imported BitNet checkpoints exist only in the
inference form (no latent weights to write as a training-form release), and a 2B-parameter model
should start in seconds. safetensors maps the file and its tensors are views of that mapping, so
loading reads nothing up front, the engine reads the weights in place (no copy into the kernels'
layout: it is the file's layout) and resident memory grows to the file's size as tokens touch it.
The module skeleton is built on the meta device and takes the mapped tensors as they are.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder

WEIGHTS, META = "inference.safetensors", "inference.json"
FORMAT = "moezoo-inference"
TABLE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
TIED = ("lm_head.weight", "lm_head.row_scale")  # the embedding's own tensors when tied


def _write_atomically(path: Path, write) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        write(partial)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 is for the partial file, not the release
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def is_inference_form(model: Decoder) -> bool:
    """Whether ``model`` was converted by ``to_inference`` (its projections are prepared ones)."""
    from zoo.models.inference.decode_step import INFERENCE_LAYERS

    return any(isinstance(m, INFERENCE_LAYERS) for m in model.modules())


def save_inference(model: Decoder, folder: str | Path) -> Path:
    """Writes the inference-form ``model`` to ``folder`` (each file whole or not at all)."""
    if not is_inference_form(model):
        raise ValueError("save_inference: the model is in training form; convert it with to_inference first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tied = model.lm_head.weight is model.tok_embeddings.weight
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (tied and k in TIED)}
    table = {v: k for k, v in TABLE_DTYPES.items()}[model.tok_embeddings.weight.dtype]
    meta = {"format": FORMAT, "version": 1, "config": model.config.to_dict(), "table": table, "tied": tied}
    _write_atomically(folder / WEIGHTS, lambda path: save_file(state, path))
    _write_atomically(folder / META, lambda path: Path(path).write_text(json.dumps(meta, indent=1)))
    return folder


def _skeleton(config: ModelConfig, table: torch.dtype) -> Decoder:
    """The inference form's modules on the meta device (no storage), as to_inference makes them."""
    from zoo.models.inference.convert import to_inference

    with torch.device("meta"):
        return to_inference(Decoder(config), embedding_dtype=None if table == torch.float32 else table)


def load_inference(folder: str | Path) -> Decoder:
    """The inference-form decoder of ``folder`` (:func:`save_inference`), its tensors mapped from the file."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder / META}: not a readable inference release ({error})") from None
    if meta.get("format") != FORMAT or meta.get("table") not in TABLE_DTYPES:
        raise ValueError(f"{folder / META}: expected format {FORMAT!r} with a table of {sorted(TABLE_DTYPES)}, got {meta.get('format')!r}")
    config = ModelConfig.from_dict(meta["config"], source=f"{folder / META}: config")
    model = _skeleton(config, TABLE_DTYPES[meta["table"]])
    state = load_file(folder / WEIGHTS)  # a mapping of the file: nothing read yet
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if meta.get("tied"):
        model.lm_head.weight = model.tok_embeddings.weight
        if hasattr(model.tok_embeddings, "row_scale"):
            model.lm_head.row_scale = model.tok_embeddings.row_scale
        missing = [k for k in missing if k not in TIED]
    left = [name for name, t in model.state_dict().items() if t.is_meta]
    if missing or unexpected or left:
        raise ValueError(f"{folder / WEIGHTS}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
