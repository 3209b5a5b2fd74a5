"""``zoo bench peer``: the zoo's engine against llama.cpp, what a user of ternary (BitNet b1.58,
arXiv 2402.17764) or dense models runs instead, on the same weights and the same threads.

Each shape is built once with random weights, written to GGUF (:mod:`zoo.interop.gguf`: TQ2_0
for ternary weights, F32 for full precision) and timed round by round, the zoo's inference form
and llama.cpp's ``llama-bench`` alternating, so that drift of the machine hits both alike:

- decode: ``n_gen`` greedy tokens, batch 1 (``zoo.generate`` through the compiled decode step;
  ``llama-bench -p 0 -n n_gen``), tokens/s as the median over the rounds;
- prefill: a prompt of ``n_prompt`` tokens as ``zoo.generate`` takes it in (``zoo.models.generate.prefill``:
  the modules' batched GEMMs for a prompt of this length), against ``llama-bench -p n_prompt -n 0``;
- the machine's read bandwidth, measured in the same run (a sum over a 256 MB tensor), against
  which each engine's effective weight bandwidth (bytes it holds for the projections × tokens/s)
  is stated.

llama.cpp's own reported rate excludes its model load; the zoo's time is the whole ``generate``
call (a one-token prefill, then ``n_gen`` compiled steps), which favours llama.cpp
slightly. ``llama-bench`` comes from ``$ZOO_LLAMA_BENCH`` or the ``PATH`` (README: building it).
Shapes whose widths are not multiples of 256 cannot be TQ2_0; the ``-p256`` shapes round the
small size's widths to 256 for that reason. llama.cpp has no top-K inputs: for a Q-Sparse shape
(arXiv 2407.10969) it runs the same weights with every input channel, which is what a user of
llama.cpp would run, and the ratio is what the sparsity buys over it.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from zoo.bench.common import pinned_threads, record
from zoo.bench.decode import compiled_step_applies

OPTIONS = ("quick", "configs", "threads")

# name -> (registered entry, ModelConfig overrides): llama.cpp's graphs are SiLU-gated and have no
# top-K inputs, so the BitNet shapes run SwiGLU on both sides (the same cost as squared ReLU).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "dense-small-p256": ("dense-small", dict(dim=768, n_heads=12, ffn_dim=1792)),
    "bitnet-small-p256": ("bitnet-small", dict(dim=768, n_heads=12, ffn_dim=1792, ffn_act="swiglu")),
    "bitnet-qsparse-small-p256": ("bitnet-qsparse-small", dict(dim=768, n_heads=12, ffn_dim=1792, ffn_act="swiglu")),
    "qsparse-small-p256": ("qsparse-small", dict(dim=768, n_heads=12, ffn_dim=1792, ffn_act="swiglu")),
    "dense-tiny": ("dense-tiny", {}),
    "bitnet-qsparse-tiny": ("bitnet-qsparse-tiny", dict(ffn_act="swiglu")),
    "bitnet-tiny": ("bitnet-tiny", dict(ffn_act="swiglu")),
}
DEFAULT_SHAPES = ("dense-small-p256", "qsparse-small-p256", "bitnet-small-p256", "bitnet-qsparse-small-p256")


def llama_bench_binary() -> str:
    """``$ZOO_LLAMA_BENCH`` or ``llama-bench`` on the PATH, or a one-line error saying how to get it."""
    found = os.environ.get("ZOO_LLAMA_BENCH") or shutil.which("llama-bench")
    if not found or not Path(found).is_file():
        raise FileNotFoundError(
            "zoo bench peer needs llama.cpp's llama-bench: set ZOO_LLAMA_BENCH=/path/to/llama-bench or put it on the PATH "
            "(README, 'The engine against llama.cpp', says how to build it)"
        )
    return found


def llama_bench(binary: str, model: Path, threads: int, n_prompt: int, n_gen: int) -> dict[str, Any]:
    """One ``llama-bench`` run (one repetition): its JSON record of the test."""
    command = [binary, "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", "1", "-o", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"llama-bench failed on {model.name}: {' '.join(done.stderr.split())[-300:]}")
    tests = json.loads(done.stdout)
    if len(tests) != 1 or "avg_ts" not in tests[0]:
        raise RuntimeError(f"llama-bench printed {len(tests)} test records without avg_ts; expected one")
    return tests[0]


def read_bandwidth_gbps(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a sum over a tensor much larger than the caches, median of ``repeats``."""
    values = torch.ones(megabytes * 2**20 // 4)
    times = []
    with pinned_threads(threads):
        values.sum()
        for _ in range(repeats):
            start = time.perf_counter()
            values.sum()
            times.append(time.perf_counter() - start)
    return values.numel() * 4 / statistics.median(times) / 1e9


def projection_bytes(model: torch.nn.Module) -> int:
    """Bytes of every projection weight the inference form holds (packed ternary or full precision),
    which a decode step reads once per token; embeddings and norms left out."""
    from zoo.models.inference import FullPrecisionLinear, PackedTernaryLinear, SparseInputLinear

    total = 0
    for module in model.modules():
        if isinstance(module, PackedTernaryLinear):
            total += module.tiles.numel()
        elif isinstance(module, SparseInputLinear):
            total += module.weight_t.numel() * module.weight_t.element_size()
        elif isinstance(module, FullPrecisionLinear):
            total += module.weight.numel() * module.weight.element_size()
    return total


def without_input_sparsity(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights with every input channel kept: what llama.cpp runs for a Q-Sparse model."""
    from zoo.models import Decoder

    dense_inputs = Decoder(model.config.replace(sparsity="none")).eval()
    dense_inputs.load_state_dict(model.state_dict())
    return dense_inputs


# the sizes people run (zoo.models.inference.shapes), random weights, built straight into the
# inference form; full precision in bf16 on both sides.
# name -> (public shape, variant, GGUF type, the zoo's embedding/LM head dtype): the int8-table
# shapes hold the table as int8 rows (zoo.models.inference.int8_table) where llama.cpp reads the
# same values in F16, as the BitNet GGUFs people download hold it
PUBLIC: dict[str, tuple[str, str, str, torch.dtype]] = {
    "bitnet@bitnet-2b4t": ("bitnet-2b4t", "bitnet", "tq2_0", torch.bfloat16),
    "bitnet-qsparse@bitnet-2b4t": ("bitnet-2b4t", "bitnet-qsparse", "tq2_0", torch.bfloat16),
    "bitnet-int8table@bitnet-2b4t": ("bitnet-2b4t", "bitnet", "tq2_0", torch.int8),
    "bitnet-qsparse-int8table@bitnet-2b4t": ("bitnet-2b4t", "bitnet-qsparse", "tq2_0", torch.int8),
    "dense@llama-3.2-1b": ("llama-3.2-1b", "dense", "bf16", torch.bfloat16),
    "qsparse@llama-3.2-1b": ("llama-3.2-1b", "qsparse", "bf16", torch.bfloat16),
}


def build(shape: str, gguf_path: Path):
    """(the zoo's inference form, GGUF type) of a peer shape, with the same weights written to
    ``gguf_path`` (every input channel kept for a Q-Sparse shape: llama.cpp has no top-K)."""
    import zoo
    from zoo.interop.gguf import write_gguf
    from zoo.models.inference import to_inference
    from zoo.models.inference.shapes import random_inference_model, shape_config

    if shape in PUBLIC:
        public, variant, kind, table = PUBLIC[shape]
        config = shape_config(public, variant)
        engine = random_inference_model(config, embedding_dtype=table)
        # the same seed gives the same weights whatever the input rule: the twin is built, written, dropped
        twin = config.replace(sparsity="none")
        peer = engine if config.sparsity == "none" else random_inference_model(twin, embedding_dtype=table)
        write_gguf(peer, gguf_path, kind, name=shape)
        return engine, kind
    if shape not in SHAPES:
        raise ValueError(f"zoo bench peer: unknown shape {shape!r}; shapes: {', '.join([*SHAPES, *PUBLIC])}")
    entry, overrides = SHAPES[shape]
    torch.manual_seed(0)
    model = zoo.create_model(entry, **overrides).eval()
    kind = "tq2_0" if model.config.weight_quant == "ternary" else "f32"
    write_gguf(model if model.config.sparsity == "none" else without_input_sparsity(model), gguf_path, kind, name=shape)
    return to_inference(model), kind


def head_bytes(model: torch.nn.Module) -> int:
    """Bytes of the LM head a decoding step reads (at a 128k vocabulary as many as the blocks')."""
    weight = model.lm_head.weight
    return weight.numel() * weight.element_size()


def run(quick: bool = False, configs: list[str] | None = None, threads: int | None = None) -> list[dict]:
    """One record per shape and thread count: zoo and llama.cpp decode and prefill tokens/s."""
    import zoo
    from zoo.models.generate import prefill

    binary = llama_bench_binary()
    n_gen, n_prompt, rounds = (8, 8, 2) if quick else (64, 64, 5)
    records = []
    with tempfile.TemporaryDirectory(prefix="zoo-peer-") as folder:
        for shape in configs or DEFAULT_SHAPES:
            gguf_path = Path(folder) / f"{shape}.gguf"
            engine, kind = build(shape, gguf_path)
            config = engine.config
            weight_bytes, lm_head_bytes = projection_bytes(engine), head_bytes(engine)
            prompt = torch.randint(0, config.vocab_size, (1, n_prompt), generator=torch.Generator().manual_seed(0))
            for count in [threads] if threads else [1, 2]:
                bandwidth = read_bandwidth_gbps(count)
                zoo_decode, zoo_prefill, llama_decode, llama_prefill = [], [], [], []
                with pinned_threads(count):
                    zoo.generate(engine, prompt[:, :1], 2, temperature=0)  # builds the decode program
                    for _ in range(rounds):
                        start = time.perf_counter()
                        zoo.generate(engine, prompt[:, :1], n_gen, temperature=0)  # greedy, as llama-bench
                        zoo_decode.append(n_gen / (time.perf_counter() - start))
                        llama_decode.append(float(llama_bench(binary, gguf_path, count, 0, n_gen)["avg_ts"]))
                        with torch.no_grad():
                            start = time.perf_counter()
                            prefill(engine, prompt, engine.new_cache(1))
                            zoo_prefill.append(n_prompt / (time.perf_counter() - start))
                        llama_prefill.append(float(llama_bench(binary, gguf_path, count, n_prompt, 0)["avg_ts"]))
                decode, peer_decode = statistics.median(zoo_decode), statistics.median(llama_decode)
                with pinned_threads(count):  # the record's device names the threads it ran on
                    records.append(
                        record(
                            "peer_decode",
                            shape=shape,
                            entry=SHAPES[shape][0] if shape in SHAPES else PUBLIC[shape][1],
                            overrides=SHAPES[shape][1] if shape in SHAPES else {"shape": PUBLIC[shape][0]},
                            peer="llama.cpp",
                            peer_format=kind.upper(),
                            input_sparsity=config.sparsity,
                            peer_input_sparsity="none",  # llama.cpp reads every input channel
                            threads=count,
                            rounds=rounds,
                            new_tokens=n_gen,
                            tokens_per_s=decode,
                            time_s=1 / decode,
                            baseline_s=1 / peer_decode,
                            baseline="llama.cpp " + kind.upper(),
                            peer_tokens_per_s=peer_decode,
                            prompt_tokens=n_prompt,
                            prefill_tokens_per_s=statistics.median(zoo_prefill),
                            peer_prefill_tokens_per_s=statistics.median(llama_prefill),
                            prefill_ratio=statistics.median(zoo_prefill) / statistics.median(llama_prefill),
                            projection_bytes=weight_bytes,
                            head_bytes=lm_head_bytes,
                            gguf_bytes=gguf_path.stat().st_size,
                            effective_gbps=(weight_bytes + lm_head_bytes) * decode / 1e9,
                            read_bandwidth_gbps=bandwidth,
                            compiled_decode_step=compiled_step_applies(engine),
                        )
                    )
            del engine
            gguf_path.unlink()
    return records
