"""The ``zoo`` command: LightningCLI's ``fit/validate/test/predict`` plus the zoo's own subcommands.

``zoo fit --config configs/<entry>-<size>.yaml`` trains; ``zoo list``, ``zoo generate``,
``zoo export``, ``zoo download``, ``zoo eval`` and ``zoo bench`` are plain argparse commands.
Everything heavy (Lightning, Triton, datasets) is imported inside the command that needs it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _format_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.models.accounting import account, meta_model
    from zoo.registry import list_models, model_config

    rows = []
    for name in list_models():
        stats = account(meta_model(model_config(name)))
        rows.append(
            {
                "name": name,
                "total_params": stats.total_params,
                "non_embedding_params": stats.non_embedding_params,
                "activated_params": round(stats.activated_params),
                "weight_bytes_per_token": round(stats.weight_bytes_per_token),
                "basis": stats.basis,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "total", "non-emb", "activated*", "weight MB/token")
    table = [header] + [
        (
            r["name"],
            _format_count(r["total_params"]),
            _format_count(r["non_embedding_params"]),
            _format_count(r["activated_params"]),
            f"{r['weight_bytes_per_token'] / 1e6:.3f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\n* activated parameters per token (Q-Sparse §3.6) from the configured top-K alone; "
          "measured values on data are in leaderboard/LEADERBOARD.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="moezoo: sparse decoder LLMs. Training: zoo {fit,validate,test,predict} --config configs/<entry>-<size>.yaml "
        "(LightningCLI; see zoo fit --help).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list the registered zoo models with parameter counts")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_list)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (zoo {name} --help for its options)", add_help=False)
    return parser


def run_lightning(argv: Sequence[str]) -> int:
    from zoo.lit import run_lightning_cli

    run_lightning_cli(list(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return run_lightning(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
