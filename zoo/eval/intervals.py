"""How sure a bits-per-byte number is: a block bootstrap over the test text, with seed noise.

A test split is one long text, so neighbouring windows share a scene, a speaker, a topic: resampling
single windows would understate the spread. The moving-block idea of Künsch (1989, Annals of
Statistics 17(3)) handles such dependence; here the blocks are fixed and disjoint, consecutive
runs of windows (a few thousand tokens each), resampled with replacement (Efron & Tibshirani, An
Introduction to the Bootstrap, 1993: percentile intervals). A resample's bpb is the ratio of its
summed loss to its summed targets, so blocks of unequal length weigh what they hold.

Two models scored on the same blocks are compared *paired*: every resample draws the same blocks
for both, so text that is hard for both cancels out of their difference. Training noise (another
seed, another model) is not in the test text: where an entry was trained with several seeds its
bpb is their mean, and each resample adds a draw of seed noise whose spread is the seed standard
deviation measured on the entries that have replicates (pooled), scaled by ``1/sqrt(seeds)``.
That standard deviation is itself an estimate, from few degrees of freedom (a handful of seeds), so
the draw is Student's t with those degrees of freedom times the estimate, not a normal: with 4
degrees of freedom t's 97.5 % quantile is 2.78 against the normal's 1.96, and a normal draw would
make the seed part of every interval 1.4x too narrow (the predictive distribution of a new seed's
deviation, Student 1908; any textbook on the t interval). Every random draw comes from numpy's
PCG64 with a fixed seed, so the intervals are the same on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_WINDOWS = 16  # windows per bootstrap block: 4,096 targets at 256 tokens per window
RESAMPLES = 2000
LEVEL = 0.95


def block_sums(values: Sequence[float], block: int) -> list[float]:
    """Sums of consecutive runs of ``block`` values (the last run may be shorter)."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return [float(math.fsum(values[i : i + block])) for i in range(0, len(values), block)]


@dataclass(frozen=True)
class BlockScores:
    """One entry's scores on one test split, per block: ``nll[seed][block]`` (summed nats) over
    ``tokens[block]`` targets; every seed is scored on the same blocks."""

    nll: np.ndarray  # [seeds, blocks], float64
    tokens: np.ndarray  # [blocks]
    bytes_per_token: float

    @classmethod
    def of(cls, nll: Sequence[Sequence[float]], tokens: Sequence[int], bytes_per_token: float) -> BlockScores:
        nll_array = np.asarray(nll, dtype=np.float64)
        token_array = np.asarray(tokens, dtype=np.float64)
        if nll_array.ndim != 2 or nll_array.shape[0] < 1 or nll_array.shape[1] != token_array.shape[0] or token_array.shape[0] < 1:
            raise ValueError(
                f"block scores: expected nll [seeds, {token_array.shape[0]}] for {token_array.shape[0]} blocks, got {nll_array.shape}"
            )
        return cls(nll_array, token_array, float(bytes_per_token))

    @property
    def seeds(self) -> int:
        return self.nll.shape[0]

    def seed_bpb(self) -> list[float]:
        """Each seed's bpb over the whole split."""
        return [float(v) for v in self.nll.sum(axis=1) / self.tokens.sum() / math.log(2) / self.bytes_per_token]

    def bpb(self) -> float:
        """The mean over seeds."""
        return float(np.mean(self.seed_bpb()))

    def resampled_bpb(self, picks: np.ndarray) -> np.ndarray:
        """Seed-mean bpb of each resample; ``picks[r]`` lists the block indices of resample ``r``."""
        nll = self.nll[:, picks].sum(axis=2).mean(axis=0)  # [resamples]
        return nll / self.tokens[picks].sum(axis=1) / math.log(2) / self.bytes_per_token


def block_picks(blocks: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, blocks]`` block indices drawn with replacement, the same for every entry
    scored on these blocks (that is what pairs two entries' resamples)."""
    return np.random.default_rng(seed).integers(0, blocks, size=(resamples, blocks))


@dataclass(frozen=True)
class SeedNoise:
    """A seed standard deviation and the degrees of freedom it was estimated from: the two travel
    together, so no interval can add seed noise without knowing how uncertain its spread is."""

    sd: float
    dof: int

    def __post_init__(self) -> None:
        if not (self.sd >= 0 and self.dof >= 1):
            raise ValueError(f"seed noise: needs sd >= 0 and at least 1 degree of freedom, got sd={self.sd}, dof={self.dof}")

    def draws(self, resamples: int, scale: float, seed: int) -> np.ndarray:
        """``resamples`` draws of ``scale · sd · t(dof)``, from their own stream (so adding seed
        noise does not change which blocks are drawn)."""
        return np.random.default_rng([seed, 1]).standard_t(self.dof, size=resamples) * self.sd * scale


def pooled_seed_noise(seed_values: Sequence[Sequence[float]]) -> SeedNoise | None:
    """The pooled seed noise of the groups that have replicates, or None where none has."""
    sd, dof = pooled_seed_sd(seed_values)
    return SeedNoise(sd, dof) if sd is not None else None


def pooled_seed_sd(seed_values: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled standard deviation across seeds of the groups that have at least two, and its
    degrees of freedom (``None, 0`` when no group has replicates)."""
    squares, dof = 0.0, 0
    for values in seed_values:
        if len(values) >= 2:
            array = np.asarray(values, dtype=np.float64)
            squares += float(((array - array.mean()) ** 2).sum())
            dof += len(values) - 1
    return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(samples, tail)), float(np.percentile(samples, 100.0 - tail))


def _seed_noise(resamples: int, noise: SeedNoise | None, scale: float, seed: int) -> np.ndarray:
    return np.zeros(resamples) if noise is None else noise.draws(resamples, scale, seed)


def bpb_interval(
    scores: BlockScores, picks: np.ndarray, *, seed_noise: SeedNoise | None = None, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the entry's (seed-mean) bpb: test blocks resampled, plus seed noise."""
    samples = scores.resampled_bpb(picks) + _seed_noise(len(picks), seed_noise, 1.0 / math.sqrt(scores.seeds), seed)
    return _percentile_interval(samples, level)


def paired_difference(
    entry: BlockScores,
    baseline: BlockScores,
    picks: np.ndarray,
    *,
    seed_noise: SeedNoise | None = None,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """``bpb(entry) − bpb(baseline)`` and its percentile interval, both resampled on the same blocks."""
    if entry.tokens.shape != baseline.tokens.shape or not np.array_equal(entry.tokens, baseline.tokens):
        raise ValueError("paired difference: the two entries were not scored on the same blocks")
    scale = math.sqrt(1.0 / entry.seeds + 1.0 / baseline.seeds)
    samples = entry.resampled_bpb(picks) - baseline.resampled_bpb(picks) + _seed_noise(len(picks), seed_noise, scale, seed)
    return entry.bpb() - baseline.bpb(), _percentile_interval(samples, level)


def verdict(interval: tuple[float, float]) -> str:
    """``better`` / ``worse`` when the interval of a bpb difference excludes zero, else ``not significant``."""
    low, high = interval
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "not significant"
