"""What the leaderboard holds: its columns, the fixed measurement settings, the output files and
the tolerance ``regenerate.py --check`` allows for each column on another machine of the same kind."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT_FILES = (
    "LEADERBOARD.md",
    "results.csv",
    "results.json",
    "blocks.json",
    "pareto_activated.png",
    "pareto_bytes.png",
    "pareto_speed.png",
)
SITES = ("attn_in", "attn_out", "ffn_in", "ffn_down")
CORPORA = ("shakespeare", "ptb")
# Each test split's statistic columns: Shakespeare is the headline ("bpb"), PTB is prefixed.
CORPUS_COLUMNS = {
    "shakespeare": {
        "bpb": "bpb",
        "ci": "bpb_ci95",
        "seeds": "seed_bpb",
        "tokens": "shakespeare_tokens",
        "diff": "bpb_vs_dense",
        "diff_ci": "bpb_vs_dense_ci95",
        "verdict": "vs_dense",
    },
    "ptb": {
        "bpb": "ptb_bpb",
        "ci": "ptb_bpb_ci95",
        "seeds": "ptb_seed_bpb",
        "tokens": "ptb_tokens",
        "diff": "ptb_vs_dense",
        "diff_ci": "ptb_vs_dense_ci95",
        "verdict": "ptb_vs_dense_verdict",
    },
}
# A checkpoint named "<entry>-seed<k>" is seed k of <entry>, whose own checkpoint is seed 0.
REPLICA = re.compile(r"^(?P<entry>.+)-seed(?P<seed>[1-9][0-9]*)$")

# What --check allows between the committed board and a re-measurement on another machine of the
# same kind: float sums may add up in another order there (bpb moved by ~2e-6 relative, a
# measured zero fraction by ~7e-5), so each column's tolerance says what the number means, not
# the last bits of one CPU. Integer counts, settings, verdicts and checkpoint hashes must agree exactly.
BPB_REL_TOL = 1e-4  # bits per byte and their interval ends: far below any difference the board ranks on
DIFF_ABS_TOL = 5e-4  # bpb differences and spreads (near zero, so absolute): 1e-4 of a 4-5 bpb score
SPARSITY_ABS_TOL = 1e-3  # measured fractions of zero inputs (and the activated share built on them)
TOLERANCES: dict[str, tuple[float, float]] = {  # column: (relative, absolute); absent: exact
    **{c: (BPB_REL_TOL, 0.0) for c in ("bpb", "bpb_ci95", "seed_bpb", "ptb_bpb", "ptb_bpb_ci95", "ptb_seed_bpb")},
    **{c: (0.0, DIFF_ABS_TOL) for c in ("seed_sd", "bpb_vs_dense", "bpb_vs_dense_ci95", "ptb_vs_dense", "ptb_vs_dense_ci95")},
    **{f"sparsity_{site}": (0.0, SPARSITY_ABS_TOL) for site in SITES},
    "activated_fraction": (0.0, SPARSITY_ABS_TOL),
    # linear in the measured sparsities: a 1e-3 shift of every site moves them by at most 1e-3 of
    # the total, i.e. by 1e-3 / activated share (>= 0.2 on this board) relative
    "activated_params": (5 * SPARSITY_ABS_TOL, 0.0),
    "weight_bytes_per_token": (5 * SPARSITY_ABS_TOL, 0.0),
}
BLOCK_REL_TOL = BPB_REL_TOL  # one block's summed loss in blocks.json

# Fixed budgets make every run measure exactly the same tokens. "full" scores every window of both
# test splits; "quick" (tests, smoke runs) the first few.
SETTINGS = {
    "full": {
        "eval_windows": None,  # all of them
        "eval_batch_size": 8,
        "block_windows": 16,  # bootstrap blocks of 16 windows (4,096 targets at 256 tokens a window)
        "bootstrap_resamples": 2000,
        "bootstrap_seed": 0,
        "account_windows": 8,
        "account_batch_size": 4,
        "decode_tokens": 128,
        "decode_repeats": 11,
        "small_decode_tokens": 32,
        "small_decode_repeats": 5,
        "decode_prompt": "ROMEO:",
        "threads": 1,
    },
    "quick": {
        "eval_windows": 8,
        "eval_batch_size": 2,
        "block_windows": 2,
        "bootstrap_resamples": 200,
        "bootstrap_seed": 0,
        "account_windows": 2,
        "account_batch_size": 2,
        "decode_tokens": 16,
        "decode_repeats": 3,
        "small_decode_tokens": 2,
        "small_decode_repeats": 1,
        "decode_prompt": "ROMEO:",
        "threads": 1,
    },
}
# The settings a checkpoint's block scores depend on: blocks.json scores made with the same ones
# (and the same checkpoint sha256) can be reused by ``regenerate.py --reuse-scores``.
SCORE_SETTINGS = ("eval_windows", "eval_batch_size", "block_windows")
# One CPU thread by default: float reductions then add up in the same order on any machine, so
# --check can hold a tight tolerance, and timings do not collapse when OpenMP threads wait on a
# core another job holds (seen on the shared 2-core machines: a step up to 100x slower).

COLUMNS = (
    "name",
    "seeds",
    "bpb",  # Shakespeare test, mean over seeds
    "bpb_ci95",
    "seed_bpb",
    "seed_sd",
    "bpb_vs_dense",
    "bpb_vs_dense_ci95",
    "vs_dense",
    "shakespeare_tokens",
    "ptb_bpb",
    "ptb_bpb_ci95",
    "ptb_seed_bpb",
    "ptb_vs_dense",
    "ptb_vs_dense_ci95",
    "ptb_vs_dense_verdict",
    "ptb_tokens",
    "total_params",
    "non_embedding_params",
    "activated_params",
    "activated_fraction",
    "weight_bytes_per_token",
    "inference_bytes",
    *(f"sparsity_{site}" for site in SITES),
    "weight_quant",
    "act_quant",
    "sparsity",
    "k_ratio",
    "n_experts",
    "top_k",
    "train_tokens",
    "train_steps",
    "train_corpus",
    "hardware",
    "checkpoint_sha256",
    "decode_tokens_per_s",
    "fp32_dense_decode_tokens_per_s",
    "decode_speedup",
    "decode_vs_dense_engine",
    "small_decode_tokens_per_s",
    "small_fp32_dense_decode_tokens_per_s",
    "small_decode_speedup",
    "small_inference_bytes",
)
# Columns holding a list (JSON arrays in results.json, space-separated in results.csv).
LIST_COLUMNS = ("bpb_ci95", "seed_bpb", "bpb_vs_dense_ci95", "ptb_bpb_ci95", "ptb_seed_bpb", "ptb_vs_dense_ci95", "checkpoint_sha256")
# Timings depend on the machine and its load: reported, never checked.
UNCHECKED = (
    "decode_tokens_per_s",
    "fp32_dense_decode_tokens_per_s",
    "decode_speedup",
    "decode_vs_dense_engine",
    "small_decode_tokens_per_s",
    "small_fp32_dense_decode_tokens_per_s",
    "small_decode_speedup",
)
TEXT_COLUMNS = (
    "name",
    "vs_dense",
    "ptb_vs_dense_verdict",
    "weight_quant",
    "act_quant",
    "sparsity",
    "train_corpus",
    "hardware",
    "checkpoint_sha256",
)


def replica_of(name: str) -> tuple[str, int]:
    """``("dense-tiny", 2)`` for ``dense-tiny-seed2``; ``(name, 0)`` for an entry's own checkpoint."""
    match = REPLICA.match(name)
    return (match["entry"], int(match["seed"])) if match else (name, 0)


def size_of(name: str) -> str | None:
    """``tiny`` for ``qsparse-tiny``: the registry's naming is ``<entry>-<size>``."""
    from zoo.hub.registry import SIZES

    tail = name.rsplit("-", 1)[-1]
    return tail if "-" in name and tail in SIZES else None


def describe_tolerance(column: str) -> str:
    relative, absolute = TOLERANCES.get(column, (0.0, 0.0))
    if not relative and not absolute:
        return "exact"
    return f"{relative:g} relative" if relative else f"{absolute:g} absolute"


def tolerance_summary() -> str:
    return (
        f"bpb and interval ends within {BPB_REL_TOL:g} relative, differences and seed spreads within {DIFF_ABS_TOL:g} absolute, "
        f"measured sparsities within {SPARSITY_ABS_TOL:g} absolute, counts, settings, verdicts and checkpoint sha256 exactly"
    )
