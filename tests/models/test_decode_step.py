"""The compiled decode step against the inference form's own modules, its reference: the same
logits to fp32 rounding and the same greedy tokens, for every kind of block; it steps aside where
it has no compiled form, and follows the weights when they are reloaded."""

from contextlib import contextmanager

import pytest
import torch

from zoo.kernels import compiled
from zoo.models import Decoder
from zoo.models.accounting import recording_input_zeros
from zoo.models.config import ModelConfig
from zoo.models.generate import COMPILED_PREFILL_MAX_TOKENS, generate, prefill
from zoo.models.inference import SparseInputLinear, decode_step_for, to_inference

pytestmark = pytest.mark.skipif(not compiled.available(), reason="needs the compiled CPU kernels (a C compiler)")

TINY = dict(vocab_size=64, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=64)
VARIANTS = {
    "dense-gqa-bias": dict(n_kv_heads=2, qkv_bias=True),
    "qsparse": dict(sparsity="topk", k_ratio=0.5),
    "block-qsparse-bf16": dict(sparsity="block", k_ratio=0.5, block_size=16),
    "bitnet": dict(weight_quant="ternary", act_quant="int8", ffn_act="relu2"),
    "bitnet-qsparse-gqa": dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5, ffn_act="relu2", n_kv_heads=1),
    "moe": dict(n_experts=4, top_k=2),
    "moe-top1-switch": dict(n_experts=4, top_k=1, renormalize_router=False),
    "qsparse-moe": dict(n_experts=4, top_k=2, sparsity="topk", k_ratio=0.5, ffn_act="relu2"),
    "bitnet-qsparse-moe": dict(n_experts=4, top_k=2, weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5),
}


def inference_model(variant: str, seed: int = 0, **overrides) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(ModelConfig(**TINY, **{**VARIANTS.get(variant, {}), **overrides}))
    with torch.no_grad():  # spread the weights so ternarisation, top-K and routing have something to choose
        for p in model.parameters():
            p.normal_(std=0.3) if p.dim() >= 2 else p.uniform_(0.5, 1.5)
    model = to_inference(model)
    if variant.endswith("bf16"):  # a bf16 checkpoint keeps its dtype in the sparse projections
        for module in model.modules():
            if isinstance(module, SparseInputLinear):
                module.weight_t = module.weight_t.to(torch.bfloat16)
                module.forget_prepared()
    return model


def module_logits(model: Decoder, prompt: torch.Tensor, token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(compiled, modules) logits of ``token`` after ``prompt``, each from its own cache."""
    with torch.no_grad():
        caches = model.new_cache(1)
        model(prompt, caches)
        compiled_logits = decode_step_for(model).logits(model, torch.tensor([token]), caches)
        caches = model.new_cache(1)
        model(prompt, caches)
        return compiled_logits, model(torch.tensor([[token]]), caches)[:, -1]


@contextmanager
def modules_only(model: Decoder):
    """Within the block, the decode step declines, so generate decodes through the modules."""
    step = decode_step_for(model)
    step.unsupported = "switched off by the test"
    try:
        yield
    finally:
        step.unsupported = None


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_and_greedy_tokens_match_the_modules(variant, cpu_isa):  # both paths of every kernel the step calls
    model = inference_model(variant)
    prompt = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(1))
    fast, slow = module_logits(model, prompt, 7)
    step = decode_step_for(model)
    assert step.unsupported is None and step.program is not None
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    tokens = generate(model, prompt, 40, temperature=0)
    # past the context window generate rebuilds the cache and keeps decoding through the program
    long = generate(model, prompt, 70, temperature=0)
    with modules_only(model):
        assert torch.equal(tokens, generate(model, prompt, 40, temperature=0))
        assert torch.equal(long, generate(model, prompt, 70, temperature=0))


@pytest.mark.parametrize("variant", ["bitnet-qsparse-gqa", "dense-gqa-bias"])
@pytest.mark.parametrize("length", [1, COMPILED_PREFILL_MAX_TOKENS, COMPILED_PREFILL_MAX_TOKENS + 1])
def test_prefill_fills_the_cache_like_the_modules(variant, length):
    # a short prompt goes through the compiled step token by token, a longer one through the modules
    model = inference_model(variant)
    prompt = torch.randint(0, 64, (1, length), generator=torch.Generator().manual_seed(3))
    step, calls = decode_step_for(model), []
    compiled_logits = step.logits
    step.logits = lambda *args: calls.append(1) or compiled_logits(*args)
    with torch.no_grad():
        caches, reference = model.new_cache(1), model.new_cache(1)
        got, expected = prefill(model, prompt, caches), model(prompt, reference)[:, -1]
    del step.logits
    assert len(calls) == (length if length <= COMPILED_PREFILL_MAX_TOKENS else 0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for cache, ref in zip(caches, reference):
        assert cache.length == ref.length == length
        torch.testing.assert_close(cache.keys[..., :length, :], ref.keys[..., :length, :], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cache.values[..., :length, :], ref.values[..., :length, :], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["bitnet-qsparse-gqa", "dense-gqa-bias"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int8])
def test_bf16_or_int8_embedding_and_lm_head_run_compiled(variant, dtype, cpu_isa):
    # the real-shape form: the tied 128k-vocabulary table held once, in bf16 or int8, read by both ends
    model = inference_model(variant)
    original = model.tok_embeddings.weight.detach().clone()
    to_inference(model, embedding_dtype=dtype)
    table = model.tok_embeddings.weight
    assert table.dtype == dtype and model.lm_head.weight is table
    if dtype == torch.int8:  # each row within half a step of its absmax / 127
        step = original.abs().amax(dim=1, keepdim=True) / 127
        assert ((model.tok_embeddings(torch.arange(64)) - original).abs() <= step / 2 + 1e-7).all()
    fast, slow = module_logits(model, torch.tensor([[5, 9, 2]]), 7)
    assert decode_step_for(model).unsupported is None and fast.dtype == torch.float32
    assert table.data_ptr() in [op.weight for op in decode_step_for(model).program.ops]  # no fp32 copy
    # the modules round their logits to bf16; the compiled step sums the bf16 weights in fp32
    torch.testing.assert_close(fast, slow.float(), rtol=1e-2, atol=1e-2 * slow.abs().max().item())


def test_it_follows_reloaded_weights():
    model = inference_model("bitnet-qsparse-moe")
    prompt = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(2))
    before, _ = module_logits(model, prompt, 3)
    other = inference_model("bitnet-qsparse-moe", seed=5)
    model.load_state_dict(other.state_dict())
    after, reference = module_logits(model, prompt, 3)
    torch.testing.assert_close(after, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize(
    "reason, model",
    [
        ("shared experts", lambda: inference_model("bitnet-qsparse-moe", n_shared_experts=1)),
        ("torch kernel choice", lambda: inference_model("bitnet-qsparse-gqa", kernel="torch")),
        ("torch kernel choice, dense", lambda: inference_model("dense-gqa-bias", kernel="torch")),
    ],
)
def test_it_steps_aside_where_it_has_no_compiled_form(reason, model):
    model = model()
    prompt = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(3))
    fast, slow = module_logits(model, prompt, 3)
    assert fast is None and decode_step_for(model).unsupported, reason
    assert generate(model, prompt, 4, temperature=0).shape == (1, 4)


def test_accounting_counts_zeros_through_the_modules():
    model = inference_model("bitnet-qsparse")
    prompt = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(4))
    with recording_input_zeros(model):
        fast, _ = module_logits(model, prompt, 3)
    assert fast is None
    assert module_logits(model, prompt, 3)[0] is not None  # and back once recording stops


def test_a_selection_bias_routes_like_the_modules():
    model = inference_model("moe")
    for block in model.layers:
        block.ffn.selection_bias = torch.tensor([2.0, -1.0, 0.0, 1.5])
    prompt = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(5))
    fast, slow = module_logits(model, prompt, 9)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_bad_tokens_and_full_caches_are_refused():
    model = inference_model("bitnet")
    caches = model.new_cache(1, max_len=4)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), caches)
        with pytest.raises(RuntimeError, match="could not run at position 4"):
            decode_step_for(model).logits(model, torch.tensor([1]), caches)
        caches = model.new_cache(1)
        with pytest.raises(ValueError, match="outside the vocabulary of 64"):
            decode_step_for(model).logits(model, torch.tensor([64]), caches)


def test_threads_and_copies_each_build_their_own_program():
    import copy
    import io
    import threading

    model = inference_model("bitnet-qsparse-moe")
    prompt = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(6))
    expected = generate(model, prompt, 30, temperature=0)
    results = []
    workers = [threading.Thread(target=lambda: results.append(generate(model, prompt, 30, temperature=0))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 3 and all(torch.equal(r, expected) for r in results)
    twin = copy.deepcopy(model)
    assert decode_step_for(twin) is not decode_step_for(model) and decode_step_for(twin).program is None
    assert torch.equal(generate(twin, prompt, 30, temperature=0), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # a whole-model save must not trip over C pointers
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(generate(loaded, prompt, 30, temperature=0), expected)


def test_a_model_that_generated_in_training_form_decodes_compiled_once_converted():
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**TINY, **VARIANTS["bitnet"]))
    prompt = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(7))
    generate(model, prompt, 3, temperature=0)
    assert decode_step_for(model) is None  # the training form: the modules decode
    to_inference(model)
    generate(model, prompt, 3, temperature=0)
    step = decode_step_for(model)
    assert step is not None and step.unsupported is None and step.program is not None


def test_the_public_to_inference_passes_the_table_dtype():
    import zoo
    from zoo.models.inference.int8_table import Int8Embedding, Int8Head

    torch.manual_seed(0)
    model = zoo.to_inference(Decoder(ModelConfig(**TINY)), embedding_dtype=torch.int8)
    assert isinstance(model.tok_embeddings, Int8Embedding) and isinstance(model.lm_head, Int8Head)
