"""Regenerates the moezoo leaderboard: every zoo checkpoint measured by one code path.

    python leaderboard/regenerate.py [--entries NAME ...] [--check] [--out DIR] [--hub URL] [--quick]
                                     [--threads N] [--no-progress]

For each checkpoint of the hub's manifest (or those named) the release is downloaded and
verified through :func:`zoo.hub.download`, then measured the same way:

- bits per byte on the Shakespeare test works and on the Penn Treebank test split, over a fixed
  number of batches (:func:`zoo.evaluate.evaluate_model`; the tokens evaluated are recorded);
- total, non-embedding and activated parameters and weight bytes read per token
  (:func:`zoo.models.accounting.account`), with the input sparsity of every Q-Sparse site
  measured on a fixed slice of the Shakespeare validation split. Activated parameters follow
  Q-Sparse (arXiv 2407.10969, §3.6); ternary weights count at 2 bits (BitNet b1.58,
  arXiv 2402.17764); routed experts count with their routed fraction (MegaBlocks-style MoE);
- greedy decode tokens/s on this machine, for the entry and for the dense entry of the same size
  timed in the same run, interleaved, so their ratio is meaningful even on a busy machine.

Outputs (in ``--out``, default this folder): ``LEADERBOARD.md``, ``results.csv``,
``results.json``, ``pareto_activated.png`` and ``pareto_bytes.png``.

``--check`` re-measures with the settings recorded in the committed ``results.json``, writes into
a temporary folder, and exits non-zero naming entry, column and both values when any number
differs by more than its column's tolerance (:data:`TOLERANCES`); decode timings are not checked.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from zoo.bench.common import pinned_threads  # noqa: E402

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


# ----------------------------------------------------------------------------- the manifest


def hub_manifest(hub: str | None) -> dict:
    """The manifest that :func:`zoo.hub.download` trusts for ``hub``: the hub's own, else the shipped one."""
    from zoo import hub as zoo_hub

    url = hub or zoo_hub.default_hub()
    # zoo.hub resolves manifests privately; reusing its reader keeps validation in one place.
    found = zoo_hub.fetch_hub_manifest(url, "(leaderboard)", zoo_hub.DEFAULT_TIMEOUT)
    return found[0] if found is not None else zoo_hub.load_manifest()


def size_of(name: str) -> str | None:
    """``tiny`` for ``qsparse-tiny``: the registry's naming is ``<entry>-<size>``."""
    from zoo.registry import SIZES

    tail = name.rsplit("-", 1)[-1]
    return tail if "-" in name and tail in SIZES else None


# ----------------------------------------------------------------------------- measurement


def accounting_batches(model, tokenizer, settings: dict) -> list[torch.Tensor]:
    """The fixed Shakespeare validation slice on which input sparsity is measured."""
    from zoo.data import ZooDataModule
    from zoo.evaluate import tokenizer_spec

    with tempfile.TemporaryDirectory() as tmp:
        data = ZooDataModule("shakespeare", tokenizer=tokenizer_spec(tokenizer, tmp), max_seq_len=model.config.max_seq_len)
        windows = data.dataset("validation")
        count = min(settings["account_windows"], len(windows))
        inputs = torch.stack([windows[i] for i in range(count)])[:, :-1]
    return list(inputs.split(settings["account_batch_size"]))


def measure_quality(name: str, model, tokenizer, metrics: dict, sha256: str | None, settings: dict) -> dict[str, Any]:
    """Every deterministic column of one entry (all but the decode timings)."""
    from zoo.evaluate import evaluate_model
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
            from zoo.release import load_release

            dense_model, dense_tokenizer, _ = load_release(download(dense_name, hub=self.hub, progress=False))
            self._cache[dense_name] = (dense_name, dense_model, dense_tokenizer)
            return self._cache[dense_name]
        key = ("twin", tuple(sorted(model.config.to_dict().items())))
        if key not in self._cache:
            self._cache[key] = (f"dense twin of {name} (random init)", dense_twin(model.config), tokenizer)
        return self._cache[key]


def measure(names: list[str], hub: str | None, settings: dict, *, progress: bool = True) -> list[dict[str, Any]]:
    """One row per entry, sorted by Shakespeare bpb; the same code path for every entry."""
    manifest = hub_manifest(hub)
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
    from zoo.release import load_release

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


# ----------------------------------------------------------------------------- outputs


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
        f"- **bpb**: `zoo.evaluate.evaluate_model` on the test split, the first {settings['eval_batches']} batches of "
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
    from zoo.bench.common import environment

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


# ----------------------------------------------------------------------------- --check


def _as_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


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


def compare(committed: list[dict], fresh: list[dict], source: str) -> list[str]:
    """Messages naming entry, column and both values for every difference beyond the tolerance."""
    problems = []
    fresh_by_name = {r["name"]: r for r in fresh}
    committed_names = [r.get("name") for r in committed]
    for name in sorted(set(fresh_by_name) - set(committed_names)):
        problems.append(f"{source}: entry {name!r} is missing from the committed leaderboard")
    for row in committed:
        name = row.get("name")
        if name not in fresh_by_name:
            problems.append(f"{source}: entry {name!r} is on the committed leaderboard but was not measured")
            continue
        new = fresh_by_name[name]
        for column in COLUMNS:
            if column in UNCHECKED or column == "name":
                continue
            if column not in row:
                problems.append(f"{source}: entry {name!r} has no column {column!r}")
                continue
            old_value, new_value = row[column], new[column]
            if column in TEXT_COLUMNS:
                if ("" if old_value is None else str(old_value)) != ("" if new_value is None else str(new_value)):
                    problems.append(f"{source}: entry {name!r} column {column!r}: committed {old_value!r}, regenerated {new_value!r}")
                continue
            try:
                a, b = _as_number(old_value), _as_number(new_value)
            except (TypeError, ValueError):
                problems.append(f"{source}: entry {name!r} column {column!r}: committed {old_value!r} is not a number")
                continue
            if a is None or b is None:
                if a is not b:
                    problems.append(f"{source}: entry {name!r} column {column!r}: committed {old_value!r}, regenerated {new_value!r}")
            elif not math.isclose(a, b, rel_tol=TOLERANCES.get(column, (0.0, 0.0))[0], abs_tol=TOLERANCES.get(column, (0.0, 0.0))[1]):
                problems.append(
                    f"{source}: entry {name!r} column {column!r}: committed {a!r}, regenerated {b!r} "
                    f"(difference {abs(a - b):.3g}; allowed: {describe_tolerance(column)})"
                )
    return problems


def check(out: Path, hub: str | None, names: list[str] | None, progress: bool) -> int:
    results = out / "results.json"
    if not results.is_file():
        print(f"check: no committed {results}; run without --check first", file=sys.stderr)
        return 2
    committed = json.loads(results.read_text())
    settings = committed["settings"]
    committed_rows = committed["entries"]
    if names:
        committed_rows = [r for r in committed_rows if r["name"] in names]
    else:
        names = [r["name"] for r in committed_rows]
        on_hub = sorted(hub_manifest(hub)["checkpoints"])
        names += [n for n in on_hub if n not in names]  # a published checkpoint missing from the board fails the check
    print(f"check: re-measuring {len(names)} entries with the committed settings ({settings.get('mode', '?')})", file=sys.stderr)
    fresh = measure(names, hub, settings, progress=progress)
    with tempfile.TemporaryDirectory(prefix="leaderboard-check-") as tmp:
        write_outputs(fresh, Path(tmp), settings)
        problems = compare(committed_rows, fresh, "results.json")
        csv_path = out / "results.csv"
        if csv_path.is_file():
            with csv_path.open(newline="") as handle:
                csv_rows = list(csv.DictReader(handle))
            if names:
                csv_rows = [r for r in csv_rows if r.get("name") in names]
            problems += compare(csv_rows, fresh, "results.csv")
        else:
            problems.append(f"results.csv: missing from {out}")
    checked = len(COLUMNS) - len(UNCHECKED) - 1
    if problems:
        print(f"check FAILED ({len(problems)} differences; {tolerance_summary()}):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"check passed: {len(fresh)} entries x {checked} columns agree ({tolerance_summary()}) "
        f"(decode tokens/s and the dense ratio are not checked: timings vary)"
    )
    return 0


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="+", metavar="NAME", help="checkpoints to measure (default: every one in the manifest)")
    parser.add_argument(
        "--check", action="store_true", help="re-measure and fail if a committed number differs beyond its column's tolerance"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the outputs (default: leaderboard/)")
    parser.add_argument("--hub", default=None, help="hub URL (default: $ZOO_HUB or the shipped store)")
    parser.add_argument("--quick", action="store_true", help="smaller evaluation and timing budgets (tests, smoke runs)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads while measuring (0: torch's default); recorded for --check"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    try:
        if args.check:
            return check(args.out, args.hub, args.entries, progress)
        mode = "quick" if args.quick else "full"
        settings = {"mode": mode, **SETTINGS[mode], "threads": args.threads}
        names = args.entries or sorted(hub_manifest(args.hub)["checkpoints"])
        if not names:
            print("no checkpoints in the manifest: nothing to measure", file=sys.stderr)
            return 2
        rows = measure(names, args.hub, settings, progress=progress)
        written = write_outputs(rows, args.out, settings)
    except (KeyError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} entries measured; wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
