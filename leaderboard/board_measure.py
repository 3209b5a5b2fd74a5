"""Measuring one zoo checkpoint for the leaderboard: bits per byte, parameter and byte accounting
from measured input sparsity (Q-Sparse, arXiv 2407.10969, §3.6; ternary weights at 2 bits, BitNet
b1.58, arXiv 2402.17764; routed experts at their routed fraction, MegaBlocks), and greedy decode
speed against the dense entry of the same size timed in the same run."""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import torch
from board_spec import SITES

from zoo.bench.common import pinned_threads
from zoo.hub import trusted_manifest

# ----------------------------------------------------------------------------- names


def size_of(name: str) -> str | None:
    """``tiny`` for ``qsparse-tiny``: the registry's naming is ``<entry>-<size>``."""
    from zoo.hub.registry import SIZES

    tail = name.rsplit("-", 1)[-1]
    return tail if "-" in name and tail in SIZES else None


# ----------------------------------------------------------------------------- measurement


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


def measure_quality(name: str, model, tokenizer, metrics: dict, sha256: str | None, settings: dict) -> dict[str, Any]:
    """Every deterministic column of one entry (all but the decode timings)."""
    from zoo.eval.bpb import evaluate_model
    from zoo.models.accounting import account
    from zoo.models.inference import tensor_bytes, to_inference

    row: dict[str, Any] = {"name": name}
    # Parameters are counted on the training form (the inference form holds packed buffers);
    # quality and speed are measured on the inference form, which is what users run.
    stats = account(model, batches=accounting_batches(model, tokenizer, settings))
    to_inference(model)
    row["inference_bytes"] = tensor_bytes(model)
    for corpus in ("shakespeare", "ptb"):
        result = evaluate_model(
            model, tokenizer, corpus=corpus, split="test", batch_size=settings["eval_batch_size"], max_batches=settings["eval_batches"]
        )
        row[f"{corpus}_bpb"], row[f"{corpus}_loss"], row[f"{corpus}_tokens"] = result["bpb"], result["loss"], result["tokens"]
    row.update(
        total_params=stats.total_params,
        non_embedding_params=stats.non_embedding_params,
        activated_params=stats.activated_params,
        activated_fraction=stats.activated_params / stats.non_embedding_params,
        weight_bytes_per_token=stats.weight_bytes_per_token,
    )
    for site in SITES:
        row[f"sparsity_{site}"] = stats.input_sparsity.get(site, 0.0)
    cfg = model.config
    row.update(
        weight_quant=cfg.weight_quant,
        act_quant=cfg.act_quant,
        sparsity=cfg.sparsity,
        k_ratio=cfg.k_ratio,
        n_experts=cfg.n_experts,
        top_k=cfg.top_k if cfg.n_experts else 0,
    )
    row.update(
        train_tokens=metrics.get("tokens_seen"),
        train_steps=metrics.get("steps"),
        train_corpus=metrics.get("corpus"),
        hardware=metrics.get("hardware"),
        checkpoint_sha256=sha256,
    )
    return row


def interleaved_decode_tps(pairs: list[tuple[Any, Any]], settings: dict) -> list[float]:
    """Greedy tokens/s of each ``(model, tokenizer)``, timed in turns so a load spike hits all alike."""
    from zoo.bench.common import interleaved_median_times
    from zoo.models.generate import generate

    n = settings["decode_tokens"]
    runs = {}
    for index, (model, tokenizer) in enumerate(pairs):
        prompt = torch.tensor([tokenizer.encode(settings["decode_prompt"])])
        runs[index] = lambda m=model, p=prompt: generate(m, p, n, temperature=0.0, seed=0)
    seconds = interleaved_median_times(runs, warmup=1, repeats=settings["decode_repeats"])
    return [n / seconds[index] for index in runs]


def dense_twin(config):
    """The same shape with every sparsity, quantisation and routing choice switched off."""
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


class Baselines:
    """The dense entry of each size, loaded once: ``dense-<size>`` from the hub, else a dense twin."""

    def __init__(self, available: set[str], hub: str | None) -> None:
        self.available, self.hub = available, hub
        self._cache: dict[Any, tuple[str, Any, Any]] = {}

    def remember(self, name: str, model, tokenizer) -> None:
        if name.startswith("dense-") and size_of(name):
            self._cache[name] = (name, model, tokenizer)

    def get(self, name: str, model, tokenizer) -> tuple[str, Any, Any]:
        size = size_of(name)
        dense_name = f"dense-{size}" if size else None
        if dense_name in self._cache:
            return self._cache[dense_name]
        if dense_name in self.available:
            from zoo.hub import download
            from zoo.hub.release import load_release

            dense_model, dense_tokenizer, _ = load_release(download(dense_name, hub=self.hub, progress=False))
            self._cache[dense_name] = (dense_name, dense_model, dense_tokenizer)
            return self._cache[dense_name]
        key = ("twin", tuple(sorted(model.config.to_dict().items())))
        if key not in self._cache:
            self._cache[key] = (f"dense twin of {name} (random init)", dense_twin(model.config), tokenizer)
        return self._cache[key]


def measure(names: list[str], hub: str | None, settings: dict, *, progress: bool = True) -> list[dict[str, Any]]:
    """One row per entry, sorted by Shakespeare bpb; the same code path for every entry."""
    manifest = trusted_manifest(hub)
    unknown = [n for n in names if n not in manifest["checkpoints"]]
    if unknown:
        known = ", ".join(sorted(manifest["checkpoints"])) or "(none)"
        raise ValueError(f"not in the hub's manifest: {', '.join(unknown)}; known: {known}")
    baselines = Baselines(set(manifest["checkpoints"]), hub)
    with pinned_threads(settings.get("threads")):
        return _measure_all(names, hub, settings, manifest, baselines, progress)


def _measure_all(
    names: list[str], hub: str | None, settings: dict, manifest: dict, baselines: Baselines, progress: bool
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from zoo.hub import download
    from zoo.hub.release import load_release

    rows = []
    # Dense entries first, so the baselines of the other entries are the ones already loaded.
    names = sorted(names, key=lambda n: (not n.startswith("dense-"), names.index(n)))
    bar = tqdm(names, desc="leaderboard", unit="entry", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(f"{name}: download")
        model, tokenizer, metrics = load_release(download(name, hub=hub, progress=False))
        baselines.remember(name, model, tokenizer)
        sha = manifest["checkpoints"][name]["files"].get("model.safetensors", {}).get("sha256")
        bar.set_postfix_str(f"{name}: bpb + accounting")
        row = measure_quality(name, model, tokenizer, metrics, sha, settings)
        bar.set_postfix_str(f"{name}: decode speed")
        baseline_name, baseline, baseline_tokenizer = baselines.get(name, model, tokenizer)
        if baseline is model:
            tps = base_tps = interleaved_decode_tps([(model, tokenizer)], settings)[0]
        else:
            tps, base_tps = interleaved_decode_tps([(model, tokenizer), (baseline, baseline_tokenizer)], settings)
        row.update(
            decode_tokens_per_s=tps, dense_decode_tokens_per_s=base_tps, decode_speedup=tps / base_tps, decode_baseline=baseline_name
        )
        rows.append(row)
    bar.close()
    return sorted(rows, key=lambda r: (r["shakespeare_bpb"], r["name"]))
