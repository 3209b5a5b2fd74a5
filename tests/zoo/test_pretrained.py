"""Pretrained zoo models by name: publish into a hub store, download with verification, generate."""

import re

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.hub import publish
from zoo.hub.release import save_release
from zoo.models import Decoder, ModelConfig
from zoo.tokenizer import ByteTokenizer


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Decoder(ModelConfig(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=64, weight_quant="ternary"))
    save_release(model, ByteTokenizer(), tmp_path / "release", {"steps": 1}, name="toy-tiny")
    store = tmp_path / "store"
    publish(tmp_path / "release", "toy-tiny", store=store, source="test")
    monkeypatch.setenv("ZOO_HUB", store.as_uri())
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    return model


def test_download_then_generate_by_name(hub, capsys):
    assert main(["download", "toy-tiny"]) == 0
    cached = capsys.readouterr().out.strip()
    assert cached.endswith("toy-tiny")
    assert main(["generate", "toy-tiny", "--prompt", "ROMEO:", "--max-new-tokens", "8", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")


def test_create_model_pretrained_matches_the_published_weights(hub, tmp_path):
    from zoo.hub.release import load_release

    loaded = zoo.create_model("toy-tiny", pretrained=True)
    published = load_release(tmp_path / "release")[0]
    for key, value in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    tokens = torch.randint(0, 256, (1, 10))  # and close to the model before its matrices went bf16
    torch.testing.assert_close(loaded(tokens), hub.eval()(tokens), rtol=0, atol=5e-3)


def test_unknown_name_is_a_clear_error(hub, capsys):
    assert main(["generate", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "zoo generate: error: no-such-model: not a published zoo model (published: toy-tiny); expected a zoo name" in err
    assert "Traceback" not in err


def test_offline_download_without_cache_fails_clearly(hub, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert main(["download", "toy-tiny"]) == 1
    assert "not cached" in capsys.readouterr().err


def test_corrupted_store_file_fails_the_download_and_leaves_no_file(hub, tmp_path, capsys):
    weights = tmp_path / "store" / "toy-tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["download", "toy-tiny"]) == 1
    assert "sha256" in capsys.readouterr().err.lower()
    assert not (tmp_path / "home" / "checkpoints" / "toy-tiny" / "model.safetensors").exists()


@pytest.mark.parametrize("name", ["bitnet-tiny", "bitnet-qsparse-tiny", "bitnet-qsparse-moe-tiny"])
def test_shipped_ternary_checkpoints_carry_sub_norms_and_load_by_name(name, tmp_path, monkeypatch):
    from zoo.hub import shipped_store

    monkeypatch.setenv("ZOO_HUB", shipped_store().as_uri())
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    model = zoo.create_model(name, pretrained=True)
    assert model.config.has_sub_norm and model.config.sub_norm is True  # written out in the release
    assert "layers.0.attn.sub_norm.weight" in model.state_dict()
    # the registry builds the same architecture that was trained and released
    assert {k: v.shape for k, v in zoo.create_model(name).state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_zoo_list_says_which_names_have_weights_and_each_loads_by_name(tmp_path, monkeypatch, capsys):
    import json

    from zoo.hub import shipped_store

    monkeypatch.setenv("ZOO_HUB", shipped_store().as_uri())
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert main(["list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    with_weights = sorted(name for name, row in rows.items() if row["pretrained"] and "-seed" not in name)
    assert with_weights == sorted(n for n in rows if n.endswith("-tiny"))  # the 8 shipped checkpoints
    replicates = [name for name in rows if "-seed" in name]  # the leaderboard's extra seeds, listed after their entry
    assert sorted(replicates) == sorted(f"{e}-tiny-seed{k}" for e in ("dense", "bitnet", "bitnet-qsparse") for k in (1, 2))
    assert list(rows).index("bitnet-tiny-seed1") == list(rows).index("bitnet-tiny") + 1
    assert zoo.list_models("*bitnet-tiny*", pretrained=True) == ["bitnet-tiny", "bitnet-tiny-seed1", "bitnet-tiny-seed2"]
    assert all(row["pretrained"] is False for name, row in rows.items() if name.endswith("-small"))
    for name in with_weights:  # each loads by name, into the architecture the registry builds
        shapes = {k: v.shape for k, v in zoo.create_model(name, pretrained=True).state_dict().items()}
        assert shapes == {k: v.shape for k, v in zoo.create_model(name).state_dict().items()}, name
    # a bare entry name means its tiny size, with or without weights
    bare = zoo.create_model("qsparse", pretrained=True)
    torch.testing.assert_close(bare.state_dict(), zoo.create_model("qsparse-tiny", pretrained=True).state_dict())


def test_overrides_that_hold_no_parameter_apply_to_pretrained_weights(hub):
    plain = zoo.create_model("toy-tiny", pretrained=True)
    sparse = zoo.create_model("toy-tiny", pretrained=True, sparsity="topk", k_ratio=0.5, kernel="torch")
    assert sparse.config.k_ratio == 0.5 and sparse.config.sparsity == "topk" and sparse.config.kernel == "torch"
    torch.testing.assert_close(sparse.state_dict(), plain.state_dict())  # the same released weights
    tokens = torch.randint(0, 256, (1, 12))
    assert not torch.allclose(sparse(tokens), plain(tokens))  # top-K 50% really runs
    with pytest.raises(ValueError, match="override of dim changes the released parameters"):
        zoo.create_model("toy-tiny", pretrained=True, dim=64)


def test_zoo_list_says_where_weights_come_from_and_what_a_pip_install_must_do(tmp_path, monkeypatch, capsys):
    """In a checkout the store has the files; a wheel has the manifest alone: zoo list and the
    download error then name ZOO_HUB instead of promising weights."""
    import shutil

    from zoo.hub import fetch, manifest, shipped_store

    monkeypatch.delenv("ZOO_HUB", raising=False)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^bitnet-tiny\s+store/", out, re.M) and "set ZOO_HUB:" not in out
    wheel_store = tmp_path / "wheel-store"  # what pip installs: the manifest, no weights
    wheel_store.mkdir()
    shutil.copy(shipped_store() / "manifest.json", wheel_store / "manifest.json")
    monkeypatch.setattr(fetch, "shipped_store", lambda: wheel_store)
    monkeypatch.setattr(manifest, "shipped_store", lambda: wheel_store)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^bitnet-tiny\s+set ZOO_HUB", out, re.M) and re.search(r"^dense-small\s+-", out, re.M)
    assert "set ZOO_HUB: published in the project's store/, which a pip install does not carry" in out
    assert main(["generate", "bitnet-tiny"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "set ZOO_HUB to a moezoo checkout's store/ folder" in error[0]
