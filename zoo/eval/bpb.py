"""Held-out evaluation of zoo models: bits per byte and perplexity on a corpus split.

Bits per byte make byte-level and BPE models comparable: ``bpb = nats/token / ln 2 / (bytes/token)``.
One code path serves ``zoo eval`` and the leaderboard, on the same token cache as training
(:class:`zoo.data.TokenizedCorpus`, no Lightning).
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import torch
import torch.nn.functional as F


def tokenizer_spec(tokenizer, directory: str) -> str:
    """What ``TokenizedCorpus(tokenizer=...)`` needs to re-create ``tokenizer``: a name or a saved path."""
    if getattr(tokenizer, "name", None) == "bytes":
        return "bytes"
    tokenizer.save(directory)
    return directory


@torch.no_grad()
def evaluate_model(
    model,
    tokenizer,
    *,
    corpus: str = "shakespeare",
    split: str = "test",
    batch_size: int = 8,
    max_batches: int | None = None,
    data_files=None,
) -> dict[str, Any]:
    from zoo.data import TokenizedCorpus

    with tempfile.TemporaryDirectory() as tmp:
        data = TokenizedCorpus(
            corpus,
            data_files=data_files,
            tokenizer=tokenizer_spec(tokenizer, tmp),
            max_seq_len=model.config.max_seq_len,
            batch_size=batch_size,
        )
        loader = data.eval_dataloader(split)
        bytes_per_token = data.bytes_per_token(split)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        nll, tokens = 0.0, 0
        for index, (inputs, targets) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            logits = model(inputs.to(device))
            nll += float(F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), reduction="sum"))
            tokens += targets.numel()
        model.train(was_training)
    if tokens == 0:
        raise ValueError(f"corpus {corpus!r} split {split!r} produced no evaluation tokens")
    loss = nll / tokens
    return {
        "corpus": corpus,
        "split": split,
        "tokens": tokens,
        "loss": loss,
        "ppl": math.exp(loss),
        "bpb": loss / math.log(2) / bytes_per_token,
    }


def evaluate_source(source: str, *, hub: str | None = None, **options: Any) -> dict[str, Any]:
    """:func:`evaluate_model` for a zoo name, release directory or Lightning checkpoint."""
    from zoo.hub.release import load_model_source

    model, tokenizer, _ = load_model_source(source, hub=hub, inference=True)
    return {"source": str(source), **evaluate_model(model, tokenizer, **options)}
