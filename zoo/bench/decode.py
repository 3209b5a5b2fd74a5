"""Greedy decoding speed of the zoo's inference engine against plain fp32 dense of the same size.

Batch 1, a 16-token prompt, the KV cache, :func:`zoo.generate` (what ``zoo generate`` runs). Each
entry is measured in its inference form (:mod:`zoo.models.inference`: ternary projections packed
at 2 bits, each new token through the compiled decode step, :mod:`zoo.models.inference.decode_step`); the
baseline is ``create_model("dense-<size>")`` as a user has it without the engine, in fp32. Each
record also gives the ratio to dense in its own inference form (the same engine) when that entry
is in the run: what the sparsity alone buys. All models of one size are timed in one process,
interleaved round by round. ``tiny`` entries use their shipped weights where the store has them
(speed of top-K and MoE depends on what the weights route and keep); ``small`` ones are random.
Each record also gives the bytes of tensors the inference model holds.
"""

from __future__ import annotations

import torch

from zoo.bench.common import interleaved_median_times, pinned_threads, record
from zoo.hub.registry import list_models
from zoo.models.inference import decode_step_for, tensor_bytes, to_inference

PROMPT_TOKENS = 16


def load_entry(name: str):
    """(training-form model, where its weights come from): shipped weights if published, else random."""
    import zoo
    from zoo.hub import load_manifest

    torch.manual_seed(0)
    if name in load_manifest()["checkpoints"]:
        return zoo.create_model(name, pretrained=True), "shipped"
    return zoo.create_model(name).eval(), "random"


OPTIONS = ("device", "quick", "configs", "threads")  # the zoo bench options this benchmark honours


def compiled_step_applies(model) -> bool:
    """Whether each new token of ``model`` goes through the compiled decode step (checked after a run)."""
    step = decode_step_for(model)
    return step is not None and step.unsupported is None


def run(device: str = "cpu", quick: bool = False, configs: list[str] | None = None, threads: int | None = 2) -> list[dict]:
    """One record per entry: tokens/s of its inference form, the same-run dense ratio, tensor bytes."""
    import zoo

    with pinned_threads(threads):
        names = configs or [n for n in list_models() if n.endswith(("-tiny", "-small"))]
        new_tokens = 8 if quick else 64
        records = []
        for size in ("tiny", "small"):
            # A tiny model decodes 64 tokens in ~0.3 s, where this shared machine's drift is ±15 %:
            # more rounds for a stable median (a small one takes seconds a round).
            repeats = 2 if quick else (15 if size == "tiny" else 5)
            chosen = [n for n in names if n.endswith(f"-{size}")]
            if not chosen:
                continue
            baseline_name = f"dense-{size}"
            torch.manual_seed(0)
            models = {f"{baseline_name} (plain fp32)": zoo.create_model(baseline_name).eval().to(device)}
            sources = {}
            for name in chosen:
                model, sources[name] = load_entry(name)
                models[name] = to_inference(model).to(device)
            vocab = next(iter(models.values())).config.vocab_size
            prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)).to(device)
            candidates = {label: (lambda m=m: zoo.generate(m, prompt, new_tokens, temperature=0)) for label, m in models.items()}
            seconds = interleaved_median_times(candidates, warmup=1, repeats=repeats, device=device)
            baseline_label = f"{baseline_name} (plain fp32)"
            # The engine-to-engine ratio too: against dense in its own inference form (the same
            # compiled decode step), which is how much the entry's sparsity alone buys.
            dense_engine_s = seconds.get(baseline_name)
            for name in chosen:
                records.append(
                    record(
                        "greedy_decode",
                        entry=name,
                        form="inference",
                        weights=sources[name],
                        batch=1,
                        prompt_tokens=PROMPT_TOKENS,
                        new_tokens=new_tokens,
                        tokens_per_s=new_tokens / seconds[name],
                        time_s=seconds[name],
                        baseline=baseline_label,
                        baseline_s=seconds[baseline_label],
                        baseline_tokens_per_s=new_tokens / seconds[baseline_label],
                        tensor_bytes=tensor_bytes(models[name]),
                        baseline_tensor_bytes=tensor_bytes(models[baseline_label]),
                        device=device,
                        dense_inference_s=dense_engine_s,
                        speedup_vs_dense_inference=dense_engine_s / seconds[name] if dense_engine_s else None,
                        compiled_decode_step=compiled_step_applies(models[name]),
                    )
                )
        return records
