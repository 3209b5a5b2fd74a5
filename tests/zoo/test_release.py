"""Release directories: plain files, packed ternary weights that reproduce the model, clear errors."""

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from zoo.hub.release import load_release, save_release
from zoo.interop.loader import load_source
from zoo.models import Decoder, ModelConfig
from zoo.models.packing import ternary_modules
from zoo.tokenizer import ByteTokenizer

ARCH = dict(vocab_size=256, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=32)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.5),
        dict(weight_quant="ternary", n_experts=4, top_k=2, expert_ffn_dim=32),
    ],
)
@pytest.mark.parametrize("bf16", [False, True])
def test_release_round_trip_reproduces_logits(tmp_path, extra, bf16):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**ARCH, **extra)).eval()
    save_release(model, ByteTokenizer(), tmp_path, {"steps": 3}, name="t", bf16=bf16)
    loaded, tokenizer, metrics = load_release(tmp_path)
    # the model as released: with bf16, full-precision matrices rounded (ternary ones are packed exactly)
    ternary = {f"{name}.weight" for name in ternary_modules(model)}
    released = Decoder(model.config).eval()
    rounded = {k: v.bfloat16().float() if bf16 and v.dim() >= 2 and k not in ternary else v for k, v in model.state_dict().items()}
    released.load_state_dict(rounded)
    tokens = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(loaded(tokens), released(tokens), rtol=1e-5, atol=1e-5)
    assert metrics == {"steps": 3} and isinstance(tokenizer, ByteTokenizer)
    stored = load_file(str(tmp_path / "model.safetensors"))
    matrices = {str(v.dtype) for k, v in stored.items() if v.dim() >= 2 and not k.endswith(".weight_packed")}
    assert matrices == {"torch.bfloat16" if bf16 else "torch.float32"}
    assert all(v.dtype == torch.float32 for v in stored.values() if v.dim() == 1 and v.is_floating_point())
    ternary = extra.get("weight_quant") == "ternary"
    assert any(k.endswith(".weight_packed") for k in stored) == ternary
    if ternary:  # 2 bits per ternary weight: a quarter of a byte each
        packed_bytes = sum(v.numel() for k, v in stored.items() if k.endswith(".weight_packed"))
        ternary_params = sum(
            p.numel() for n, p in model.named_parameters() if n.endswith(("wqkv.weight", "wo.weight", "w_gate_up.weight", "w_down.weight"))
        )
        assert packed_bytes == pytest.approx(ternary_params / 4, rel=0.01)


def test_unpacked_release_keeps_latent_weights(tmp_path):
    model = Decoder(ModelConfig(**ARCH, weight_quant="ternary"))
    save_release(model, ByteTokenizer(), tmp_path, {}, pack=False)
    loaded, _, _ = load_release(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_broken_releases_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a moezoo release"):
        load_release(tmp_path)
    save_release(Decoder(ModelConfig(**ARCH)), ByteTokenizer(), tmp_path, {})
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_release(tmp_path)
    save_release(Decoder(ModelConfig(**ARCH)), ByteTokenizer(), tmp_path, {})
    (tmp_path / "config.yaml").write_text("dim: 64\nn_heads: 4\nvocab_size: 256\nn_layers: 2\nffn_dim: 64\nmax_seq_len: 32\n")
    with pytest.raises(ValueError, match="shape"):
        load_release(tmp_path)
    (tmp_path / "config.yaml").write_text("dimm: 64\n")
    with pytest.raises(ValueError, match="dimm"):
        load_release(tmp_path)


def test_pickled_checkpoint_objects_are_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"arch": {}}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable zoo checkpoint"):
        load_source(path)
    assert "pwned" not in capsys.readouterr().out  # refused before the object's code could run


def test_saving_a_release_twice_gives_the_same_bytes(tmp_path):
    """A release's sha256 names its content: re-exporting the same model must not change it (the
    hub and the leaderboard key checkpoints by it). Several saves, since a map written in a random
    order differs only now and then."""
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**ARCH, weight_quant="ternary"))
    digests = set()
    for attempt in range(8):
        out = save_release(model, ByteTokenizer(), tmp_path / str(attempt), {"steps": 3}, name="t", bf16=True)
        digests.add(tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())))
    assert len(digests) == 1
