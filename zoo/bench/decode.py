"""Greedy decoding throughput of zoo entries against the dense entry of the same size, in one process.

Tokens per second of :func:`zoo.models.generate.generate` with the KV cache at batch 1, the
path a user's ``zoo generate`` takes. Weights are random: speed does not depend on their values
except through the sparsity pattern, which top-K fixes per token.
"""
from __future__ import annotations

import torch

from zoo.bench.common import median_time, record
from zoo.models.decoder import Decoder
from zoo.models.generate import generate
from zoo.registry import list_models, model_config


def decode_time(config, *, new_tokens: int, device: str, repeats: int) -> float:
    torch.manual_seed(0)
    model = Decoder(config).to(device).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
    return median_time(lambda: generate(model, prompt, new_tokens, temperature=0.0), warmup=1, repeats=repeats, device=device)


def run(device: str = "cpu", quick: bool = False, configs: list[str] | None = None) -> list[dict]:
    size = "small" if device.startswith("cuda") else "tiny"
    names = configs or [n for n in list_models() if n.endswith(f"-{size}")]
    new_tokens, repeats = (16, 3) if quick else (64, 5)
    baseline_name = f"dense-{size}"
    baseline = decode_time(model_config(baseline_name), new_tokens=new_tokens, device=device, repeats=repeats)
    records = []
    for name in names:
        seconds = baseline if name == baseline_name else decode_time(model_config(name), new_tokens=new_tokens, device=device, repeats=repeats)
        records.append(
            record(
                "greedy_decode",
                entry=name,
                batch=1,
                new_tokens=new_tokens,
                tokens_per_s=new_tokens / seconds,
                time_s=seconds,
                baseline=baseline_name,
                baseline_s=baseline,
                device=device,
            )
        )
    return records
