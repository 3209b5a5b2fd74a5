"""zoo.from_pretrained / save_pretrained / push_to_hub: the release format through huggingface_hub
(mocked: no network here), and names, folders and checkpoints alike."""

import pytest
import torch

import zoo
from zoo.models import Decoder, ModelConfig

ARCH = dict(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32, weight_quant="ternary", sparsity="topk", k_ratio=0.5)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Decoder(ModelConfig(**ARCH)).eval()


def test_save_then_from_pretrained_reproduces_the_model(model, tmp_path):
    folder = zoo.save_pretrained(model, tmp_path / "mine")
    loaded = zoo.from_pretrained(folder)
    tokens = torch.randint(0, 256, (1, 16))
    torch.testing.assert_close(loaded(tokens), model(tokens))
    denser = zoo.from_pretrained(folder, k_ratio=0.9)  # an override that holds no parameter
    assert denser.config.k_ratio == 0.9


def test_from_pretrained_reads_a_hub_repository_through_huggingface_hub(model, tmp_path, monkeypatch):
    import huggingface_hub

    folder = zoo.save_pretrained(model, tmp_path / "snapshot")
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = zoo.from_pretrained("moezoo/toy@v3", inference=True)
    assert calls == [("moezoo/toy", "v3", ("model.safetensors", "config.yaml", "tokenizer.json", "metrics.json", "README.md"))]
    tokens = torch.randint(0, 256, (1, 16))
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=1e-5, atol=1e-5)


def test_push_to_hub_uploads_a_release_folder(model, monkeypatch):
    import huggingface_hub

    seen = {}

    class FakeApi:
        def __init__(self, token=None):
            seen["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            seen["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            seen["model"] = zoo.from_pretrained(folder_path)
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = zoo.push_to_hub(model, "me/toy", private=True, token="t")
    assert url == "https://huggingface.co/me/toy/commit/abc" and seen["repo"] == ("me/toy", True, True) and seen["token"] == "t"
    assert seen["files"] == ["README.md", "config.yaml", "metrics.json", "model.safetensors", "tokenizer.json"]
    assert seen["model"].config.k_ratio == 0.5
    with pytest.raises(ValueError, match="org/name"):
        zoo.push_to_hub(model, "no-slash")
