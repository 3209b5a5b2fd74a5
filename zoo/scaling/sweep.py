"""The sweep of ``zoo scaling run``: model sizes × top-K sparsity × two precisions (full precision,
and BitNet b1.58 ternary with int8 activations) × seeds, each trained through the zoo's own
training path and recorded as one JSON line (Q-Sparse, arXiv 2407.10969, §4). Two or more seeds per
setting give the seed-noise estimate of :mod:`zoo.scaling.noise`."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PRECISIONS = {
    # precision name -> the zoo config whose recipe it trains with (lr, schedule, FFN, quantisation)
    "fp": "qsparse-tiny",
    "b1.58": "bitnet-qsparse-tiny",
}
DEFAULT_DIMS = (48, 80, 112, 160)
DEFAULT_K_RATIOS = (1.0, 0.7, 0.5, 0.3)
DEFAULT_SEEDS = (1337, 1338)  # two seeds per setting: the fewest that measure seed noise


def leaderboard_dir() -> Path:
    """A source checkout's ``leaderboard/`` (where the committed sweep and its fit live)."""
    from zoo.machine import SOURCE_ROOT

    return SOURCE_ROOT / "leaderboard"


def default_sweep_path() -> Path:
    """``./scaling/sweep.jsonl`` under the working directory (the committed sweep lives in
    ``leaderboard/scaling/``; pass it explicitly to refit or extend it)."""
    from zoo.bench.common import default_output

    return default_output("scaling") / "sweep.jsonl"


# ============================================================================= the sweep


def run_key(record: dict[str, Any]) -> tuple:
    """What makes two runs the same experiment (a resumed sweep skips runs already recorded)."""
    names = ("precision", "dim", "n_layers", "ffn_dim", "n_heads", "k_ratio", "steps", "batch_size", "seq_len", "corpus", "seed")
    return tuple(record.get(name) for name in names)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
    return records


def check_resumable(out: Path, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of ``out`` a resumed sweep may keep. Runs recorded before the sweep recorded
    ``sub_norm`` cannot be told apart from the new ones (the first committed sweep trained b1.58
    without sub-norms): resuming over them would leave a file ``zoo scaling fit`` refuses, found
    out only after the whole sweep has trained."""
    records = read_jsonl(out)
    planned = {plan["precision"] for plan in plans}
    old = [r for r in records if r.get("precision") in planned and "sub_norm" not in r]
    if old:
        raise ValueError(
            f"scaling sweep: {out} holds {len(old)} runs without a sub_norm field (e.g. {old[0].get('run')}), recorded before "
            "the sweep recorded BitNet sub-norms; move the file aside and rerun, or pass --no-resume to start it afresh"
        )
    return records


def fit_overrides(plan: dict[str, Any], root: Path, val_batches: int, accelerator: str) -> dict[str, Any]:
    """The training settings of one sweep point, over its precision's shipped config."""
    k = plan["k_ratio"]
    return {
        "model.arch.dim": plan["dim"],
        "model.arch.n_layers": plan["n_layers"],
        "model.arch.n_heads": plan["n_heads"],
        "model.arch.n_kv_heads": plan["n_heads"],
        "model.arch.ffn_dim": plan["ffn_dim"],
        "model.arch.max_seq_len": plan["seq_len"],
        # K = D keeps everything: the same function as no top-K, without paying for the sort.
        "model.arch.sparsity": "topk" if k < 1.0 else "none",
        "model.arch.k_ratio": k,
        "model.warmup_steps": max(1, plan["steps"] // 10),
        "sample.prompt": "",
        "sparsity_log.every_n_steps": 0,
        "data.corpus": plan["corpus"],
        "data.batch_size": plan["batch_size"],
        "seed_everything": plan["seed"],
        "trainer.max_steps": plan["steps"],
        "trainer.val_check_interval": plan["steps"],
        "trainer.limit_val_batches": val_batches,
        "trainer.num_sanity_val_steps": 0,
        "trainer.accelerator": accelerator,
        "trainer.devices": 1,
        "trainer.logger": False,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.default_root_dir": str(root),
    }


def train_one(
    plan: dict[str, Any],
    *,
    val_batches: int = 8,
    account_windows: int = 8,
    accelerator: str = "auto",
    extra_overrides: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Trains one sweep point through :func:`zoo.train.fit` and measures it; returns its record."""
    import torch

    from zoo.machine import device_name
    from zoo.models.accounting import account
    from zoo.train import fit

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-scaling-") as tmp:
        root = Path(work_dir) / plan["run"] if work_dir else Path(tmp)
        overrides = {**fit_overrides(plan, root, val_batches, accelerator), **(extra_overrides or {})}
        cli = fit(PRECISIONS[plan["precision"]], overrides)
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
        if "val/loss" not in metrics:
            raise RuntimeError(f"scaling run {plan['run']}: no val/loss was logged; is the validation split empty?")
        model = cli.model.model.eval()
        device = next(model.parameters()).device
        windows = cli.datamodule.dataset("validation")
        count = min(account_windows, len(windows))
        # N_a and S are measured on held-out tokens (Q-Sparse §3.6), never taken from k_ratio.
        inputs = torch.stack([windows[i] for i in range(count)])[:, :-1].to(device)
        stats = account(model, batches=list(inputs.split(max(1, plan["batch_size"]))))
        hardware = device_name(device)
        # Recorded from the trained model, not the recipe: a --set override or a change of the
        # config's default must show in the record, so runs of different architectures are never fitted as one.
        sub_norm = bool(model.config.has_sub_norm)
    N, N_a = stats.non_embedding_params, stats.activated_params
    return {
        **plan,
        "N": N,
        "N_a": N_a,
        "S": 1.0 - N_a / N,
        "S_nominal": 1.0 - plan["k_ratio"],
        "total_params": stats.total_params,
        "weight_bytes_per_token": stats.weight_bytes_per_token,
        "input_sparsity": stats.input_sparsity,
        "sub_norm": sub_norm,
        "val_loss": metrics["val/loss"],
        "val_bpb": metrics.get("val/bpb"),
        "tokens": plan["steps"] * plan["batch_size"] * plan["seq_len"],
        "seconds": round(time.perf_counter() - started, 2),
        "hardware": hardware,
    }


def sweep_plan(
    dims: Iterable[int] = DEFAULT_DIMS,
    k_ratios: Iterable[float] = DEFAULT_K_RATIOS,
    precisions: Iterable[str] = tuple(PRECISIONS),
    *,
    n_layers: int = 2,
    head_dim: int = 16,
    ffn_mult: int = 3,
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    corpus: str = "shakespeare",
    seeds: Iterable[int] = DEFAULT_SEEDS,
) -> list[dict[str, Any]]:
    """The runs of a sweep, smallest models first so a cut-short sweep still spans the sparsities,
    and a setting's seeds one after another so it has its replicates early."""
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"scaling sweep: seeds must be one or more distinct integers, got {seeds}")
    plans = []
    for dim in sorted(dims):
        if dim % head_dim or head_dim % 2:
            raise ValueError(f"scaling sweep: dim {dim} must be a multiple of head_dim {head_dim} (an even number)")
        for precision in precisions:
            if precision not in PRECISIONS:
                raise ValueError(f"scaling sweep: precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
            for k in k_ratios:
                if not 0.0 < k <= 1.0:
                    raise ValueError(f"scaling sweep: k_ratio must be in (0, 1], got {k}")
                plans.extend(
                    {
                        "run": f"{precision}-d{dim}-k{k:g}-s{seed}",
                        "precision": precision,
                        "recipe": f"configs/{PRECISIONS[precision]}.yaml",
                        "dim": dim,
                        "n_layers": n_layers,
                        "n_heads": dim // head_dim,
                        "ffn_dim": ffn_mult * dim,
                        "k_ratio": float(k),
                        "steps": steps,
                        "batch_size": batch_size,
                        "seq_len": seq_len,
                        "corpus": corpus,
                        "seed": seed,
                    }
                    for seed in seeds
                )
    return plans


def run_sweep(
    out: str | Path | None = None,
    *,
    dims: Iterable[int] = DEFAULT_DIMS,
    k_ratios: Iterable[float] = DEFAULT_K_RATIOS,
    precisions: Iterable[str] = tuple(PRECISIONS),
    n_layers: int = 2,
    head_dim: int = 16,
    ffn_mult: int = 3,
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    val_batches: int = 8,
    account_windows: int = 8,
    corpus: str = "shakespeare",
    seeds: Iterable[int] = DEFAULT_SEEDS,
    accelerator: str = "auto",
    extra_overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    work_dir: str | Path | None = None,
    threads: int | None = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Trains every point of the sweep and appends one JSON line per run to ``out``.

    Defaults (4 sizes × 4 sparsities × 2 precisions × 2 seeds = 64 runs of 300 steps × 16 × 128
    tokens, 2 layers, dims 48–160) take about 45–60 minutes on 2 free CPU cores. ``resume`` skips
    runs already in ``out`` with the same settings (seed included); it refuses a file holding runs
    of the planned precisions without a ``sub_norm`` field (move them aside first). ``threads``
    pins torch's CPU threads during the sweep (``None``: leave them). Returns the records of this
    sweep (old and new).
    """
    out = Path(out) if out is not None else default_sweep_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    plans = sweep_plan(
        dims,
        k_ratios,
        precisions,
        n_layers=n_layers,
        head_dim=head_dim,
        ffn_mult=ffn_mult,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        corpus=corpus,
        seeds=seeds,
    )
    done = {run_key(r): r for r in check_resumable(out, plans)} if resume else {}
    # Imported after the checks, so a refused plan or file answers in a moment instead of after Lightning's import.
    from tqdm.auto import tqdm

    import zoo.train  # noqa: F401  (Lightning sets its loggers' levels on import: import it before lowering them)
    from zoo.machine import pinned_threads

    if not resume and out.exists():
        out.unlink()
    records = []
    # Lightning's per-run banners (GPU available, tips) would bury the progress bar.
    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    # Models this small gain little from a second thread, and on a shared 2-core machine OpenMP
    # threads that spin-wait for a busy core made a training step up to 100x slower.
    try:
        with pinned_threads(threads):
            bar = tqdm(plans, desc="scaling sweep", unit="run", disable=not progress)
            for plan in bar:
                if run_key(plan) in done:
                    records.append(done[run_key(plan)])
                    continue
                bar.set_postfix_str(plan["run"])
                record = train_one(
                    plan,
                    val_batches=val_batches,
                    account_windows=account_windows,
                    accelerator=accelerator,
                    extra_overrides=extra_overrides,
                    work_dir=work_dir,
                )
                with out.open("a") as handle:
                    handle.write(json.dumps(record, sort_keys=True) + "\n")
                records.append(record)
            bar.close()
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return records
