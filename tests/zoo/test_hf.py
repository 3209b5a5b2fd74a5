"""zoo.interop.hf against transformers itself: tiny random Llama, Mistral (GQA) and Qwen2 (q/k/v biases)
checkpoints are imported, must give transformers' logits, and must export back bit for bit."""

import argparse
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from zoo.hub.release import load_release  # noqa: E402
from zoo.interop.convert import state_dict_from_hf  # noqa: E402
from zoo.interop.export import cmd_export_hf, export_hf  # noqa: E402
from zoo.interop.hf import cmd_import_hf, import_hf, parse_overrides  # noqa: E402
from zoo.models.decoder import Decoder  # noqa: E402
from zoo.tokenizer import BPETokenizer, ByteTokenizer  # noqa: E402

ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}
CASES = [(arch, tied) for arch in ARCHS for tied in (False, True)]
SEQ = 40


def tiny_hf_model(arch: str, tied: bool, vocab_size: int = 300, std: float = 0.1, **extra):
    config_cls, model_cls = ARCHS[arch]
    config = config_cls(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        intermediate_size=128,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        rope_theta=1000.0,
        **extra,
    )
    torch.manual_seed(0)
    model = model_cls(config).float().eval()
    # transformers' 0.02-std init leaves attention nearly uniform; larger weights (and random norm
    # gains and biases) make the logits depend on every RoPE pair, so a layout slip cannot hide.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(std=0.5 if name.endswith("bias") else std)
    return model


def import_quietly(*args, **kwargs):
    """import_hf of a checkpoint without tokenizer.json, whose byte-tokenizer warning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return import_hf(*args, **kwargs)


def hf_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in CASES])
def imported(request, tmp_path_factory):
    arch, tied = request.param
    root = tmp_path_factory.mktemp(f"{arch}-{tied}")
    model = tiny_hf_model(arch, tied)
    model.save_pretrained(root / "hf", safe_serialization=True)
    with pytest.warns(UserWarning, match="byte tokenizer"):
        release = import_hf(root / "hf", root / "release")
    ids = torch.randint(0, 300, (2, SEQ), generator=torch.Generator().manual_seed(1))
    return {"arch": arch, "tied": tied, "root": root, "hf": model, "release": release, "ids": ids, "logits": hf_logits(model, ids)}


def test_import_matches_transformers_logits(imported):
    model, tokenizer, metrics = load_release(imported["release"])
    assert model.config.tie_embeddings is imported["tied"]
    assert model.config.qkv_bias is (imported["arch"] == "qwen2")
    assert isinstance(tokenizer, ByteTokenizer) and metrics["hf_model_type"] == imported["arch"]
    with torch.no_grad():
        ours = model(imported["ids"])
    torch.testing.assert_close(ours, imported["logits"])
    print(f"\n{imported['arch']} tied={imported['tied']}: max |logit diff| = {(ours - imported['logits']).abs().max().item():.3g}")


def test_export_reloads_in_transformers_with_identical_logits(imported):
    out = export_hf(imported["release"], imported["root"] / "export", imported["arch"])
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded) is type(imported["hf"]) and reloaded.dtype == torch.float32
    assert torch.equal(hf_logits(reloaded, imported["ids"]), imported["logits"])
    written = load_file(str(out / "model.safetensors"))
    original = imported["hf"].state_dict()
    assert ("lm_head.weight" in written) is not imported["tied"]
    assert all(torch.equal(tensor, original[name]) for name, tensor in written.items())


def test_layout_slip_is_caught(imported):
    """Negative control: q/k loaded without the RoPE row permutation gives visibly wrong logits."""
    model, _, _ = load_release(imported["release"])
    state = state_dict_from_hf(imported["hf"].state_dict(), model.config)
    layer = imported["hf"].model.layers[0].self_attn
    state["layers.0.attn.wqkv.weight"] = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]).detach()
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        assert not torch.allclose(model(imported["ids"]), imported["logits"], atol=1e-3)


def test_topk_override_keeps_parameters_and_changes_logits(imported):
    out = import_quietly(imported["root"] / "hf", imported["root"] / "sparse", sparsity="topk", k_ratio=0.6)
    sparse, _, metrics = load_release(out)
    dense, _, _ = load_release(imported["release"])
    assert (sparse.config.sparsity, sparse.config.k_ratio) == ("topk", 0.6)
    assert metrics["overrides"] == {"sparsity": "topk", "k_ratio": 0.6}
    dense_state, sparse_state = dense.state_dict(), sparse.state_dict()
    assert dense_state.keys() == sparse_state.keys()
    assert all(torch.equal(dense_state[k], sparse_state[k]) for k in dense_state)
    with torch.no_grad():
        assert not torch.allclose(sparse(imported["ids"]), imported["logits"], atol=1e-2)


# One architecture is enough for the file handling below ------------------------------------------
@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama-files")
    model = tiny_hf_model("llama", tied=False)
    model.save_pretrained(root / "hf", safe_serialization=True)
    return root / "hf", model


def test_sharded_checkpoint_imports_like_a_single_file(llama_dir, tmp_path):
    src, model = llama_dir
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(sharded / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    ours, _, _ = load_release(import_quietly(sharded, tmp_path / "release"))
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(model, ids))

    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        import_hf(sharded, tmp_path / "release2")

    # A shard name that leaves the model folder is refused before anything is read.
    outside = tmp_path / "outside.safetensors"
    save_file({k: state[k] for k in shards["model-00002-of-00002.safetensors"]}, str(outside), metadata={"format": "pt"})
    for escape in ("../outside.safetensors", str(outside)):
        index["weight_map"] = {k: (escape if shard.startswith("model-00002") else shard) for shard, keys in shards.items() for k in keys}
        (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match="inside the model folder"):
            import_hf(sharded, tmp_path / "release3")
    assert not (tmp_path / "release3").exists()


def test_bin_only_directory_is_refused(llama_dir, tmp_path):
    src, model = llama_dir
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*safetensors only"):
        import_hf(tmp_path, tmp_path / "release")
    assert not (tmp_path / "release").exists()
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        import_hf(tmp_path, tmp_path / "release")


def test_bpe_tokenizer_travels_both_ways(llama_dir, tmp_path):
    src, model = llama_dir
    bpe = BPETokenizer.train(["the quick brown fox jumps over the lazy dog; " * 4] * 8, vocab_size=280)
    with_tok = tmp_path / "hf"
    with_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (with_tok / name).write_bytes((src / name).read_bytes())
    bpe.save(with_tok)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no byte-tokenizer fallback warning here
        release = import_hf(with_tok, tmp_path / "release")
    _, tokenizer, metrics = load_release(release)
    assert tokenizer == bpe and metrics["tokenizer"] == "bpe"
    out = export_hf(release, tmp_path / "export")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "the lazy fox"
    assert hf_tok.encode(text, add_special_tokens=False) == bpe.encode(text)


def test_small_vocab_without_tokenizer_is_refused(tmp_path):
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=200, intermediate_size=128)
    config.save_pretrained(tmp_path)
    save_file({"unread": torch.zeros(1)}, str(tmp_path / "model.safetensors"))  # present, never read: the tokenizer is checked first
    with pytest.raises(ValueError, match="vocab_size=200 is too small for the byte tokenizer"):
        import_hf(tmp_path, tmp_path / "release")


def test_override_that_changes_parameters_is_refused(llama_dir, tmp_path):
    src, _ = llama_dir
    with pytest.raises(ValueError, match="the override of n_experts changes the released parameters"):
        import_hf(src, tmp_path / "moe", n_experts=4)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        import_hf(src, tmp_path / "typo", sparsty="topk")
    with pytest.raises(ValueError, match="overwrite"):
        import_hf(src, src)


def test_cli_commands(llama_dir, tmp_path, capsys):
    src, model = llama_dir
    args = argparse.Namespace(
        src=str(src), out=str(tmp_path / "release"), overrides=["sparsity=topk", "k_ratio=0.5"], name=None, dtype="bfloat16"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert cmd_import_hf(args) == 0
    ours, _, _ = load_release(tmp_path / "release")
    assert (ours.config.sparsity, ours.config.k_ratio) == ("topk", 0.5)
    assert load_file(str(tmp_path / "release" / "model.safetensors"))["norm.weight"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="sparsity"):  # Hugging Face has no top-K activations
        cmd_export_hf(argparse.Namespace(src=str(tmp_path / "release"), out=str(tmp_path / "export"), model_type="llama", dtype=None))
    assert "release written" in capsys.readouterr().out


def test_parse_overrides():
    assert parse_overrides(["sparsity=topk", "k_ratio=0.6", "sub_norm=false", "expert_ffn_dim="]) == {
        "sparsity": "topk",
        "k_ratio": 0.6,
        "sub_norm": False,
        "expert_ffn_dim": None,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["sparsity"])


def test_llama3_rope_scaling_imports_and_exports_with_transformers_logits(tmp_path):
    """Llama 3.x's RoPE scaling: every band of frequencies (kept, blended, slowed) is exercised by
    an original context of 16 positions at head_dim 16, theta 1000."""
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    # weights large enough that attention depends on every RoPE angle
    model = tiny_hf_model("llama", tied=False, std=0.3, rope_scaling=scaling)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    release = import_quietly(tmp_path / "hf", tmp_path / "release")
    ours, _, _ = load_release(release)
    assert (ours.config.rope_scaling, ours.config.rope_factor, ours.config.rope_original_max_seq_len) == ("llama3", 8.0, 16)
    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # large weights: float sums in another order differ by ~1e-5 of logits this size
        torch.testing.assert_close(ours(ids), hf_logits(model, ids), rtol=1e-4, atol=1e-4)
        unscaled = Decoder(ours.config.replace(rope_scaling="none"))
        unscaled.load_state_dict(ours.state_dict())
        assert (unscaled(ids) - ours(ids)).abs().max() > 0.05  # the scaling really matters here
    out = export_hf(release, tmp_path / "export", "llama")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(hf_logits(reloaded, ids), hf_logits(model, ids), rtol=1e-4, atol=1e-4)


def test_import_takes_a_hub_repository_id_through_huggingface_hub(llama_dir, tmp_path, monkeypatch):
    import huggingface_hub

    src, model = llama_dir
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    release = import_quietly("meta-llama/Tiny-Test@abc123", tmp_path / "release")
    ((repo, revision, patterns),) = calls
    assert (repo, revision) == ("meta-llama/Tiny-Test", "abc123")
    assert "*.safetensors" in patterns and not any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) for p in patterns)
    ours, _, metrics = load_release(release)
    assert metrics["hf_source"] == "meta-llama/Tiny-Test@abc123"
    ids = torch.randint(0, 300, (1, 12))
    torch.testing.assert_close(ours(ids), hf_logits(model, ids))
    with pytest.raises(FileNotFoundError, match="no such file or directory; expected a Hugging Face model folder"):
        import_hf(tmp_path / "no" / "such" / "dir", tmp_path / "x")


def test_mixtral_imports_and_exports_with_transformers_logits(tmp_path):
    """Mixtral is the zoo's dropless MoE exactly: top-k of E SwiGLU experts, softmax weights
    renormalised over the k; its fused gate_up_proj has the zoo's [gate; up] row order."""
    config = transformers.MixtralConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        intermediate_size=48,
        max_position_embeddings=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        rope_theta=1000.0,
    )
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(config).float().eval()
    with torch.no_grad():  # large enough that routing and attention depend on every weight
        for name, param in model.named_parameters():
            param.copy_(1 + 0.3 * torch.randn_like(param)) if name.endswith("norm.weight") else param.normal_(std=0.2)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    release = import_quietly(tmp_path / "hf", tmp_path / "release")
    ours, _, _ = load_release(release)
    assert (ours.config.n_experts, ours.config.top_k, ours.config.expert_ffn_dim) == (4, 2, 48)
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(model, ids), rtol=1e-4, atol=1e-4)
    out = export_hf(release, tmp_path / "export")  # a full-precision MoE defaults to mixtral
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(hf_logits(reloaded, ids), hf_logits(model, ids), rtol=1e-4, atol=1e-4)
