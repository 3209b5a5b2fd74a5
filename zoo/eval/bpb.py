"""Held-out evaluation of zoo models: bits per byte and perplexity on a corpus split.

Bits per byte make byte-level and BPE models comparable: ``bpb = nats/token / ln 2 / (bytes/token)``.
One code path serves ``zoo eval`` and the leaderboard, on the same token cache as training
(:class:`zoo.data.TokenizedCorpus`, no Lightning).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from zoo.eval.intervals import BLOCK_WINDOWS, BlockScores, block_picks, block_sums, bpb_interval


def tokenizer_spec(tokenizer, directory: str) -> str:
    """What ``TokenizedCorpus(tokenizer=...)`` needs to re-create ``tokenizer``: a name or a saved path."""
    if getattr(tokenizer, "name", None) == "bytes":
        return "bytes"
    tokenizer.save(directory)
    return directory


@dataclass(frozen=True)
class WindowLosses:
    """Per-window scores of one model on one corpus split: the raw material of bpb and its intervals."""

    corpus: str
    split: str
    windows: list[int]  # window indices evaluated, in order
    nll: list[float]  # summed negative log-likelihood of each window's targets, nats
    tokens: list[int]  # targets per window
    bytes_per_token: float  # of the whole split (bpb = nats/token / ln 2 / bytes_per_token)
    total_windows: int  # windows in the split

    def bpb(self) -> float:
        return sum(self.nll) / sum(self.tokens) / math.log(2) / self.bytes_per_token


@torch.no_grad()
def window_losses(
    model,
    tokenizer,
    *,
    corpus: str = "shakespeare",
    split: str = "test",
    batch_size: int = 8,
    windows: Sequence[int] | None = None,
    max_windows: int | None = None,
    data_files=None,
    progress: bool = False,
) -> WindowLosses:
    """Summed negative log-likelihood (nats) and target count of each evaluation window.

    ``windows`` picks window indices (default: all, in order; ``max_windows`` keeps the first ones).
    They are evaluated ``batch_size`` at a time in the order given, so the same indices in the same
    batches give the same sums. ``progress`` draws a bar of the batches on stderr.
    """
    from zoo.data import TokenizedCorpus
    from zoo.data.tokens import collate_windows

    with tempfile.TemporaryDirectory() as tmp:
        data = TokenizedCorpus(
            corpus,
            data_files=data_files,
            tokenizer=tokenizer_spec(tokenizer, tmp),
            max_seq_len=model.config.max_seq_len,
            batch_size=batch_size,
        )
        dataset = data.dataset(split)
        bytes_per_token = data.bytes_per_token(split)
    indices = list(range(len(dataset))) if windows is None else [int(i) for i in windows]
    if max_windows is not None:
        indices = indices[:max_windows]
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f"corpus {corpus!r} split {split!r} has {len(dataset)} evaluation windows; window {bad[0]} does not exist")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll: list[float] = []
    tokens: list[int] = []
    from tqdm.auto import tqdm

    starts = range(0, len(indices), batch_size)
    try:
        for start in tqdm(starts, desc=f"{corpus} {split}", unit="batch", disable=not progress, leave=False):
            inputs, targets = collate_windows([dataset[i] for i in indices[start : start + batch_size]])
            logits = model(inputs.to(device)).float()
            losses = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), reduction="none")
            # per-window sums in float64: a block bootstrap adds hundreds of them up again
            nll += losses.view(targets.shape).double().sum(dim=1).tolist()
            tokens += [targets.shape[1]] * targets.shape[0]
    finally:
        model.train(was_training)
    return WindowLosses(corpus, split, indices, nll, tokens, bytes_per_token, len(dataset))


def evaluate_model(
    model,
    tokenizer,
    *,
    corpus: str = "shakespeare",
    split: str = "test",
    batch_size: int = 8,
    max_batches: int | None = None,
    data_files=None,
    progress: bool = False,
) -> dict[str, Any]:
    """Bits per byte, loss and perplexity of ``model`` on a corpus split: all of it, or its first
    ``max_batches`` batches of ``batch_size`` windows. With two or more blocks of
    :data:`~zoo.eval.intervals.BLOCK_WINDOWS` windows, also ``bpb_ci95``: the 95 % block-bootstrap interval."""
    result = window_losses(
        model,
        tokenizer,
        corpus=corpus,
        split=split,
        batch_size=batch_size,
        max_windows=None if max_batches is None else max_batches * batch_size,
        data_files=data_files,
        progress=progress,
    )
    if not result.tokens:
        raise ValueError(f"corpus {corpus!r} split {split!r} produced no evaluation tokens")
    loss = sum(result.nll) / sum(result.tokens)
    summary = {"corpus": corpus, "split": split, "tokens": sum(result.tokens), "loss": loss, "ppl": math.exp(loss), "bpb": result.bpb()}
    nll, tokens = block_sums(result.nll, BLOCK_WINDOWS), block_sums(result.tokens, BLOCK_WINDOWS)
    if len(nll) >= 2:  # how far another text of the same kind could move it (zoo.eval.intervals)
        scores = BlockScores.of([nll], tokens, result.bytes_per_token)
        summary["bpb_ci95"] = list(bpb_interval(scores, block_picks(len(nll))))
        summary["bootstrap_blocks"] = len(nll)
    return summary


def evaluate_source(source: str, *, hub: str | None = None, **options: Any) -> dict[str, Any]:
    """:func:`evaluate_model` for any model source (:func:`zoo.interop.loader.load_source`)."""
    from zoo.interop.loader import load_source

    model, tokenizer, _ = load_source(source, hub=hub, inference=True)
    return {"source": str(source), **evaluate_model(model, tokenizer, **options)}
