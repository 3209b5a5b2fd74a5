"""Per-window scores (zoo.eval.bpb.window_losses) and the block-bootstrap intervals built on them
(zoo.eval.intervals): sums that add up to evaluate_model's, subsets equal to the full pass,
paired differences that cancel shared text noise, seed noise that widens intervals, and
intervals that cover the truth about as often as they claim."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.eval import evaluate_model
from zoo.eval.bpb import window_losses
from zoo.eval.intervals import (
    BlockScores,
    SeedNoise,
    block_picks,
    block_sums,
    bpb_interval,
    paired_difference,
    pooled_seed_sd,
    verdict,
)
from zoo.models import Decoder, ModelConfig
from zoo.tokenizer import ByteTokenizer


@pytest.fixture
def scored(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    text = tmp_path / "test.txt"
    text.write_text("".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(40)))
    torch.manual_seed(0)
    model = Decoder(ModelConfig(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32)).eval()
    return model, {"corpus": "text", "split": "test", "data_files": {"test": str(text)}}


def test_window_sums_are_the_per_window_loss(scored):
    model, data = scored
    result = window_losses(model, ByteTokenizer(), batch_size=4, **data)
    assert result.total_windows == len(result.windows) > 8 and set(result.tokens) == {32}
    tokens = torch.tensor(list(ByteTokenizer().encode(open(data["data_files"]["test"]).read())))
    for index in (0, 5, len(result.windows) - 1):  # an independent recomputation of three windows
        window = tokens[index * 32 : index * 32 + 33]
        with torch.no_grad():
            expected = F.cross_entropy(model(window[None, :-1])[0].float(), window[1:], reduction="sum")
        assert result.nll[index] == pytest.approx(float(expected), rel=1e-5)
    whole = evaluate_model(model, ByteTokenizer(), batch_size=4, **data)
    assert whole["tokens"] == sum(result.tokens) and whole["bpb"] == pytest.approx(result.bpb(), rel=1e-12)
    low, high = whole["bpb_ci95"]  # zoo eval's interval: blocks of 16 windows
    assert low < whole["bpb"] < high and whole["bootstrap_blocks"] == math.ceil(len(result.windows) / 16) >= 2


def test_a_subset_in_the_same_batches_gives_the_same_sums(scored):
    model, data = scored
    full = window_losses(model, ByteTokenizer(), batch_size=2, **data)
    picked = window_losses(model, ByteTokenizer(), batch_size=2, windows=[4, 5, 8, 9], **data)
    assert picked.windows == [4, 5, 8, 9]
    assert picked.nll == [full.nll[i] for i in (4, 5, 8, 9)]  # exactly: the same batches through the model
    first = window_losses(model, ByteTokenizer(), batch_size=2, max_windows=3, **data)
    assert first.windows == [0, 1, 2] and first.nll == pytest.approx(full.nll[:3], rel=1e-6)


def test_a_window_past_the_split_is_a_clear_error(scored):
    model, data = scored
    with pytest.raises(ValueError, match=r"window 999 does not exist"):
        window_losses(model, ByteTokenizer(), windows=[0, 999], **data)


def test_block_sums():
    assert block_sums([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [3.0, 7.0, 5.0]
    with pytest.raises(ValueError, match="block must be >= 1"):
        block_sums([1.0], 0)


def test_bpb_is_the_mean_over_seeds_of_loss_over_targets():
    scores = BlockScores.of([[2.0, 4.0], [4.0, 6.0]], [2, 4], bytes_per_token=1.0)
    assert scores.seeds == 2
    assert scores.seed_bpb() == pytest.approx([1.0 / math.log(2), 10 / 6 / math.log(2)])
    assert scores.bpb() == pytest.approx((1.0 + 10 / 6) / 2 / math.log(2))
    with pytest.raises(ValueError, match="expected nll"):
        BlockScores.of([[1.0, 2.0, 3.0]], [1, 1], 1.0)


def synthetic(rng, blocks=60, shift=0.0, seeds=1):
    """Blocks whose difficulty varies a lot (the text), the same for every model scored on them."""
    tokens = np.full(blocks, 4096)
    difficulty = rng.normal(1.8, 0.3, size=blocks) * tokens
    return tokens, difficulty, [difficulty + shift * tokens + rng.normal(0, 20, size=blocks) for _ in range(seeds)]


def test_pairing_cancels_what_both_models_find_hard():
    rng = np.random.default_rng(1)
    tokens, _, base_nll = synthetic(rng)
    baseline = BlockScores.of(base_nll, tokens, 1.0)
    better = BlockScores.of([base_nll[0] - 0.01 * tokens], tokens, 1.0)  # 0.01 nats/token better on every block
    picks = block_picks(len(tokens), 1000, seed=0)
    low, high = bpb_interval(baseline, picks)
    assert high - low > 0.1  # the text alone makes one model's bpb uncertain by far more than 0.01 ...
    difference, (d_low, d_high) = paired_difference(better, baseline, picks)
    expected = -0.01 / math.log(2)
    assert difference == pytest.approx(expected) and d_low == pytest.approx(expected) and d_high == pytest.approx(expected)
    assert verdict((d_low, d_high)) == "better"  # ... yet the paired difference is certain
    same, interval = paired_difference(baseline, baseline, picks)
    assert same == 0.0 and interval == (0.0, 0.0) and verdict(interval) == "not significant"


def test_seed_noise_widens_the_interval_by_about_its_size():
    rng = np.random.default_rng(2)
    tokens, _, nll = synthetic(rng, seeds=1)
    scores = BlockScores.of([nll[0]] * 1, tokens, 1.0)
    clean = BlockScores.of([np.full(len(tokens), 1.5 * 4096)], tokens, 1.0)  # no text noise at all
    picks = block_picks(len(tokens), 2000, seed=0)
    assert bpb_interval(clean, picks) == pytest.approx((1.5 / math.log(2),) * 2)
    low, high = bpb_interval(clean, picks, seed_noise=SeedNoise(0.05, dof=1000))  # t(1000): a normal
    assert high - low == pytest.approx(2 * 1.96 * 0.05, rel=0.1)
    narrow = bpb_interval(scores, picks)
    wide = bpb_interval(scores, picks, seed_noise=SeedNoise(0.05, dof=4))
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_intervals_cover_the_truth_about_as_often_as_they_claim():
    rng = np.random.default_rng(3)
    truth, covered, trials = 1.8, 0, 200
    for _ in range(trials):
        tokens = np.full(40, 4096)
        nll = rng.normal(truth, 0.3, size=40) * tokens
        low, high = bpb_interval(BlockScores.of([nll], tokens, 1.0 / math.log(2)), block_picks(40, 400, seed=int(rng.integers(1 << 30))))
        covered += low <= truth <= high
    assert 0.88 <= covered / trials <= 0.99


def test_pooled_seed_sd():
    sd, dof = pooled_seed_sd([[1.0, 2.0, 3.0], [5.0], [10.0, 12.0]])
    assert dof == 3 and sd == pytest.approx(math.sqrt((2.0 + 2.0) / 3))
    assert pooled_seed_sd([[1.0], [2.0]]) == (None, 0)


def test_picks_are_reproducible_and_shared():
    a, b = block_picks(7, 5, seed=4), block_picks(7, 5, seed=4)
    assert a.shape == (5, 7) and np.array_equal(a, b) and a.min() >= 0 and a.max() < 7
    assert verdict((0.1, 0.2)) == "worse" and verdict((-0.2, -0.1)) == "better"


def test_a_paired_difference_needs_the_same_blocks():
    a = BlockScores.of([[1.0, 2.0]], [1, 1], 1.0)
    b = BlockScores.of([[1.0, 2.0, 3.0]], [1, 1, 1], 1.0)
    with pytest.raises(ValueError, match="same blocks"):
        paired_difference(a, b, block_picks(2, 10))


@pytest.mark.parametrize("dof", [2, 4, 10])
def test_seed_noise_takes_the_t_quantile_of_its_degrees_of_freedom(dof):
    """A seed sd estimated from few seeds is uncertain itself: the seed part of an interval is
    sd · t(dof), not sd · normal (with 4 degrees of freedom 2.78 sd, not 1.96 sd, each side)."""
    from scipy import stats

    tokens = np.full(4, 4096)
    clean = BlockScores.of([np.full(4, 1.5 * 4096)], tokens, 1.0)  # no text noise: the interval is seed noise alone
    low, high = bpb_interval(clean, block_picks(4, 40_000, seed=0), seed_noise=SeedNoise(0.05, dof))
    half_width = (high - low) / 2
    assert half_width == pytest.approx(stats.t.ppf(0.975, dof) * 0.05, rel=0.05)
    assert half_width > 1.08 * stats.norm.ppf(0.975) * 0.05  # a normal draw gives 1.96 sd; t(10) 2.23 sd


def test_seed_noise_scales_a_difference_by_both_entries_seed_counts():
    tokens = np.full(4, 4096)
    one = BlockScores.of([np.full(4, 1.5 * 4096)], tokens, 1.0)
    three = BlockScores.of([np.full(4, 1.5 * 4096)] * 3, tokens, 1.0)
    noise = SeedNoise(0.05, dof=6)
    _, (low, high) = paired_difference(three, one, block_picks(4, 40_000), seed_noise=noise)
    _, (low1, high1) = paired_difference(one, one, block_picks(4, 40_000), seed_noise=noise)
    assert (high - low) / (high1 - low1) == pytest.approx(math.sqrt((1 / 3 + 1) / 2), rel=0.05)


def test_seed_noise_needs_degrees_of_freedom():
    with pytest.raises(ValueError, match="degree of freedom"):
        SeedNoise(0.05, dof=0)
