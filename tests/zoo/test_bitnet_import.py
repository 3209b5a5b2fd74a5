"""transformers' BitNet b1.58 checkpoints in the zoo (``zoo.interop.bitnet``): on tiny random models
the test builds and writes in each of transformers' three layouts (online master weights; offline
packed values with an ``autobitlinear`` or ``bitlinear`` scale), the zoo's logits equal
``BitNetForCausalLM``'s, through the modules and through the compiled decode step."""

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from transformers import BitNetConfig, BitNetForCausalLM
from transformers.integrations import bitnet as bitnet_integration
from transformers.integrations.bitnet import pack_weights

from zoo.interop.hf import import_hf, read_hf_folder
from zoo.kernels import compiled
from zoo.models.inference import PackedTernaryLinear, decode_step_for

PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def write_checkpoint(folder, linear: str, mode: str, tie: bool):
    """A tiny random BitNet folder as transformers would load it: config.json with its
    quantization_config, the weights in that layout, no tokenizer (the zoo falls back to bytes)."""
    config = BitNetConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = BitNetForCausalLM(config)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    for tensor in state.values():
        if tensor.dim() == 1:  # norms that are not all ones, so a norm in the wrong place shows
            tensor.uniform_(0.5, 1.5)
    if mode == "offline":
        for i in range(config.num_hidden_layers):
            for projection in PROJECTIONS:
                key = f"model.layers.{i}.{projection}.weight"
                weight = state[key] * (1.0 + i + PROJECTIONS.index(projection))  # every tensor its own absmean
                alpha = weight.abs().mean().clamp(min=1e-5)
                state[key] = pack_weights((weight / alpha).round().clamp(-1, 1).to(torch.int8))
                scale = alpha if linear == "autobitlinear" else 1.0 / alpha
                state[key.removesuffix("weight") + "weight_scale"] = scale.reshape(1).float()
    if tie:
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"))
    hf_config = config.to_dict() | {
        "architectures": ["BitNetForCausalLM"],
        "quantization_config": {"quant_method": "bitnet", "linear_class": linear, "quantization_mode": mode},
    }
    (folder / "config.json").write_text(json.dumps(hf_config))
    return folder


def transformers_logits(folder, tokens, monkeypatch) -> torch.Tensor:
    # transformers' unpacking is torch.compile'd (a C++ build on the CPU): its eager function is the same math
    monkeypatch.setattr(bitnet_integration, "unpack_weights", bitnet_integration.unpack_weights.__wrapped__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = BitNetForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return reference(tokens).logits


@pytest.mark.parametrize(
    "linear, mode, tie", [("autobitlinear", "online", True), ("autobitlinear", "offline", False), ("bitlinear", "offline", True)]
)
def test_logits_equal_transformers_bitnet(tmp_path, monkeypatch, linear, mode, tie):
    folder = write_checkpoint(tmp_path, linear, mode, tie)
    tokens = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    expected = transformers_logits(folder, tokens, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no tokenizer.json: the byte tokenizer, said loudly
        model, _, metrics = read_hf_folder(folder)
    assert metrics["hf_model_type"] == "bitnet"
    wqkv = model.layers[0].attn.wqkv
    assert isinstance(wqkv, PackedTernaryLinear) and wqkv.row_scale is not None
    assert len(set(wqkv.row_scale.tolist())) == 3  # q, k and v each keep their own absmean scale
    with torch.no_grad():
        got = model(tokens)
    # the zoo sums the int8 x ternary products exactly, transformers in fp32: equal to fp32 rounding,
    # up to an int8 input that lands on the other side of a rounding boundary
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=2e-3 * expected.abs().max().item())
    assert torch.equal(got[0, -1].argmax(), expected[0, -1].argmax())
    if compiled.available():  # the engine: the last token through the compiled decode step
        with torch.no_grad():
            caches = model.new_cache(1)
            model(tokens[:, :-1], caches)
            step = decode_step_for(model).logits(model, tokens[:, -1], caches)
        assert decode_step_for(model).unsupported is None
        torch.testing.assert_close(step[0], expected[0, -1], rtol=1e-3, atol=2e-3 * expected.abs().max().item())


def test_what_cannot_be_imported_is_refused_in_one_line(tmp_path):
    folder = write_checkpoint(tmp_path, "autobitlinear", "online", True)
    hf_config = json.loads((folder / "config.json").read_text())
    for change, named in [
        ({"quantization_config": None}, "quantization_config"),
        ({"quantization_config": {"quant_method": "bitnet", "use_rms_norm": True}}, "use_rms_norm"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ]:
        (folder / "config.json").write_text(json.dumps(hf_config | change))
        with pytest.raises(ValueError, match=named) as error:
            read_hf_folder(folder)
        assert "\n" not in str(error.value)
    (folder / "config.json").write_text(json.dumps(hf_config))
    with pytest.raises(ValueError, match="no zoo release format"):
        import_hf(folder, tmp_path / "release")
    with pytest.raises(ValueError, match="no config overrides"):
        read_hf_folder(folder, k_ratio=0.5)
