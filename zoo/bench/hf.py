"""Greedy decoding through transformers against the zoo's own inference form, on the same weights.

What a transformers user runs: ``zoo export-hf`` writes the folder, ``AutoModelForCausalLM.
from_pretrained(folder, trust_remote_code=True).generate(ids, max_new_tokens=64)`` decodes (the
remote-code class of :mod:`zoo.interop.modeling_moezoo`: BitNet b1.58 packed ternary weights,
arXiv 2402.17764, and Q-Sparse top-K inputs, arXiv 2407.10969, through moezoo's kernels, with a KV
cache). The baseline is :func:`zoo.generate` on the same entry's inference form. Both are timed in
one process, interleaved round by round, batch 1, a 16-token prompt; each record also says whether
the two produced the same tokens.
"""

from __future__ import annotations

import tempfile

import torch

from zoo.bench.common import interleaved_median_times, pinned_threads, record
from zoo.hub import load_manifest
from zoo.hub.registry import list_models

PROMPT_TOKENS = 16
OPTIONS = ("device", "quick", "configs", "threads")  # the zoo bench options this benchmark honours


def run(device: str = "cpu", quick: bool = False, configs: list[str] | None = None, threads: int | None = 1) -> list[dict]:
    """One record per entry: tokens/s through transformers and through zoo.generate, and their ratio."""
    from transformers import AutoModelForCausalLM

    import zoo
    from zoo.interop.export import export_hf

    if device != "cpu":
        raise ValueError(f"zoo bench hf runs on the CPU (the transformers class loads there), got --device {device}")
    published = set(load_manifest()["checkpoints"])
    names = configs or [n for n in list_models() if n.endswith("-tiny") and n in published]
    new_tokens = 8 if quick else 64
    records = []
    with pinned_threads(threads), tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = export_hf(name, f"{tmp}/{name}", "moezoo")
            through_hf = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True)
            engine = zoo.from_pretrained(name, inference=True)
            vocab = engine.config.vocab_size
            prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
            outputs = {}

            def hf_generate():
                outputs["transformers"] = through_hf.generate(prompt, max_new_tokens=new_tokens, do_sample=False)[0, PROMPT_TOKENS:]

            def zoo_generate():
                outputs["zoo"] = zoo.generate(engine, prompt, new_tokens, temperature=0)[0]

            seconds = interleaved_median_times(
                {"transformers": hf_generate, "zoo": zoo_generate}, warmup=1, repeats=3 if quick else 15, device=device
            )
            records.append(
                record(
                    "transformers_decode",
                    entry=name,
                    batch=1,
                    prompt_tokens=PROMPT_TOKENS,
                    new_tokens=new_tokens,
                    tokens_per_s=new_tokens / seconds["transformers"],
                    time_s=seconds["transformers"],
                    baseline="zoo.generate (inference form)",
                    baseline_s=seconds["zoo"],
                    baseline_tokens_per_s=new_tokens / seconds["zoo"],
                    same_tokens=outputs["transformers"].tolist() == outputs["zoo"].tolist(),
                    device=device,
                )
            )
    return records
