"""Writing the leaderboard: ``LEADERBOARD.md``, ``results.csv``, ``results.json`` and the Pareto
plots of quality against activated parameters and against weight bytes per token."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from board_spec import COLUMNS, OUTPUT_FILES, SITES, TOLERANCES, UNCHECKED, tolerance_summary


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(rows: list[dict], x_key: str, x_label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(r[x_key]) for r in rows]
    ys = [float(r["shakespeare_bpb"]) for r in rows]
    front = pareto_front(list(zip(xs, ys)))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    on_front = set(front)
    ax.scatter(
        [xs[i] for i in range(len(rows)) if i not in on_front],
        [ys[i] for i in range(len(rows)) if i not in on_front],
        color="tab:gray",
        label="entry",
        zorder=2,
    )
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], color="tab:red", label="Pareto front", zorder=3)
    ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="tab:red", alpha=0.6, zorder=1)
    for x, y, row in zip(xs, ys, rows):
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the extreme points
    ax.set_xlabel(x_label)
    ax.set_ylabel("bits per byte, Shakespeare test (lower is better)")
    ax.set_title(f"moezoo: quality vs {x_label.split(' (')[0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _count(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def markdown(rows: list[dict], settings: dict, env: dict) -> str:
    lines = [
        "# moezoo leaderboard",
        "",
        "Every checkpoint of the zoo's manifest, downloaded (sha256-verified) and measured by one code path, "
        "sorted by bits per byte on the Shakespeare test works (lower is better).",
        "",
        f"**How to regenerate:** `python leaderboard/regenerate.py` (add `--hub URL` for another hub, `--entries NAME ...` "
        f"for a subset); `python leaderboard/regenerate.py --check` re-measures with the recorded settings and fails if a "
        f"number differs beyond its tolerance ({tolerance_summary()}; decode tokens/s are not checked: timings vary).",
        "",
        "| # | entry | Shakespeare bpb | PTB bpb | params | non-emb | activated (share) | weight KB/token | held MB | input sparsity attn_in / attn_out / ffn_in / ffn_down | train tokens | steps | trained on | decode tok/s | × dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(rows, 1):
        sparsity = " / ".join(f"{100 * r[f'sparsity_{s}']:.1f}%" for s in SITES)
        lines.append(
            f"| {rank} | {r['name']} | {r['shakespeare_bpb']:.4f} | {r['ptb_bpb']:.4f} | {_count(r['total_params'])} | "
            f"{_count(r['non_embedding_params'])} | {_count(r['activated_params'])} ({100 * r['activated_fraction']:.1f}%) | "
            f"{r['weight_bytes_per_token'] / 1024:.1f} | {r['inference_bytes'] / 1e6:.2f} | {sparsity} | {_count(r['train_tokens'])} | {r['train_steps'] if r['train_steps'] is not None else '–'} | "
            f"{r['hardware'] or '–'} | {r['decode_tokens_per_s']:.1f} | {r['decode_speedup']:.2f} |"
        )
    tokens = sorted({(r["shakespeare_tokens"], r["ptb_tokens"]) for r in rows})
    token_text = "; ".join(f"{s:,} Shakespeare / {p:,} PTB tokens" for s, p in tokens)
    baselines = sorted({r["decode_baseline"] for r in rows})
    lines += [
        "",
        "## How each column is measured",
        "",
        f"- **bpb**: `zoo.eval.bpb.evaluate_model` on the test split, the first {settings['eval_batches']} batches of "
        f"{settings['eval_batch_size']} windows of `max_seq_len` tokens ({token_text} evaluated).",
        f"- **activated**: Q-Sparse §3.6, `Σ (1 − s_in) · params` over non-embedding linear weights (routed experts × their routed "
        f"share); `s_in` measured on the first {settings['account_windows']} windows of the Shakespeare validation split. Share = "
        "activated / non-embedding parameters.",
        "- **weight KB/token**: an accounting figure (Q-Sparse's counting): activated weights at 16 bits, or 2 bits plus scales "
        "when ternary; LM head at 16 bits and one embedding row.",
        "- **held MB**: bytes of every tensor the inference form (`zoo.create_model(..., inference=True)`) holds, measured: "
        "packed 2-bit ternary projections, full-precision weights in their stored dtype. bpb and decode speed are measured "
        "on this form; parameters and sparsity on the training form.",
        "- **train tokens, steps, trained on**: from each release's `metrics.json`.",
        f"- **decode tok/s**: greedy `zoo.generate` of the inference form, batch 1, {settings['decode_tokens']} new tokens after "
        f"{settings['decode_prompt']!r} (each new token through the compiled decode step), median of {settings['decode_repeats']} runs "
        f"interleaved with the dense entry of the same size ({', '.join(baselines)}) in its own inference form, the same engine: "
        "**× dense** = entry / dense tokens/s in the same run, what the entry's sparsity and bits buy. Not checked by `--check`.",
        f"- Everything is measured with {settings.get('threads') or 'the default number of'} torch CPU thread(s).",
        "",
        f"Measured on {env['device']}, torch {env['torch']}, commit {env['commit']}, {env['date']}.",
        "",
        "Plots: `pareto_activated.png` (activated parameters vs bpb), `pareto_bytes.png` (weight bytes per token vs bpb); "
        "the Pareto front is marked in red. Data: `results.csv`, `results.json`.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(rows: list[dict], out: Path, settings: dict) -> list[Path]:
    from zoo.bench.common import environment, pinned_threads

    out.mkdir(parents=True, exist_ok=True)
    with pinned_threads(settings.get("threads")):  # the device string names the thread count the numbers were taken with
        env = environment("cpu")
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "tolerance": {"columns": TOLERANCES, "otherwise": "exact", "unchecked": list(UNCHECKED)},
                "environment": env,
                "entries": rows,
            },
            indent=2,
        )
        + "\n"
    )
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    (out / "LEADERBOARD.md").write_text(markdown(rows, settings, env))
    pareto_plot(rows, "activated_params", "activated parameters per token (log)", out / "pareto_activated.png")
    pareto_plot(rows, "weight_bytes_per_token", "weight bytes read per token (log)", out / "pareto_bytes.png")
    return [out / name for name in OUTPUT_FILES]
