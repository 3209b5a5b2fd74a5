"""Regenerates the moezoo leaderboard: every zoo checkpoint measured by one code path.

    python leaderboard/regenerate.py [--entries NAME ...] [--check [--sample-blocks N]] [--out DIR]
                                     [--hub URL] [--quick] [--threads N] [--reuse-scores] [--no-progress]
    python leaderboard/regenerate.py --compare A B      # A - B from the committed blocks, nothing measured

For each checkpoint of the hub's manifest (or the entries named) the release is downloaded and
verified through :func:`zoo.hub.download`, then measured the same way (:mod:`board_measure`):

- the summed loss of every window of the Shakespeare and Penn Treebank test splits, per block of
  windows, for every seed of an entry (``<entry>-seed<k>`` checkpoints are seed k of ``<entry>``);
- from those blocks (:mod:`board_stats`): bits per byte (mean over seeds), a 95 % block-bootstrap
  interval with the measured seed noise, and the paired difference against dense of the same size;
- total, non-embedding and activated parameters and weight bytes read per token
  (:func:`zoo.models.accounting.account`) with the input sparsity of every Q-Sparse site measured
  on a fixed slice of the Shakespeare validation split (Q-Sparse, arXiv 2407.10969, §3.6), and
  the bytes the inference form holds;
- greedy decode tokens/s at tiny (trained weights) and small (random weights) against plain fp32
  dense of the same shape timed in the same run, interleaved.

Outputs (in ``--out``, default this folder): ``LEADERBOARD.md``, ``results.csv``,
``results.json``, ``blocks.json`` and the ``pareto_*.png`` plots.

``--check`` re-measures with the settings recorded in the committed ``results.json`` and exits
non-zero naming entry, column and both values when any number differs by more than its column's
tolerance (:data:`board_spec.TOLERANCES`); decode timings are not checked. With
``--sample-blocks N`` it re-measures only N blocks of every checkpoint (compared with
``blocks.json``) and recomputes every statistic from the committed blocks: minutes, not an hour.

``--reuse-scores`` takes the block scores of every checkpoint whose sha256 and scoring settings
(:data:`board_spec.SCORE_SETTINGS`) ``<out>/blocks.json`` already holds, and scores only the new or
changed ones: adding a seed or an entry costs its own scoring, not the whole board's (costs and
timings are measured afresh either way; ``--check`` re-scores regardless).

``--compare A B`` loads no model: it prints the paired difference of two entries on each test split
from ``blocks.json``, with its 95 % interval and verdict, as the board gives each entry against dense.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the board_* modules beside this script, also when a test loads it by path
    sys.path.insert(0, str(HERE))

from board_measure import Measured, measure  # noqa: E402
from board_report import write_outputs  # noqa: E402
from board_spec import (  # noqa: E402
    BLOCK_REL_TOL,
    COLUMNS,
    CORPORA,
    LIST_COLUMNS,
    OUTPUT_FILES,
    SCORE_SETTINGS,
    SETTINGS,
    TEXT_COLUMNS,
    TOLERANCES,
    UNCHECKED,
    describe_tolerance,
    replica_of,
    tolerance_summary,
)
from board_stats import compare_entries, summarize  # noqa: E402

from zoo.hub import trusted_manifest  # noqa: E402

__all__ = ["COLUMNS", "OUTPUT_FILES", "SETTINGS", "UNCHECKED", "assemble", "check", "compare", "main", "measure", "write_outputs"]


def assemble(measured: Measured, settings: dict) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The board's rows (sorted by bpb) and its shared statistics from one measurement."""
    stats, shared = summarize(measured.groups, measured.scores, settings)
    rows = []
    for entry, checkpoints in measured.groups.items():
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(measured.costs[entry])
        row.update(stats[entry])
        row["name"] = entry
        row["checkpoint_sha256"] = [measured.scores[c]["sha256"] for c in checkpoints]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["bpb"], r["name"])), shared


def restate(document: dict[str, Any], scores: dict[str, dict]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The board recomputed from committed measurements: every statistic from the blocks, every
    other column as committed (``--report-only``: no model is loaded)."""
    costs = {row["name"]: row for row in document["entries"]}  # the statistic columns are recomputed over these
    return assemble(Measured(groups_of(scores), costs, scores), document["settings"])


def committed_board(out: Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """``results.json`` and ``blocks.json``'s per-checkpoint scores from ``out``."""
    document = json.loads((out / "results.json").read_text())
    return document, json.loads((out / "blocks.json").read_text())["checkpoints"]


def groups_of(scores: dict[str, dict]) -> dict[str, list[str]]:
    """Entries and their checkpoints, seed 0 first, from ``blocks.json``'s checkpoint names."""
    groups: dict[str, list[str]] = {}
    for checkpoint in sorted(scores, key=lambda c: replica_of(c)[1]):
        groups.setdefault(replica_of(checkpoint)[0], []).append(checkpoint)
    return groups


def as_values(column: str, value: Any) -> list:
    """A cell as a list of values: list columns hold several (space-separated in the CSV)."""
    if value is None or value == "":
        return []
    if column in LIST_COLUMNS:
        return value.split() if isinstance(value, str) else list(value)
    return [value]


def differs(column: str, old: Any, new: Any) -> bool:
    old_values, new_values = as_values(column, old), as_values(column, new)
    if len(old_values) != len(new_values):
        return True
    relative, absolute = TOLERANCES.get(column, (0.0, 0.0))
    for a, b in zip(old_values, new_values):
        if column in TEXT_COLUMNS:
            if str(a) != str(b):
                return True
        elif not math.isclose(float(a), float(b), rel_tol=relative, abs_tol=absolute):
            return True
    return False


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
        for column in COLUMNS:
            if column in UNCHECKED or column == "name":
                continue
            if column not in row:
                problems.append(f"{source}: entry {name!r} has no column {column!r}")
                continue
            old, new = row[column], fresh_by_name[name][column]
            try:
                changed = differs(column, old, new)
            except (TypeError, ValueError):
                problems.append(f"{source}: entry {name!r} column {column!r}: committed {old!r} is not a number")
                continue
            if changed:
                problems.append(
                    f"{source}: entry {name!r} column {column!r}: committed {old!r}, regenerated {new!r} (allowed: {describe_tolerance(column)})"
                )
    return problems


def compare_blocks(committed: dict, fresh: dict[str, dict]) -> list[str]:
    """Re-measured block sums (all, or a sample) against ``blocks.json``."""
    problems = []
    for checkpoint, scores in fresh.items():
        old = committed.get(checkpoint)
        if old is None:
            problems.append(f"blocks.json: checkpoint {checkpoint!r} is missing")
            continue
        if old["sha256"] != scores["sha256"]:
            problems.append(f"blocks.json: checkpoint {checkpoint!r} sha256: committed {old['sha256']}, hub {scores['sha256']}")
        for corpus in CORPORA:
            new = scores[corpus]
            measured = dict(enumerate(new["nll"])) if "nll" in new else new
            if "nll" in new and len(new["nll"]) != len(old[corpus]["nll"]):
                problems.append(
                    f"blocks.json: {checkpoint!r} {corpus}: committed {len(old[corpus]['nll'])} blocks, re-measured {len(new['nll'])}"
                )
                continue
            for block, value in measured.items():
                before = old[corpus]["nll"][int(block)]
                if not math.isclose(before, value, rel_tol=BLOCK_REL_TOL):
                    problems.append(
                        f"blocks.json: {checkpoint!r} {corpus} block {block}: committed {before!r}, re-measured {value!r} "
                        f"(allowed: {BLOCK_REL_TOL:g} relative)"
                    )
    return problems


def spread(count: int, chosen: int) -> list[int]:
    """``chosen`` block indices spread evenly over ``count`` blocks, the first and last included."""
    if chosen >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(chosen - 1, 1)) for i in range(chosen)})


def check(out: Path, hub: str | None, names: list[str] | None, progress: bool, sample_blocks: int | None) -> int:
    results, blocks_path = out / "results.json", out / "blocks.json"
    for path in (results, blocks_path):
        if not path.is_file():
            print(f"check: no committed {path}; run without --check first", file=sys.stderr)
            return 2
    committed, committed_blocks = committed_board(out)
    settings = committed["settings"]
    if not names:
        names = [r["name"] for r in committed["entries"]]
        on_hub = sorted(trusted_manifest(hub)["checkpoints"])
        names += [n for n in on_hub if n not in names]  # a published checkpoint missing from the board fails the check
    what = f"{sample_blocks} blocks per split of every checkpoint" if sample_blocks else "everything"
    print(f"check: re-measuring {what} of {len(names)} entries with the committed settings ({settings.get('mode', '?')})", file=sys.stderr)
    sample = None
    if sample_blocks:
        sample = {
            checkpoint: {
                corpus: {"windows": info[corpus]["windows"], "blocks": spread(len(info[corpus]["nll"]), sample_blocks)}
                for corpus in CORPORA
            }
            for checkpoint, info in committed_blocks.items()
        }
    try:
        measured = measure(names, hub, settings, progress=progress, timing=False, sample=sample)
    except ValueError as error:  # e.g. a published checkpoint without committed blocks
        print(f"check FAILED: {error}", file=sys.stderr)
        return 1
    # the entries named, and the dense baselines their differences need
    committed_rows = [r for r in committed["entries"] if r["name"] in measured.groups]
    problems = compare_blocks(committed_blocks, measured.scores)
    if sample_blocks:
        # every statistic recomputed from the committed blocks (their sample was just re-measured)
        measured.scores = {c: committed_blocks[c] for c in measured.scores}
    fresh, _ = assemble(measured, settings)
    problems += compare(committed_rows, fresh, "results.json")
    csv_path = out / "results.csv"
    if csv_path.is_file():
        with csv_path.open(newline="") as handle:
            csv_rows = [r for r in csv.DictReader(handle) if r.get("name") in measured.groups]
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
        f"check passed: {len(fresh)} entries x {checked} columns agree ({tolerance_summary()}) (decode timings are not checked: they vary)"
    )
    return 0


def reusable_scores(out: Path, settings: dict) -> dict[str, dict]:
    """``<out>/blocks.json``'s checkpoint scores if they were made with ``settings``' scoring
    settings (empty otherwise: nothing is reused across a change of windows or blocks)."""
    path = out / "blocks.json"
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
        made_with, checkpoints = previous["settings"], previous["checkpoints"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected the blocks.json regenerate.py writes ({error!r}); delete it or drop --reuse-scores") from None
    if any(made_with.get(key) != settings[key] for key in SCORE_SETTINGS):
        print(f"--reuse-scores: {path} was scored with other settings; scoring every checkpoint", file=sys.stderr)
        return {}
    return checkpoints


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="+", metavar="NAME", help="checkpoints to measure (default: every one in the manifest)")
    parser.add_argument(
        "--check", action="store_true", help="re-measure and fail if a committed number differs beyond its column's tolerance"
    )
    parser.add_argument(
        "--sample-blocks",
        type=int,
        default=None,
        metavar="N",
        help="with --check: re-measure N blocks of each split of every checkpoint, recompute the statistics from blocks.json",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the outputs (default: leaderboard/)")
    parser.add_argument("--hub", default=None, help="hub URL (default: $ZOO_HUB or the shipped store)")
    parser.add_argument("--quick", action="store_true", help="smaller evaluation and timing budgets (tests, smoke runs)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads while measuring (0: torch's default); recorded for --check"
    )
    parser.add_argument(
        "--reuse-scores",
        action="store_true",
        help="score only checkpoints whose sha256 (or scoring settings) differ from <out>/blocks.json's",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="measure nothing: print A - B on each test split from blocks.json (paired interval and verdict)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--report-only", action="store_true", help="measure nothing: rewrite the report and plots from results.json and blocks.json"
    )
    args = parser.parse_args(argv)
    progress = not args.no_progress
    if args.sample_blocks is not None and (not args.check or args.sample_blocks < 1):
        print(f"error: --sample-blocks needs --check and N >= 1, got {args.sample_blocks}", file=sys.stderr)
        return 2
    try:
        if args.compare:
            document, scores = committed_board(args.out)
            print("\n".join(compare_entries(*args.compare, groups_of(scores), scores, document["settings"])))
            return 0
        if args.report_only:
            document, scores = committed_board(args.out)
            rows, shared = restate(document, scores)
            written = write_outputs(rows, args.out, document["settings"], shared, scores, document["environment"])
            print("rewrote " + ", ".join(str(p) for p in written) + " from the committed measurements")
            return 0
        if args.check:
            return check(args.out, args.hub, args.entries, progress, args.sample_blocks)
        mode = "quick" if args.quick else "full"
        settings = {"mode": mode, **SETTINGS[mode], "threads": args.threads}
        names = args.entries or sorted(trusted_manifest(args.hub)["checkpoints"])
        if not names:
            print("no checkpoints in the manifest: nothing to measure", file=sys.stderr)
            return 2
        reuse = reusable_scores(args.out, settings) if args.reuse_scores else None
        measured = measure(names, args.hub, settings, progress=progress, reuse=reuse)
        rows, shared = assemble(measured, settings)
        written = write_outputs(rows, args.out, settings, shared, measured.scores)
    except (KeyError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(rows)} entries measured; wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
