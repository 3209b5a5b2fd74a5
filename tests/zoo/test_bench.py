"""`zoo bench` runs end to end and writes records whose speedups are ratios to a same-run baseline.

Smoke tests at the smallest settings: they check the records, never the speed."""

import json

import numpy as np
import pytest

from zoo.cli import main

REQUIRED = {"op", "time_s", "baseline", "baseline_time_s", "speedup", "device", "torch", "commit", "date"}


def read_records(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records
    for record in records:
        assert REQUIRED <= set(record), REQUIRED - set(record)
        assert record["speedup"] == pytest.approx(record["baseline_time_s"] / record["time_s"])
    return records


def test_bench_train_compares_with_dense(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    assert main(["bench", "train", "--quick", "--config", "dense-tiny", "--config", "bitnet-qsparse-tiny", "--out", str(out)]) == 0
    records = read_records(out)
    assert [r["entry"] for r in records] == ["dense-tiny", "bitnet-qsparse-tiny"]
    assert records[0]["speedup"] == 1.0 and all(r["baseline"] == "dense-tiny" for r in records)


def test_bench_decode_times_the_inference_form_against_plain_dense(tmp_path, monkeypatch):
    import zoo

    out = tmp_path / "decode.jsonl"
    temperatures = []
    timed = zoo.generate
    monkeypatch.setattr(zoo, "generate", lambda *a, **k: temperatures.append(k.get("temperature")) or timed(*a, **k))
    assert main(["bench", "decode", "--quick", "--config", "bitnet-qsparse-tiny", "--config", "qsparse-tiny", "--out", str(out)]) == 0
    assert temperatures and set(temperatures) == {0}  # greedy decoding is what the records call it, not the sampling default
    records = read_records(out)
    assert [r["entry"] for r in records] == ["bitnet-qsparse-tiny", "qsparse-tiny"]
    assert all(r["baseline"] == "dense-tiny (plain fp32)" and r["form"] == "inference" and r["weights"] == "shipped" for r in records)
    packed, full = records
    # what the model holds: 2-bit projections against fp32 ones (embeddings and norms stay fp32)
    assert packed["tensor_bytes"] < packed["baseline_tensor_bytes"] / 8
    assert full["tensor_bytes"] == full["baseline_tensor_bytes"]


def test_bench_moe_records_every_backend_against_both_baselines(tmp_path):
    from zoo.bench.moe import run

    records = run(tokens=64, dim=32, expert_dim=32, n_experts=(4,), repeats=1, warmup=0, out=tmp_path / "moe.jsonl")
    assert {r["baseline"] for r in records} == {"dense_ffn_same_activated", "python_expert_loop"}
    read_records(tmp_path / "moe.jsonl")


def test_bench_kernels_cpu_quick(tmp_path):
    out = tmp_path / "kernels.jsonl"
    assert main(["bench", "kernels", "--quick", "--out", str(out)]) == 0
    ops = {r["op"] for r in read_records(out)}
    assert {"sparse_projection", "topk_int8_quantize", "packed_ternary_gemv"} <= ops
    packed = [r for r in read_records(out) if r["op"] == "packed_ternary_gemv"]
    assert {r["threads"] for r in packed} == {1, 2} and all(r["gbps"] > 0 and r["isa"] in ("avx512", "avx2", "scalar") for r in packed)


def test_bench_writes_into_the_working_directory_by_default(tmp_path, monkeypatch):
    from pathlib import Path

    import zoo

    checkout = Path(zoo.__file__).resolve().parents[1]
    before = {p.name: p.stat().st_size for p in (checkout / "leaderboard").iterdir()}
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "train", "--quick", "--config", "dense-tiny"]) == 0
    read_records(tmp_path / "bench_train.jsonl")
    assert {p.name: p.stat().st_size for p in (checkout / "leaderboard").iterdir()} == before


def test_publish_needs_an_explicit_store(capsys):
    with pytest.raises(SystemExit):
        main(["publish", "some/release", "name"])
    assert "--store" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["kernels", "moe", "train", "decode"])
def test_bench_options_reach_the_benchmark_or_are_refused(what, monkeypatch, capsys, tmp_path):
    import importlib

    module = importlib.import_module(f"zoo.bench.{what}")
    seen = {}
    monkeypatch.setattr(module, "run", lambda **options: seen.update(options) or [])
    assert main(["bench", what, "--quick", "--threads", "1", "--no-save"]) == 0
    assert seen == {"quick": True, "threads": 1}  # defaults are the benchmark's own
    seen.clear()
    code = main(["bench", what, "--config", "dense-tiny", "--no-save"])
    if "configs" in module.OPTIONS:
        assert code == 0 and seen == {"configs": ["dense-tiny"]}
    else:
        err = capsys.readouterr().err.strip()
        assert code == 1 and not seen and err == f"zoo bench: error: --config does not apply to the {what} benchmark"
    assert main(["bench", what, "--threads", "0", "--no-save"]) == 1
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


FAKE_LLAMA_BENCH = '''#!{python}
"""Stands in for llama.cpp's llama-bench: checks it was handed a GGUF file and prints one test
record in llama-bench's -o json format, at a rate that depends on the test kind."""
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(args["-m"], "rb") as model:
    assert model.read(4) == b"GGUF", "not a GGUF file"
n_prompt, n_gen = int(args["-p"]), int(args["-n"])
assert args["-r"] == "1" and args["-o"] == "json" and int(args["-t"]) >= 1
print(json.dumps([{{"n_prompt": n_prompt, "n_gen": n_gen, "n_threads": int(args["-t"]), "avg_ts": 400.0 if n_gen else 2000.0}}]))
'''


def test_bench_peer_interleaves_llama_bench_on_the_same_weights(tmp_path, monkeypatch):
    import sys

    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("ZOO_LLAMA_BENCH", str(fake))
    out = tmp_path / "peer.jsonl"
    assert main(["bench", "peer", "--quick", "--config", "bitnet-tiny", "--threads", "1", "--out", str(out)]) == 0
    (peer,) = read_records(out)
    assert (peer["shape"], peer["peer_format"], peer["threads"], peer["baseline"]) == ("bitnet-tiny", "TQ2_0", 1, "llama.cpp TQ2_0")
    assert peer["peer_tokens_per_s"] == 400.0 and peer["peer_prefill_tokens_per_s"] == 2000.0
    assert peer["speedup"] == pytest.approx(peer["tokens_per_s"] / 400.0)
    assert peer["gguf_bytes"] > 0 and peer["projection_bytes"] > 0 and peer["read_bandwidth_gbps"] > 0
    assert peer["compiled_decode_step"] is True and peer["device"].endswith("(1 threads)")  # the threads it ran on
    assert peer["head_bytes"] == 256 * 256 * 4  # bitnet-tiny's fp32 LM head (vocabulary x dim), read every token as well
    assert peer["effective_gbps"] == pytest.approx((peer["projection_bytes"] + peer["head_bytes"]) * peer["tokens_per_s"] / 1e9)


def test_llama_cpp_runs_a_q_sparse_shape_with_the_same_weights_and_every_input(tmp_path):
    import gguf

    from zoo.bench.peer import build
    from zoo.interop.gguf import inference_state

    engine, kind = build("bitnet-qsparse-tiny", tmp_path / "peer.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "peer.gguf"))
    assert kind == "tq2_0" and engine.config.sparsity == "topk"
    assert "sub_norm" not in str(reader.fields.keys()) and str(reader.fields["general.architecture"].contents()) == "bitnet"
    (down,) = [t for t in reader.tensors if t.name == "blk.1.ffn_down.weight"]
    written = gguf.quants.dequantize(down.data, down.tensor_type).reshape(engine.config.dim, -1)
    expected = inference_state(engine)["layers.1.ffn.w_down.weight"]().numpy()
    assert np.allclose(written, expected, rtol=1e-3)  # the same ternary weights, the scale in fp16


def test_bench_peer_without_llama_bench_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_LLAMA_BENCH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["bench", "peer", "--quick", "--no-save"]) == 1
    err = capsys.readouterr().err
    assert "needs llama.cpp's llama-bench" in err and len(err.strip().splitlines()) == 1
