"""``zoo export-gguf``: the tensors llama.cpp will read back are the zoo model's, read with gguf-py's
own reader and dequantisers (no llama.cpp here): full precision exactly, BitNet's ternary pattern
exactly with its absmean scale in every block, q/k in the RoPE layout of the architecture; models
llama.cpp cannot run are refused with one line and leave no file."""

import gguf
import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.hub.release import save_release
from zoo.interop.convert import _rotate_half_to_interleaved
from zoo.interop.gguf import plan_export
from zoo.interop.hf_export import byte_level_symbols
from zoo.models import Decoder, ModelConfig
from zoo.tokenizer import ByteTokenizer

BASE = dict(vocab_size=256, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=512, max_seq_len=64)


def exported(tmp_path, kind: str, **arch):
    """(model, reader of its export with ``--type kind``), through a release folder and the CLI."""
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**BASE, **arch)).eval()
    release = save_release(model, ByteTokenizer(), tmp_path / "release", {}, name="toy")
    out = tmp_path / f"toy-{kind}.gguf"
    assert main(["export-gguf", str(release), str(out), "--type", kind]) == 0
    return model, gguf.GGUFReader(str(out))


def tensors(reader) -> dict[str, np.ndarray]:
    """Every tensor dequantised to fp32 in the zoo's orientation ([out, in])."""
    found = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        found[tensor.name] = values.reshape([int(n) for n in reversed(tensor.shape)]) if values.ndim else values
    return found


def field(reader, key):
    return reader.fields[key].contents()


def test_dense_f32_is_the_model_exactly(tmp_path):
    model, reader = exported(tmp_path, "f32")
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == 2 and field(reader, "llama.attention.head_count_kv") == 2
    assert field(reader, "llama.context_length") == 64 and field(reader, "llama.feed_forward_length") == 512
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.tokens") == byte_level_symbols()  # token n is byte n, as in the zoo
    # llama.cpp refuses a BPE vocabulary without a merges array; the one merge makes no token
    merges = field(reader, "tokenizer.ggml.merges")
    assert len(merges) == 1 and merges[0].replace(" ", "") not in byte_level_symbols()
    got = tensors(reader)
    state = model.state_dict()
    q, k, v = state["layers.1.attn.wqkv.weight"].split([256, 128, 128])
    assert np.array_equal(got["blk.1.attn_q.weight"], q.numpy())  # llama's RoPE pairs (2j, 2j+1), as the zoo's
    assert np.array_equal(got["blk.1.attn_v.weight"], v.numpy())
    assert np.array_equal(got["blk.0.ffn_up.weight"], state["layers.0.ffn.w_gate_up.weight"][512:].numpy())
    assert np.array_equal(got["token_embd.weight"], state["tok_embeddings.weight"].numpy())
    assert "output.weight" not in got  # tied: llama.cpp reads the embedding
    assert len(got) == 2 + 9 * 2


@pytest.mark.parametrize("kind, tolerance", [("f16", 1e-3), ("bf16", 8e-3), ("q8_0", 8e-3)])
def test_dense_half_and_q8_round_to_their_type(tmp_path, kind, tolerance):
    model, reader = exported(tmp_path, kind)
    got = tensors(reader)
    want = model.state_dict()["layers.0.attn.wo.weight"].numpy()
    error = np.abs(got["blk.0.attn_output.weight"] - want).max() / np.abs(want).max()
    assert 0 < error < tolerance


@pytest.mark.parametrize("kind", ["tq2_0", "tq1_0"])
def test_bitnet_keeps_the_ternary_pattern_and_its_scale(tmp_path, kind):
    model, reader = exported(tmp_path, kind, weight_quant="ternary", act_quant="int8")
    assert field(reader, "general.architecture") == "bitnet"  # sub-norms on: llama.cpp's bitnet graph
    got = tensors(reader)
    assert {"blk.0.attn_sub_norm.weight", "blk.1.ffn_sub_norm.weight"} <= set(got)
    wo = model.layers[0].attn.wo
    ternary = wo.effective_weight().detach()
    alpha = float(ternary.abs().max())
    exported_wo = torch.from_numpy(got["blk.0.attn_output.weight"])
    assert torch.equal((exported_wo / exported_wo.abs().max()).round(), (ternary / alpha).round())  # the pattern, bit for bit
    assert float(exported_wo.abs().max()) == pytest.approx(alpha, rel=1e-3)  # α in fp16
    # bitnet's RoPE pairs channel j with j + d/2: q rows go to that layout, the function unchanged
    wqkv = model.layers[1].attn.wqkv.effective_weight().detach()
    q_back = _rotate_half_to_interleaved(torch.from_numpy(got["blk.1.attn_q.weight"]), 4)
    assert torch.equal((q_back / q_back.abs().max()).round(), (wqkv[:256] / wqkv.abs().max()).round())
    assert reader.tensors[0].tensor_type in (
        gguf.GGMLQuantizationType.F32,
        gguf.GGMLQuantizationType.F16,
        gguf.GGMLQuantizationType[kind.upper()],
    )
    assert {t.tensor_type for t in reader.tensors if t.name.endswith("attn_q.weight")} == {gguf.GGMLQuantizationType[kind.upper()]}


def test_bitnet_without_sub_norms_runs_as_llama():
    plan = plan_export(ModelConfig(**BASE, weight_quant="ternary", act_quant="int8", sub_norm=False))
    assert (plan.architecture, plan.weight_type, plan.embedding_type, plan.rotate_half) == ("llama", "tq2_0", "f16", False)


@pytest.mark.parametrize(
    "arch, kind, named",
    [
        (dict(sparsity="topk", k_ratio=0.7), None, "sparsity=topk"),
        (dict(ffn_act="relu2"), None, "ffn_act=relu2"),
        (dict(n_experts=4, top_k=2), None, "n_experts=4"),
        (dict(weight_quant="ternary", act_quant="int8"), "f16", "needs --type tq2_0 or tq1_0"),
        (dict(), "tq2_0", "is for ternary weights"),
    ],
)
def test_what_llama_cpp_cannot_run_is_refused_in_one_line(tmp_path, capsys, arch, kind, named):
    torch.manual_seed(0)
    release = save_release(Decoder(ModelConfig(**BASE, **arch)), ByteTokenizer(), tmp_path / "release", {}, name="toy")
    out = tmp_path / "refused.gguf"
    code = main(["export-gguf", str(release), str(out), *(["--type", kind] if kind else [])])
    err = capsys.readouterr().err
    assert code == 1 and named in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.gguf*")), "nothing half-written"


@pytest.mark.parametrize("arch, kind", [(dict(weight_quant="ternary", act_quant="int8"), "tq2_0"), ({}, "f32")])
def test_the_inference_form_writes_the_same_file(tmp_path, arch, kind):
    # the public shapes' models exist only in the inference form: packed weights unpacked and the
    # fused norms taken back must give the training form's file byte for byte
    from zoo.interop.gguf import write_gguf
    from zoo.models.inference import to_inference

    torch.manual_seed(0)
    model = Decoder(ModelConfig(**BASE, **arch)).eval()
    with torch.no_grad():  # norms that are not all ones, so a norm taken from the wrong place shows
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    trained = write_gguf(model, tmp_path / "training.gguf", kind).read_bytes()
    assert write_gguf(to_inference(model), tmp_path / "inference.gguf", kind).read_bytes() == trained


def test_a_larger_vocabulary_gets_unused_placeholders(tmp_path):
    from zoo.interop.gguf import write_gguf

    torch.manual_seed(0)
    reader = gguf.GGUFReader(str(write_gguf(Decoder(ModelConfig(**{**BASE, "vocab_size": 300})), tmp_path / "v.gguf")))
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert tokens[:256] == byte_level_symbols() and len(tokens) == len(set(tokens)) == 300
    assert types[:256] == [gguf.TokenType.NORMAL] * 256 and types[256:] == [gguf.TokenType.UNUSED] * 44
    assert tensors(reader)["token_embd.weight"].shape == (300, 256)
