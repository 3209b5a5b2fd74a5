"""Training-step throughput of zoo entries against the dense entry of the same size, in one process.

One step is forward, cross-entropy, backward and an AdamW update on a fixed random batch; the
target in ../shared/spec/benchmarks.md is bitnet-qsparse at most 1.3× the dense step time.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.bench.common import median_time, record
from zoo.models.decoder import Decoder
from zoo.registry import arch_from_yaml, list_models, model_config


def step_time(config, *, batch: int, seq: int, device: str, repeats: int) -> float:
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

    return median_time(step, warmup=2, repeats=repeats, device=device)


def run(device: str = "cpu", quick: bool = False, configs: list[str] | None = None) -> list[dict]:
    size = "small" if device.startswith("cuda") else "tiny"
    names = configs or [n for n in list_models() if n.endswith(f"-{size}")]
    batch, seq = (4, 128) if quick else (16, 256)
    repeats = 3 if quick else 7
    baseline_name = f"dense-{size}"
    baseline = step_time(model_config(baseline_name, max_seq_len=max(seq, 256)), batch=batch, seq=seq, device=device, repeats=repeats)
    records = []
    for name in names:
        config = arch_from_yaml(Path(name)) if name.endswith(".yaml") else model_config(name)
        config = config.replace(max_seq_len=max(seq, config.max_seq_len))
        seconds = baseline if name == baseline_name else step_time(config, batch=batch, seq=seq, device=device, repeats=repeats)
        records.append(
            record(
                "train_step",
                entry=Path(name).stem,
                batch=batch,
                seq=seq,
                tokens_per_s=batch * seq / seconds,
                time_s=seconds,
                baseline=baseline_name,
                baseline_s=baseline,
                slowdown=seconds / baseline,
                device=device,
            )
        )
    return records
