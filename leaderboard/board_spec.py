"""What the leaderboard holds: its columns, the fixed measurement settings, the output files and
the tolerance ``regenerate.py --check`` allows for each column on another machine of the same kind."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT_FILES = ("LEADERBOARD.md", "results.csv", "results.json", "pareto_activated.png", "pareto_bytes.png")
SITES = ("attn_in", "attn_out", "ffn_in", "ffn_down")
# What --check allows between the committed board and a re-measurement on another machine of the
# same kind: float sums may add up in another order there (bpb moved by ~2e-6 relative, a
# measured zero fraction by ~7e-5), so each column's tolerance says what the number means, not
# the last bits of one CPU. Integer counts, settings and checkpoint hashes must agree exactly.
BPB_REL_TOL = 1e-4  # bits per byte and losses: far below any difference the board ranks on
SPARSITY_ABS_TOL = 1e-3  # measured fractions of zero inputs (and the activated share built on them)
TOLERANCES: dict[str, tuple[float, float]] = {  # column: (relative, absolute); absent: exact
    **{c: (BPB_REL_TOL, 0.0) for c in ("shakespeare_bpb", "shakespeare_loss", "ptb_bpb", "ptb_loss")},
    **{f"sparsity_{site}": (0.0, SPARSITY_ABS_TOL) for site in SITES},
    "activated_fraction": (0.0, SPARSITY_ABS_TOL),
    # linear in the measured sparsities: a 1e-3 shift of every site moves them by at most 1e-3 of
    # the total, i.e. by 1e-3 / activated share (>= 0.2 on this board) relative
    "activated_params": (5 * SPARSITY_ABS_TOL, 0.0),
    "weight_bytes_per_token": (5 * SPARSITY_ABS_TOL, 0.0),
}

# Fixed budgets keep CI short and make every run measure exactly the same tokens.
SETTINGS = {
    "full": {
        "eval_batches": 8,
        "eval_batch_size": 8,
        "account_windows": 8,
        "account_batch_size": 4,
        "decode_tokens": 128,
        "decode_repeats": 11,
        "decode_prompt": "ROMEO:",
        "threads": 1,
    },
    "quick": {
        "eval_batches": 2,
        "eval_batch_size": 4,
        "account_windows": 2,
        "account_batch_size": 2,
        "decode_tokens": 16,
        "decode_repeats": 3,
        "decode_prompt": "ROMEO:",
        "threads": 1,
    },
}
# One CPU thread by default: float reductions then add up in the same order on any machine, so
# --check can hold a tight tolerance, and timings do not collapse when OpenMP threads wait on a
# core another job holds (seen on the shared 2-core machines: a step up to 100x slower).

COLUMNS = (
    "name",
    "shakespeare_bpb",
    "shakespeare_loss",
    "shakespeare_tokens",
    "ptb_bpb",
    "ptb_loss",
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
    "dense_decode_tokens_per_s",
    "decode_speedup",
    "decode_baseline",
)
# Timings depend on the machine and its load: reported, never checked.
UNCHECKED = ("decode_tokens_per_s", "dense_decode_tokens_per_s", "decode_speedup", "decode_baseline")
TEXT_COLUMNS = ("name", "weight_quant", "act_quant", "sparsity", "train_corpus", "hardware", "checkpoint_sha256", "decode_baseline")


def describe_tolerance(column: str) -> str:
    relative, absolute = TOLERANCES.get(column, (0.0, 0.0))
    if not relative and not absolute:
        return "exact"
    return f"{relative:g} relative" if relative else f"{absolute:g} absolute"


def tolerance_summary() -> str:
    return (
        f"bpb and losses within {BPB_REL_TOL:g} relative, measured sparsities within {SPARSITY_ABS_TOL:g} absolute, "
        "counts, settings and checkpoint sha256 exactly"
    )
