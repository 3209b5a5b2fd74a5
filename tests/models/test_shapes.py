"""The public shapes' random-weight models (``zoo.models.inference.shapes``): built straight into
the inference form (no training-form projection left), bf16 at the ends, the compiled step equal to
the modules, and a Q-Sparse variant sharing its dense-input twin's weights (the peer benchmark
compares the two on the same bytes). Reduced widths: the full sizes are the benchmark's."""

import pytest
import torch

from zoo.kernels import compiled
from zoo.models.inference import PackedTernaryLinear, decode_step_for
from zoo.models.inference.shapes import PUBLIC_SHAPES, VARIANTS, random_inference_model, shape_config
from zoo.models.linear import ZooLinear

SMALL = dict(dim=256, n_heads=4, n_kv_heads=2, ffn_dim=512, vocab_size=300, n_layers=2, max_seq_len=64)


@pytest.mark.parametrize("shape", list(PUBLIC_SHAPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_random_models_are_inference_forms_the_compiled_step_runs(shape, variant):
    model = random_inference_model(shape_config(shape, variant, **SMALL))
    assert not any(isinstance(m, ZooLinear) for m in model.modules())
    assert model.tok_embeddings.weight.dtype == torch.bfloat16 and model.lm_head.weight is model.tok_embeddings.weight
    assert model.config.rope_theta == PUBLIC_SHAPES[shape]["rope_theta"] and model.config.ffn_act == "swiglu"
    if not compiled.available():
        pytest.skip("needs the compiled CPU kernels (a C compiler)")
    prompt = torch.tensor([[5, 9, 299]])
    with torch.no_grad():
        caches = model.new_cache(1)
        model(prompt, caches)
        fast = decode_step_for(model).logits(model, torch.tensor([7]), caches)
        caches = model.new_cache(1)
        model(prompt, caches)
        slow = model(torch.tensor([[7]]), caches)[:, -1].float()
    assert decode_step_for(model).unsupported is None
    # the modules round bf16 products to bf16; the compiled step sums them in fp32
    torch.testing.assert_close(fast, slow, rtol=2e-2, atol=2e-2 * slow.abs().max().item())


def test_a_qsparse_variant_holds_its_twins_weights():
    sparse = random_inference_model(shape_config("bitnet-2b4t", "bitnet-qsparse", **SMALL), seed=3)
    dense_inputs = random_inference_model(shape_config("bitnet-2b4t", "bitnet", **SMALL), seed=3)
    packed = [(m.packed, m.scale) for m in sparse.modules() if isinstance(m, PackedTernaryLinear)]
    twins = [(m.packed, m.scale) for m in dense_inputs.modules() if isinstance(m, PackedTernaryLinear)]
    assert len(packed) == len(twins) == 4 * SMALL["n_layers"]
    assert all(torch.equal(a, b) and torch.equal(s, t) for (a, s), (b, t) in zip(packed, twins))
    assert torch.equal(sparse.tok_embeddings.weight, dense_inputs.tok_embeddings.weight)


def test_unknown_names_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown shape 'llama-9b'; shapes: bitnet-2b4t, llama-3.2-1b"):
        shape_config("llama-9b", "dense")
    with pytest.raises(ValueError, match="unknown variant 'ternary'"):
        shape_config("bitnet-2b4t", "ternary")


def test_an_int8_table_runs_compiled_and_exports_its_values(tmp_path):
    import gguf

    from zoo.interop.gguf import write_gguf

    model = random_inference_model(shape_config("bitnet-2b4t", "bitnet", **SMALL), embedding_dtype=torch.int8)
    assert model.tok_embeddings.weight.dtype == torch.int8 and model.lm_head.weight is model.tok_embeddings.weight
    if compiled.available():
        with torch.no_grad():
            caches = model.new_cache(1)
            model(torch.tensor([[5, 9]]), caches)
            fast = decode_step_for(model).logits(model, torch.tensor([7]), caches)
            caches = model.new_cache(1)
            model(torch.tensor([[5, 9]]), caches)
            slow = model(torch.tensor([[7]]), caches)[:, -1]
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4 * slow.abs().max().item())
    # llama.cpp gets the int8 rows times their scales (F16 there)
    reader = gguf.GGUFReader(str(write_gguf(model, tmp_path / "int8.gguf", "tq2_0")))
    (table,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    written = torch.from_numpy(gguf.quants.dequantize(table.data, table.tensor_type).reshape(SMALL["vocab_size"], -1).copy())
    expected = model.tok_embeddings(torch.arange(SMALL["vocab_size"]))
    torch.testing.assert_close(written.float(), expected, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("shape, variant", [("bitnet-2b4t", "bitnet-qsparse"), ("llama-3.2-1b", "qsparse")])
def test_one_full_width_block_and_the_128k_table_run_compiled(shape, variant):
    # the real widths (dim 2560 / 2048, FFN 6912 / 8192, 128,256 rows of table): every offset the
    # kernels compute at these sizes, checked against the modules on the last rows of the vocabulary
    if not compiled.available():
        pytest.skip("needs the compiled CPU kernels (a C compiler)")
    model = random_inference_model(shape_config(shape, variant, n_layers=1, max_seq_len=16))
    last = model.config.vocab_size - 1
    with torch.no_grad():
        caches = model.new_cache(1)
        model(torch.tensor([[last, 3]]), caches)
        fast = decode_step_for(model).logits(model, torch.tensor([last - 1]), caches)
        caches = model.new_cache(1)
        model(torch.tensor([[last, 3]]), caches)
        slow = model(torch.tensor([[last - 1]]), caches)[:, -1].float()
    assert fast.shape == (1, 128256) and decode_step_for(model).unsupported is None
    torch.testing.assert_close(fast, slow, rtol=2e-2, atol=2e-2 * slow.abs().max().item())
