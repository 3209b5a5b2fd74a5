"""``zoo scaling run`` and ``zoo scaling fit``: the command line over :mod:`zoo.scaling.sweep` and
:mod:`zoo.scaling.report`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zoo.scaling.noise import MAX_INTERVAL_WIDTH
from zoo.scaling.report import fit_and_write
from zoo.scaling.sweep import DEFAULT_DIMS, DEFAULT_K_RATIOS, DEFAULT_SEEDS, PRECISIONS, default_sweep_path, run_sweep


def _cmd_run(args: argparse.Namespace) -> int:
    extra = {}
    for setting in args.set:
        key, separator, value = setting.partition("=")
        if not separator or not key:
            print(f"zoo scaling run: error: --set expects KEY=VALUE (e.g. trainer.precision=bf16-mixed), got {setting!r}", file=sys.stderr)
            return 2
        extra[key.removeprefix("--")] = value
    records = run_sweep(
        args.out,
        dims=args.dims,
        k_ratios=args.k_ratios,
        precisions=args.precisions,
        n_layers=args.n_layers,
        head_dim=args.head_dim,
        ffn_mult=args.ffn_mult,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        val_batches=args.val_batches,
        corpus=args.corpus,
        seeds=args.seeds,
        accelerator=args.accelerator,
        extra_overrides=extra,
        resume=not args.no_resume,
        work_dir=args.keep_runs,
        threads=args.threads or None,
    )
    print(f"{len(records)} runs in {args.out or default_sweep_path()}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    fit = fit_and_write(
        args.sweep,
        args.out_dir,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        sparsity_key="S" if args.sparsity == "measured" else "S_nominal",
    )
    for precision, entry in fit["precisions"].items():
        c = entry["constants"]
        interval = entry.get("bootstrap", {}).get("S_star")
        ci = f" (95%: {100 * interval[0]:.1f}–{100 * interval[1]:.1f}%)" if interval else ""
        print(
            f"{precision}: {entry['n_runs']} runs at {entry['n_points']} points; E={c['E']:.4g} B={c['B']:.4g} C={c['C']:.4g} "
            f"alpha={c['alpha']:.4g} beta={c['beta']:.4g}; S* = {100 * entry['S_star']:.1f}%{ci}, N/N_a = {entry['total_over_activated']:.2f}"
        )
        sigma = entry["seed_noise_log_loss"]
        if sigma is None:
            print("  seed noise: no setting has two seeds; the interval resamples runs instead")
        else:
            lack, ratio = entry["lack_of_fit"], entry["rmse_over_seed_noise"]
            test = f", lack-of-fit F = {lack['F']:.2f} (p = {lack['p_value']:.2g})" if lack else ""
            print(
                f"  seed noise: sigma(log L) = {sigma:.4f} ({entry['seed_noise_dof']} dof, {entry['seed_replicated_points']} replicated points); "
                f"fit rmse = {entry['rmse_log_loss']:.4f}" + (f" = {ratio:.2f} x noise" if ratio is not None else "") + test
            )
        print(f"  {entry['S_star_verdict']}")
    out_dir = Path(args.out_dir) if args.out_dir else (Path(args.sweep) if args.sweep else default_sweep_path()).parent
    print(f"wrote {out_dir / 'fit.json'} and {out_dir / 'fit.png'}")
    return 0


def add_scaling_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``scaling run`` and ``scaling fit`` to the ``zoo`` command's subparsers."""
    parser = subparsers.add_parser("scaling", help="Q-Sparse inference-optimal scaling law: train a sweep, fit the law")
    sub = parser.add_subparsers(dest="scaling_command", metavar="{run,fit}")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    run = sub.add_parser(
        "run",
        help="train the sweep (sizes x sparsities x precisions); one JSON line per run",
        description=run_sweep.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON-lines file (default: ./scaling/sweep.jsonl; the committed sweep is leaderboard/scaling/sweep.jsonl)",
    )
    run.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS), help="model widths")
    run.add_argument("--k-ratios", type=float, nargs="+", default=list(DEFAULT_K_RATIOS), help="top-K kept fractions (1.0 = dense)")
    run.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    run.add_argument("--n-layers", type=int, default=2)
    run.add_argument("--head-dim", type=int, default=16)
    run.add_argument("--ffn-mult", type=int, default=3, help="ffn_dim = ffn_mult * dim")
    run.add_argument("--steps", type=int, default=300)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--seq-len", type=int, default=128)
    run.add_argument("--val-batches", type=int, default=8, help="validation batches for the final loss")
    run.add_argument("--corpus", default="shakespeare")
    run.add_argument(
        "--seeds",
        "--seed",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="training seeds, each setting trained once per seed; two or more measure seed noise (--seed N: one seed)",
    )
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    run.add_argument("--threads", type=int, default=1, help="torch CPU threads during the sweep (0: leave as is)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra training setting, a dotted zoo fit key, e.g. --set trainer.precision=bf16-mixed (repeatable)",
    )
    run.add_argument("--no-resume", action="store_true", help="start the file afresh instead of skipping recorded runs")
    run.add_argument("--keep-runs", type=Path, default=None, help="keep each run's checkpoints and release under this folder")
    run.set_defaults(func=_cmd_run)

    fit = sub.add_parser(
        "fit",
        help="fit L(N,S) per precision; write fit.json and fit.png",
        description="Fits L(N,S) per precision on every run, estimates seed noise from seed replicates, gives S* a 95% "
        "bootstrap interval and says whether the sweep determines it: only when the interval lies inside the measured "
        f"sparsities and is at most {MAX_INTERVAL_WIDTH:g} wide. Refuses a precision whose runs mix BitNet sub-norm settings.",
    )
    fit.add_argument(
        "--sweep",
        type=Path,
        default=None,
        help="JSON-lines file (default: ./scaling/sweep.jsonl; the committed sweep is leaderboard/scaling/sweep.jsonl)",
    )
    fit.add_argument("--out-dir", type=Path, default=None, help="where fit.json and fit.png go (default: beside the sweep)")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the 95%% S* interval (0: none)")
    fit.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    fit.add_argument(
        "--sparsity", choices=("measured", "nominal"), default="measured", help="S from measured activated parameters, or 1 - k_ratio"
    )
    fit.set_defaults(func=_cmd_fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.scaling run|fit ...`` (the same commands as ``zoo scaling``)."""
    parser = argparse.ArgumentParser(prog="python -m zoo.scaling")
    add_scaling_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scaling", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # The same one-line errors as `zoo scaling`.
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
