"""Regenerates the moezoo leaderboard: every zoo checkpoint measured by one code path.

    python leaderboard/regenerate.py [--entries NAME ...] [--check] [--out DIR] [--hub URL] [--quick]
                                     [--threads N] [--no-progress]

For each checkpoint of the hub's manifest (or those named) the release is downloaded and
verified through :func:`zoo.hub.download`, then measured the same way:

- bits per byte on the Shakespeare test works and on the Penn Treebank test split, over a fixed
  number of batches (:func:`zoo.eval.bpb.evaluate_model`; the tokens evaluated are recorded);
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

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the board_* modules beside this script, also when a test loads it by path
    sys.path.insert(0, str(HERE))

from board_measure import measure  # noqa: E402
from board_report import write_outputs  # noqa: E402
from board_spec import (  # noqa: E402
    COLUMNS,
    OUTPUT_FILES,
    SETTINGS,
    TEXT_COLUMNS,
    TOLERANCES,
    UNCHECKED,
    describe_tolerance,
    tolerance_summary,
)

from zoo.hub import trusted_manifest  # noqa: E402

__all__ = ["COLUMNS", "OUTPUT_FILES", "SETTINGS", "UNCHECKED", "check", "compare", "main", "measure", "write_outputs"]


def _as_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


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
        on_hub = sorted(trusted_manifest(hub)["checkpoints"])
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
        names = args.entries or sorted(trusted_manifest(args.hub)["checkpoints"])
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
