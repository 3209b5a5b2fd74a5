"""Training-step throughput of zoo entries against the dense entry of the same size, in one process.

One step is forward, cross-entropy, backward and an AdamW update on a fixed random batch. All
entries and the baseline are timed round by round (A B C, A B C, ...), so machine drift hits each
alike. Target (issue 11): bitnet-qsparse-tiny at most 1.2× the dense-tiny step on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.bench.common import interleaved_median_times, pinned_threads, record
from zoo.hub.registry import arch_from_yaml, list_models, model_config
from zoo.models.decoder import Decoder


def train_step(config, *, batch: int, seq: int, device: str):
    """One training step of a fresh model on a fixed random batch, as a closure."""
    torch.manual_seed(0)
    model = Decoder(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1), device=device)

    def step():
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss = loss + sum(model.aux_losses().values(), torch.zeros((), device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


OPTIONS = ("device", "quick", "configs", "threads")  # the zoo bench options this benchmark honours


def run(device: str = "cpu", quick: bool = False, configs: list[str] | None = None, threads: int | None = None) -> list[dict]:
    """Every entry's step and the dense baseline's, timed round by round in one process
    (``threads``: torch's CPU thread count for the run, stated in each record's device)."""
    with pinned_threads(threads):
        return _run(device, quick, configs)


def _run(device: str, quick: bool, configs: list[str] | None) -> list[dict]:
    size = "small" if device.startswith("cuda") else "tiny"
    names = configs or [n for n in list_models() if n.endswith(f"-{size}")]
    batch, seq = (4, 128) if quick else (16, 256)
    repeats = 3 if quick else 7
    baseline_name = f"dense-{size}"
    steps = {}
    for name in dict.fromkeys([baseline_name, *names]):
        config = arch_from_yaml(Path(name)) if name.endswith(".yaml") else model_config(name)
        config = config.replace(max_seq_len=max(seq, config.max_seq_len))
        steps[Path(name).stem] = train_step(config, batch=batch, seq=seq, device=device)
    times = interleaved_median_times(steps, warmup=2, repeats=repeats, device=device)
    baseline = times[baseline_name]
    return [
        record(
            "train_step",
            entry=Path(name).stem,
            batch=batch,
            seq=seq,
            tokens_per_s=batch * seq / times[Path(name).stem],
            time_s=times[Path(name).stem],
            baseline=baseline_name,
            baseline_s=baseline,
            slowdown=times[Path(name).stem] / baseline,
            device=device,
        )
        for name in names
    ]
