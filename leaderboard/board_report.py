"""Writing the leaderboard: ``LEADERBOARD.md``, ``results.csv``, ``results.json``, ``blocks.json``
(the per-block scores behind every interval) and the Pareto plots of quality against activated
parameters, weight bytes per token and measured decode speed."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from board_spec import COLUMNS, LIST_COLUMNS, OUTPUT_FILES, SITES, TOLERANCES, UNCHECKED, tolerance_summary

from zoo.files import atomic_file, atomic_write_bytes


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(rows: list[dict], x_key: str, x_label: str, path: Path, *, higher_x_is_better: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get(x_key) is not None]
    xs = [float(r[x_key]) for r in rows]
    ys = [float(r["bpb"]) for r in rows]
    errors = [[y - r["bpb_ci95"][0] for y, r in zip(ys, rows)], [r["bpb_ci95"][1] - y for y, r in zip(ys, rows)]]
    sign = -1.0 if higher_x_is_better else 1.0
    front = pareto_front([(sign * x, y) for x, y in zip(xs, ys)])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.errorbar(xs, ys, yerr=errors, fmt="none", ecolor="tab:gray", alpha=0.6, capsize=3, zorder=1, label="95 % interval")
    on_front = set(front)
    ax.scatter(
        [xs[i] for i in range(len(rows)) if i not in on_front],
        [ys[i] for i in range(len(rows)) if i not in on_front],
        color="tab:gray",
        label="entry",
        zorder=2,
    )
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], color="tab:red", label="Pareto front", zorder=3)
    front_by_x = sorted(front, key=lambda i: xs[i])
    ax.step(
        [xs[i] for i in front_by_x], [ys[i] for i in front_by_x], where="pre" if higher_x_is_better else "post", color="tab:red", alpha=0.6
    )
    for x, y, row, offset in zip(xs, ys, rows, label_offsets(xs, ys)):
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the extreme points
    ax.set_xlabel(x_label)
    ax.set_ylabel("bits per byte, Shakespeare test (lower is better)")
    ax.set_title(f"moezoo: quality vs {x_label.split(' (')[0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as handle:
        fig.savefig(handle, dpi=120, format="png")
    plt.close(fig)


def label_offsets(xs: list[float], ys: list[float]) -> list[tuple[int, int]]:
    """Label offsets (points) for a log-x scatter: above-right, or below-right where the label above
    would print over that of an earlier point close in log x and in y (two entries of similar speed
    and bpb)."""
    above, below = (4, 4), (4, -11)
    y_span = (max(ys) - min(ys)) or 1.0
    offsets: list[tuple[int, int]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        taken = {offsets[j] for j in range(i) if abs(math.log10(x / xs[j])) < 0.08 and abs(y - ys[j]) < 0.05 * y_span}
        offsets.append(next((side for side in (above, below) if side not in taken), above))
    return offsets


def _count(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _interval(values: list[float] | None, digits: int = 4, signed: bool = False) -> str:
    if values is None:
        return "–"
    sign = "+" if signed else ""
    return f"[{values[0]:{sign}.{digits}f}, {values[1]:{sign}.{digits}f}]"


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(rows: list[dict], settings: dict, env: dict, shared: dict) -> str:
    noise = shared["shakespeare"]
    noise_text = (
        f"{noise['seed_sd']:.4f} bpb ({noise['seed_sd_dof']} degrees of freedom, drawn as sd × Student's t with those degrees of freedom)"
        if noise["seed_sd"] is not None
        else "not measured (no entry has two seeds): intervals hold test-text noise only"
    )
    budgets = sorted({(r["train_tokens"] or 0, r["train_steps"] or 0) for r in rows})
    budget_text = "; ".join(f"{_count(tokens)} tokens ({steps} steps)" for tokens, steps in budgets)
    lines = [
        "# moezoo leaderboard",
        "",
        "Every checkpoint of the zoo's manifest, downloaded (sha256-verified) and measured by one code path, ranked by bits per "
        "byte on the whole Shakespeare test split (lower is better), with 95 % intervals and the difference to dense of the same size.",
        "",
        f"**Training budget:** {budget_text} per entry. **Seed noise:** pooled standard deviation across seeds {noise_text}.",
        "",
        f"**How to regenerate:** `python leaderboard/regenerate.py` (add `--hub URL` for another hub, `--entries NAME ...` for a "
        f"subset); `python leaderboard/regenerate.py --check` re-measures everything with the recorded settings and fails if a "
        f"number differs beyond its tolerance ({tolerance_summary()}; decode timings are not checked); `--check --sample-blocks N` "
        "re-measures N blocks of each checkpoint and recomputes every statistic from `blocks.json` (what the tests run).",
        "",
        "## Quality",
        "",
        "| # | entry | seeds | Shakespeare bpb | 95 % interval | − dense-tiny (95 %) | | PTB bpb | 95 % interval | − dense-tiny (95 %) | |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(rows, 1):
        seeds = f"{r['seeds']} (sd {r['seed_sd']:.4f})" if r["seed_sd"] is not None else str(r["seeds"])
        lines.append(
            f"| {rank} | {r['name']} | {seeds} | {r['bpb']:.4f} | {_interval(r['bpb_ci95'])} | "
            f"{_number(r['bpb_vs_dense'], '+.4f')} {_interval(r['bpb_vs_dense_ci95'], signed=True)} | {r['vs_dense']} | "
            f"{r['ptb_bpb']:.4f} | {_interval(r['ptb_bpb_ci95'])} | "
            f"{_number(r['ptb_vs_dense'], '+.4f')} {_interval(r['ptb_vs_dense_ci95'], signed=True)} | {r['ptb_vs_dense_verdict']} |"
        )
    lines += [
        "",
        "## Cost and measured speed",
        "",
        "| entry | params | non-emb | activated (share) | weight KB/token | held MB | input sparsity attn_in / attn_out / ffn_in / ffn_down | "
        "train tokens | trained on | tiny decode tok/s | × fp32 dense | × dense engine | small decode tok/s | × fp32 dense | small held MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sparsity = " / ".join(f"{100 * r[f'sparsity_{s}']:.1f}%" for s in SITES)
        small_mb = None if r["small_inference_bytes"] is None else r["small_inference_bytes"] / 1e6
        lines.append(
            f"| {r['name']} | {_count(r['total_params'])} | {_count(r['non_embedding_params'])} | "
            f"{_count(r['activated_params'])} ({100 * r['activated_fraction']:.1f}%) | {r['weight_bytes_per_token'] / 1024:.1f} | "
            f"{r['inference_bytes'] / 1e6:.2f} | {sparsity} | {_count(r['train_tokens'])} | {r['hardware'] or '–'} | "
            f"{_number(r['decode_tokens_per_s'], '.1f')} | {_number(r['decode_speedup'], '.2f')} | {_number(r['decode_vs_dense_engine'], '.2f')} | "
            f"{_number(r['small_decode_tokens_per_s'], '.1f')} | {_number(r['small_decode_speedup'], '.2f')} | {_number(small_mb, '.1f')} |"
        )
    tokens = sorted({(r["shakespeare_tokens"], r["ptb_tokens"]) for r in rows})
    token_text = "; ".join(f"{s:,} Shakespeare / {p:,} PTB tokens" for s, p in tokens)
    windows = "every window" if settings["eval_windows"] is None else f"the first {settings['eval_windows']} windows"
    lines += [
        "",
        "## How each column is measured",
        "",
        f"- **bpb**: `zoo.eval.bpb.window_losses` on {windows} of `max_seq_len` tokens of each test split ({token_text}: the "
        "targets scored, every whole window; the byte tokenizer makes a token one byte, and the last partial window is left "
        "out), on the inference form; an entry trained with several seeds (`<entry>-seed<k>` checkpoints) scores the mean over "
        "its seeds. Windows are disjoint and each restarts its context, the convention of training (the models never see a "
        "context longer than a window) and the cheapest to score; a sliding evaluation that gives every target at least half a "
        "window of context would score every entry lower (by about 0.02 bpb for dense-tiny, by an independent re-scoring), "
        "so compare these numbers only with disjoint-window numbers.",
        "- **PTB**: every entry trains on Shakespeare only, so the PTB column measures transfer out of domain: every entry "
        "sits near 4.0 bpb, just under the 4.31 bits of PTB's single-byte (unigram) entropy, while bzip2 compresses the same "
        "text to 1.96: read it as a test of what carries over from Shakespeare, not as language modelling of PTB.",
        f"- **95 % interval**: percentile interval of {settings['bootstrap_resamples']} block-bootstrap resamples "
        f"(`zoo.eval.intervals`): the test text cut into fixed blocks of {settings['block_windows']} windows, blocks drawn with "
        "replacement, plus a draw of seed noise, the noise of training another seed: the pooled seed standard deviation / "
        "sqrt(seeds) times a Student's t with the pooled degrees of freedom, not a normal, because that standard deviation is "
        "itself estimated from a handful of seeds (with 4 degrees of freedom t's 97.5 % quantile is 2.78 against the "
        "normal's 1.96). The seed noise is measured on the entries with replicates and assumed the same for the others; an "
        "entry whose verdict against dense would differ between the two treatments is trained with 3 seeds of its own.",
        "- **− dense-tiny**: entry − dense bpb, both resampled on the same blocks (paired), with the seed noise of both: "
        "**better** / **worse** when the 95 % interval excludes zero, else **not significant**.",
        f"- **activated**: Q-Sparse §3.6, `Σ (1 − s_in) · params` over non-embedding linear weights (routed experts × their routed "
        f"share); `s_in` measured on the first {settings['account_windows']} windows of the Shakespeare validation split. Share = "
        "activated / non-embedding parameters.",
        "- **weight KB/token**: an accounting figure (Q-Sparse's counting): activated weights at 16 bits, or 2 bits plus scales "
        "when ternary; LM head at 16 bits and one embedding row.",
        "- **held MB**: bytes of every tensor the inference form (`zoo.create_model(..., inference=True)`) holds, measured: "
        "packed 2-bit ternary projections, full-precision weights in the model's dtype (fp32 here: the published bf16 "
        "matrices are loaded back into fp32).",
        "- **train tokens, trained on**: from each release's `metrics.json`.",
        f"- **decode tok/s**: greedy `zoo.generate` of the inference form, batch 1, after {settings['decode_prompt']!r} (each new "
        f"token through the compiled decode step), median of interleaved rounds in the same run as **plain fp32 dense** of the "
        f"same shape (training form, no engine; **× fp32 dense** = entry / that) and dense in the engine's inference form "
        f"(**× dense engine**: what the entry's sparsity and bits buy on the same engine). Tiny: the trained checkpoint, "
        f"{settings['decode_tokens']} tokens, {settings['decode_repeats']} rounds. Small: `<entry>-small` with random weights, "
        f"{settings['small_decode_tokens']} tokens, {settings['small_decode_repeats']} rounds. Not checked by `--check`.",
        f"- Everything is measured with {settings.get('threads') or 'the default number of'} torch CPU thread(s).",
        "",
        f"Measured on {env['device']}, torch {env['torch']}, commit {env['commit']}, {env['date']}.",
        "",
        "Plots: `pareto_activated.png` (activated parameters vs bpb), `pareto_bytes.png` (weight bytes per token vs bpb), "
        "`pareto_speed.png` (measured tiny decode speed × fp32 dense vs bpb); the Pareto front in red, 95 % intervals as bars. "
        "Data: `results.csv`, `results.json`, `blocks.json` (per-block scores).",
        "",
    ]
    return "\n".join(lines)


def csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def write_outputs(rows: list[dict], out: Path, settings: dict, shared: dict, scores: dict, env: dict | None = None) -> list[Path]:
    """Every output file; ``env`` (machine, commit, date) defaults to this run's."""
    from zoo.machine import environment, pinned_threads

    out.mkdir(parents=True, exist_ok=True)
    if env is None:
        with pinned_threads(settings.get("threads")):  # the device string names the thread count the numbers were taken with
            env = environment("cpu")
    tolerance = {"columns": TOLERANCES, "otherwise": "exact", "unchecked": list(UNCHECKED), "list_columns": list(LIST_COLUMNS)}
    document = {"settings": settings, "tolerance": tolerance, "environment": env, "statistics": shared, "entries": rows}
    # Each file appears whole or not at all: a run stopped while writing one leaves its previous version.
    atomic_write_bytes(out / "blocks.json", (json.dumps({"settings": settings, "checkpoints": scores}, indent=1) + "\n").encode())
    atomic_write_bytes(out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(row[k]) for k in COLUMNS})
    atomic_write_bytes(out / "results.csv", table.getvalue().encode())
    atomic_write_bytes(out / "LEADERBOARD.md", markdown(rows, settings, env, shared).encode())
    pareto_plot(rows, "activated_params", "activated parameters per token (log)", out / "pareto_activated.png")
    pareto_plot(rows, "weight_bytes_per_token", "weight bytes read per token (log)", out / "pareto_bytes.png")
    pareto_plot(
        rows,
        "decode_speedup",
        "decode speed, × plain fp32 dense-tiny (log; higher is better)",
        out / "pareto_speed.png",
        higher_x_is_better=True,
    )
    return [out / name for name in OUTPUT_FILES]
