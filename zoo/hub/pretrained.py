"""``save_pretrained`` / ``push_to_hub`` for zoo models, the way
huggingface_hub's ``PyTorchModelHubMixin`` gives them to a model class, on the zoo's release
format (plain files: safetensors weights, ``config.yaml``, tokenizer, metrics, model card).

The decoder itself (:mod:`zoo.models`) stays free of huggingface_hub, so these are functions of
the hub room rather than a mixin: ``zoo.save_pretrained(model, "out")``,
``zoo.push_to_hub(model, "org/name")``. Reading any of them back, ``zoo.from_pretrained``, is the
one loader of :mod:`zoo.interop.loader` (it reads transformers folders too, so it sits above the hub).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from zoo.hub.source import REPO_ID


def save_pretrained(
    model, out_dir: str | Path, *, tokenizer=None, metrics: dict | None = None, name: str | None = None, bf16: bool = False
) -> Path:
    """Writes ``model`` as a release folder with ``tokenizer`` (default: the model's own, else raw
    bytes). A model in the inference form is written as an inference-form release (its packed
    tensors as they are, :mod:`zoo.models.inference.release`); ``zoo.from_pretrained`` reads both."""
    from zoo.hub.release import save_release
    from zoo.models.inference.release import is_inference_form, save_inference
    from zoo.tokenizer import ByteTokenizer

    out = Path(out_dir)
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or ByteTokenizer()
    if is_inference_form(model):
        if bf16:
            raise ValueError("save_pretrained: bf16=True rounds a training-form release; an inference-form model is written as it is held")
        save_inference(model, out)
        tokenizer.save(out)
        return out
    return save_release(model, tokenizer, out, metrics or {}, name=name or out.name, bf16=bf16)


def push_to_hub(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    metrics: dict | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload moezoo model",
    bf16: bool = True,
) -> str:
    """Uploads ``model`` as a release to the Hugging Face repository ``repo_id`` (created if needed);
    returns the commit URL. Weights go up with bf16 matrices by default, as the zoo publishes them."""
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo_id) or "@" in repo_id:
        raise ValueError(f"repo_id must look like org/name, got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, Path(tmp) / repo_id.split("/")[-1], tokenizer=tokenizer, metrics=metrics, bf16=bf16)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))
