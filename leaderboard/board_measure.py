"""Measuring the zoo's checkpoints for the leaderboard.

- Scores: the summed loss of every window of the Shakespeare and PTB test splits, kept per block of
  windows so that :mod:`board_stats` can give intervals (every seed of every entry).
- Costs (each entry's seed-0 checkpoint): parameter and byte accounting from measured input
  sparsity (Q-Sparse, arXiv 2407.10969, §3.6; ternary weights at 2 bits, BitNet b1.58,
  arXiv 2402.17764; routed experts at their routed fraction, MegaBlocks) and the bytes of every
  tensor the inference form holds.
- Speed: greedy decode of the inference form against plain fp32 dense of the same size, interleaved
  in the same run, at tiny (trained weights) and small (same shapes, random weights).
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from board_spec import CORPORA, SITES, replica_of, size_of

from zoo.eval.intervals import block_sums
from zoo.hub import trusted_manifest
from zoo.machine import pinned_threads

# ----------------------------------------------------------------------------- names


def group_checkpoints(names: Sequence[str], published: Sequence[str]) -> dict[str, list[str]]:
    """Each entry named (and the dense entry of its size, the baseline of its differences) with its
    published checkpoints in seed order: ``{"dense-tiny": ["dense-tiny", "dense-tiny-seed1", ...]}``."""
    published = set(published)
    entries = [replica_of(n)[0] for n in names]
    for entry in list(entries):
        dense = f"dense-{size_of(entry)}"
        if size_of(entry) and dense in published and dense not in entries:
            entries.append(dense)
    groups: dict[str, list[str]] = {}
    for entry in dict.fromkeys(entries):
        if entry not in published:
            raise ValueError(f"{entry}: its seed-0 checkpoint {entry!r} is not in the hub's manifest")
        replicas = sorted((replica_of(n)[1], n) for n in published if replica_of(n)[0] == entry)
        groups[entry] = [n for _, n in replicas]
    return groups


# ----------------------------------------------------------------------------- scores


def block_windows(block: int, settings: dict, windows: int) -> range:
    width = settings["block_windows"]
    return range(block * width, min((block + 1) * width, windows))


def score(model, tokenizer, corpus: str, settings: dict, blocks: Sequence[int] | None = None, windows: int | None = None) -> dict:
    """Per-block summed loss on ``corpus``'s test split: every block (``{"nll", "tokens",
    "bytes_per_token", "windows"}``), or only ``blocks`` of a split of ``windows`` windows (``{block: nll}``)."""
    from zoo.eval.bpb import window_losses

    options = {"corpus": corpus, "split": "test", "batch_size": settings["eval_batch_size"]}
    if blocks is None:
        result = window_losses(model, tokenizer, max_windows=settings["eval_windows"], **options)
        width = settings["block_windows"]
        return {
            "windows": len(result.windows),
            "bytes_per_token": result.bytes_per_token,
            "tokens": [int(t) for t in block_sums(result.tokens, width)],
            "nll": block_sums(result.nll, width),
        }
    # Whole blocks, whose windows go through the model in the same batches as in a full run
    # (block_windows is a multiple of eval_batch_size), so their sums agree to the last bits.
    picked = [w for b in blocks for w in block_windows(b, settings, windows)]
    result = window_losses(model, tokenizer, windows=picked, **options)
    per_window = dict(zip(result.windows, result.nll))
    return {b: math.fsum(per_window[w] for w in block_windows(b, settings, windows)) for b in blocks}


# ----------------------------------------------------------------------------- costs


def accounting_batches(model, tokenizer, settings: dict) -> list[torch.Tensor]:
    """The fixed Shakespeare validation slice on which input sparsity is measured."""
    from zoo.data import TokenizedCorpus
    from zoo.eval.bpb import tokenizer_spec

    with tempfile.TemporaryDirectory() as tmp:
        data = TokenizedCorpus("shakespeare", tokenizer=tokenizer_spec(tokenizer, tmp), max_seq_len=model.config.max_seq_len)
        windows = data.dataset("validation")
        count = min(settings["account_windows"], len(windows))
        inputs = torch.stack([windows[i] for i in range(count)])[:, :-1]
    return list(inputs.split(settings["account_batch_size"]))


def measure_costs(model, tokenizer, metrics: dict, settings: dict) -> dict[str, Any]:
    """Accounting, configuration and training columns of an entry's seed-0 checkpoint; leaves
    ``model`` in its inference form (what users run, and what bpb and speed are measured on)."""
    from zoo.models.accounting import account
    from zoo.models.inference import tensor_bytes, to_inference

    # Parameters are counted on the training form (the inference form holds packed buffers).
    stats = account(model, batches=accounting_batches(model, tokenizer, settings))
    to_inference(model)
    cfg = model.config
    row: dict[str, Any] = {
        "total_params": stats.total_params,
        "non_embedding_params": stats.non_embedding_params,
        "activated_params": stats.activated_params,
        "activated_fraction": stats.activated_params / stats.non_embedding_params,
        "weight_bytes_per_token": stats.weight_bytes_per_token,
        "inference_bytes": tensor_bytes(model),
        **{f"sparsity_{site}": stats.input_sparsity.get(site, 0.0) for site in SITES},
        "weight_quant": cfg.weight_quant,
        "act_quant": cfg.act_quant,
        "sparsity": cfg.sparsity,
        "k_ratio": cfg.k_ratio,
        "n_experts": cfg.n_experts,
        "top_k": cfg.top_k if cfg.n_experts else 0,
        "train_tokens": metrics.get("tokens_seen"),
        "train_steps": metrics.get("steps"),
        "train_corpus": metrics.get("corpus"),
        "hardware": metrics.get("hardware"),
    }
    return row


# ----------------------------------------------------------------------------- speed


def decode_tokens_per_s(models: dict[str, Any], prompt: torch.Tensor, new_tokens: int, repeats: int) -> dict[str, float]:
    """Greedy tokens/s of each model, timed in turns so a load spike hits all alike."""
    from zoo.bench.common import interleaved_median_times
    from zoo.models.generate import generate

    runs = {label: (lambda m=model: generate(m, prompt, new_tokens, temperature=0.0, seed=0)) for label, model in models.items()}
    seconds = interleaved_median_times(runs, warmup=1, repeats=repeats)
    return {label: new_tokens / seconds[label] for label in runs}


def plain_dense(config):
    """Plain fp32 dense of ``config``'s shape, as a user has it without the inference engine:
    every sparsity, quantisation and routing choice off, training form, random weights (decode
    speed does not depend on the values of dense weights)."""
    from zoo.models.decoder import Decoder

    torch.manual_seed(0)
    dense = config.replace(
        weight_quant="none",
        act_quant="none",
        sparsity="none",
        k_ratio=1.0,
        n_experts=0,
        n_shared_experts=0,
        ffn_act="swiglu",
        sub_norm=False,
    )
    return Decoder(dense).eval()


@dataclass
class Baselines:
    """Plain fp32 dense and dense in its inference form, per shape, built once."""

    models: dict[Any, tuple[Any, Any]] = field(default_factory=dict)

    def of(self, config) -> tuple[Any, Any]:
        from zoo.models.inference import to_inference

        key = tuple(sorted(config.to_dict().items()))
        if key not in self.models:
            plain = plain_dense(config)
            engine = plain_dense(config)  # the same weights (seeded), then converted
            self.models[key] = (plain, to_inference(engine))
        return self.models[key]


def small_model(name: str):
    """The inference form of the entry's ``-small`` config with random weights (seeded), or None
    where the entry has no small config."""
    import zoo
    from zoo.hub.registry import list_models
    from zoo.models.inference import to_inference

    size = size_of(name)
    small = f"{name[: -len(size) - 1]}-small" if size else None
    if small is None or small not in list_models():
        return None
    torch.manual_seed(0)
    return to_inference(zoo.create_model(small).eval())


def measure_small(name: str, tokenizer, settings: dict, baselines: Baselines, timing: bool) -> dict[str, Any]:
    """The bytes the entry's small inference form holds and, with ``timing``, its decode speed
    against plain fp32 dense of the same shape (both random weights)."""
    from zoo.models.inference import tensor_bytes

    model = small_model(name)
    row: dict[str, Any] = {"small_inference_bytes": None if model is None else tensor_bytes(model)}
    if model is None or not timing or not settings["small_decode_tokens"]:
        return row
    prompt = torch.tensor([tokenizer.encode(settings["decode_prompt"])])
    plain, _ = baselines.of(model.config)
    tps = decode_tokens_per_s({"entry": model, "plain": plain}, prompt, settings["small_decode_tokens"], settings["small_decode_repeats"])
    return {
        **row,
        "small_decode_tokens_per_s": tps["entry"],
        "small_fp32_dense_decode_tokens_per_s": tps["plain"],
        "small_decode_speedup": tps["entry"] / tps["plain"],
    }


def time_tiny(name: str, model, tokenizer, settings: dict, baselines: Baselines) -> dict[str, Any]:
    """Decode speed of this checkpoint against plain fp32 dense of the same shape and against
    dense in the engine's inference form, interleaved in the same run."""
    prompt = torch.tensor([tokenizer.encode(settings["decode_prompt"])])
    plain, engine = baselines.of(model.config)
    models = {"entry": model, "plain": plain} if name.startswith("dense-") else {"entry": model, "plain": plain, "engine": engine}
    tps = decode_tokens_per_s(models, prompt, settings["decode_tokens"], settings["decode_repeats"])
    return {
        "decode_tokens_per_s": tps["entry"],
        "fp32_dense_decode_tokens_per_s": tps["plain"],
        "decode_speedup": tps["entry"] / tps["plain"],
        "decode_vs_dense_engine": tps["entry"] / tps.get("engine", tps["entry"]),
    }


# ----------------------------------------------------------------------------- the run


@dataclass
class Measured:
    groups: dict[str, list[str]]  # entry -> its checkpoints, seed 0 first
    costs: dict[str, dict[str, Any]]  # entry -> cost (and timing) columns of its seed-0 checkpoint
    scores: dict[str, dict[str, Any]]  # checkpoint -> {"sha256", "seed", <corpus>: score(...)}


def measure(
    names: Sequence[str],
    hub: str | None,
    settings: dict,
    *,
    progress: bool = True,
    timing: bool = True,
    sample: dict[str, dict[str, Any]] | None = None,
    reuse: dict[str, dict[str, Any]] | None = None,
) -> Measured:
    """Every checkpoint of the entries named, by one code path.

    ``sample``, as ``{checkpoint: {corpus: {"windows": n, "blocks": [b, ...]}}}``, re-scores only
    those blocks (``--check --sample-blocks``); ``timing=False`` skips the decode timings.
    ``reuse`` (``blocks.json``'s checkpoints, scored with the same settings) supplies the scores of
    every checkpoint whose sha256 it holds unchanged; a reused seed k > 0 is not even loaded.
    """
    from tqdm.auto import tqdm

    from zoo.hub import download
    from zoo.hub.release import load_release

    manifest = trusted_manifest(hub)
    published = sorted(manifest["checkpoints"])
    unknown = [n for n in names if n not in published]
    if unknown:
        raise ValueError(f"not in the hub's manifest: {', '.join(unknown)}; known: {', '.join(published) or '(none)'}")
    groups = group_checkpoints(names, published)
    measured = Measured(groups, {}, {})
    baselines = Baselines()
    checkpoints = [c for entry in groups for c in groups[entry]]
    with pinned_threads(settings.get("threads")):
        bar = tqdm(checkpoints, desc="leaderboard", unit="checkpoint", disable=not progress, file=sys.stderr)
        for checkpoint in bar:
            entry, seed = replica_of(checkpoint)
            sha = manifest["checkpoints"][checkpoint]["files"].get("model.safetensors", {}).get("sha256")
            reused = (reuse or {}).get(checkpoint)
            if reused is not None and reused.get("sha256") == sha:
                measured.scores[checkpoint] = reused
                if seed > 0:
                    continue
            bar.set_postfix_str(f"{checkpoint}: download")
            model, tokenizer, metrics = load_release(download(checkpoint, hub=hub, progress=False))
            if seed == 0:
                bar.set_postfix_str(f"{checkpoint}: accounting")
                measured.costs[entry] = measure_costs(model, tokenizer, metrics, settings)  # leaves the inference form
            else:
                from zoo.models.inference import to_inference

                to_inference(model)
            if checkpoint not in measured.scores:  # not reused
                measured.scores[checkpoint] = {"sha256": sha, "seed": seed}
                for corpus in CORPORA:
                    bar.set_postfix_str(f"{checkpoint}: {corpus}")
                    chosen = (sample or {}).get(checkpoint, {}).get(corpus)
                    if sample is not None and chosen is None:
                        raise ValueError(f"{checkpoint}: no committed {corpus} blocks to re-measure")
                    blocks, windows = (chosen["blocks"], chosen["windows"]) if chosen else (None, None)
                    measured.scores[checkpoint][corpus] = score(model, tokenizer, corpus, settings, blocks, windows)
            if seed == 0:
                bar.set_postfix_str(f"{checkpoint}: {'decode speed' if timing else 'small'}")
                if timing:
                    measured.costs[entry].update(time_tiny(entry, model, tokenizer, settings, baselines))
                measured.costs[entry].update(measure_small(entry, tokenizer, settings, baselines, timing))
        bar.close()
    return measured
