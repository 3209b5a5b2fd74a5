"""The leaderboard's statistics from per-block scores: each entry's bits per byte (mean over its
seeds), a 95 % interval from a block bootstrap of the test text plus the measured seed noise, and its
paired difference against the dense entry of the same size, with a verdict (:mod:`zoo.eval.intervals`)."""

from __future__ import annotations

from typing import Any

from board_spec import CORPUS_COLUMNS, size_of

from zoo.eval.intervals import (
    BlockScores,
    SeedNoise,
    block_picks,
    bpb_interval,
    paired_difference,
    pooled_seed_noise,
    pooled_seed_sd,
    verdict,
)


def block_scores(checkpoints: list[str], scores: dict[str, dict], corpus: str) -> BlockScores:
    first = scores[checkpoints[0]][corpus]
    for name in checkpoints[1:]:
        if scores[name][corpus]["tokens"] != first["tokens"]:
            raise ValueError(f"{name}: its {corpus} blocks differ from {checkpoints[0]}'s (another tokenizer or sequence length?)")
    return BlockScores.of([scores[name][corpus]["nll"] for name in checkpoints], first["tokens"], first["bytes_per_token"])


def corpus_statistics(
    groups: dict[str, list[str]], scores: dict[str, dict], corpus: str, settings: dict
) -> tuple[dict[str, BlockScores], SeedNoise | None, Any]:
    """Each entry's block scores on ``corpus``, the pooled seed noise (sd and its degrees of freedom,
    drawn as a t) and the bootstrap's block picks, shared by every interval and difference on that split."""
    by_entry = {entry: block_scores(checkpoints, scores, corpus) for entry, checkpoints in groups.items()}
    # Seed noise is measured where an entry has replicates, and applied to every entry: the
    # assumption (stated on the board) is that seeds spread every recipe about equally.
    noise = pooled_seed_noise([s.seed_bpb() for s in by_entry.values()])
    blocks = {s.tokens.shape[0] for s in by_entry.values()}
    if len(blocks) != 1:
        raise ValueError(f"{corpus}: entries were scored on different numbers of blocks {sorted(blocks)}")
    return by_entry, noise, block_picks(blocks.pop(), settings["bootstrap_resamples"], settings["bootstrap_seed"])


def difference(entry: BlockScores, other: BlockScores, picks, noise: SeedNoise | None, settings: dict) -> tuple[float, list[float], str]:
    """``entry − other`` bpb, paired on the same blocks, its 95 % interval and the verdict."""
    value, interval = paired_difference(entry, other, picks, seed_noise=noise, seed=settings["bootstrap_seed"])
    said = verdict(interval)
    if noise is None and said != "not significant":
        said += " (text noise only)"  # no entry has replicates: another seed could undo it
    return value, list(interval), said


def summarize(groups: dict[str, list[str]], scores: dict[str, dict], settings: dict) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Statistic columns per entry, and what the whole board shares (the pooled seed noise)."""
    columns: dict[str, dict[str, Any]] = {entry: {"seeds": len(names)} for entry, names in groups.items()}
    shared: dict[str, Any] = {}
    for corpus, name in CORPUS_COLUMNS.items():
        by_entry, noise, picks = corpus_statistics(groups, scores, corpus, settings)
        shared[corpus] = {
            "seed_sd": noise.sd if noise else None,
            "seed_sd_dof": noise.dof if noise else 0,
            "seed_noise_draw": f"student_t({noise.dof})" if noise else None,
        }
        for entry, entry_scores in by_entry.items():
            row = columns[entry]
            row[name["bpb"]] = entry_scores.bpb()
            row[name["ci"]] = list(bpb_interval(entry_scores, picks, seed_noise=noise, seed=settings["bootstrap_seed"]))
            row[name["seeds"]] = entry_scores.seed_bpb()
            row[name["tokens"]] = int(entry_scores.tokens.sum())
            if corpus == "shakespeare":
                row["seed_sd"] = pooled_seed_sd([entry_scores.seed_bpb()])[0]  # this entry's own spread
            baseline = f"dense-{size_of(entry)}"
            if baseline == entry or baseline not in by_entry:
                row[name["diff"]], row[name["diff_ci"]] = None, None
                row[name["verdict"]] = "baseline" if baseline == entry else "no baseline"
                continue
            row[name["diff"]], row[name["diff_ci"]], row[name["verdict"]] = difference(
                entry_scores, by_entry[baseline], picks, noise, settings
            )
    return columns, shared


def compare_entries(first: str, second: str, groups: dict[str, list[str]], scores: dict[str, dict], settings: dict) -> list[str]:
    """Lines stating ``first − second`` on each test split: paired difference, 95 % interval (test
    text and the board's pooled seed noise) and verdict."""
    missing = [e for e in (first, second) if e not in groups]
    if missing:
        raise ValueError(f"not on the board: {', '.join(missing)}; entries: {', '.join(sorted(groups))}")
    lines = [f"{first} - {second} in bits per byte (paired on the same blocks, 95 % interval):"]
    for corpus in CORPUS_COLUMNS:
        by_entry, noise, picks = corpus_statistics(groups, scores, corpus, settings)
        value, (low, high), said = difference(by_entry[first], by_entry[second], picks, noise, settings)
        spread = f"seed noise {noise.sd:.4f} x t({noise.dof})" if noise else "no seed noise measured"
        lines.append(f"  {corpus}: {value:+.4f} [{low:+.4f}, {high:+.4f}] {said}; {spread}")
    return lines
