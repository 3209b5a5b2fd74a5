"""One front door: ``zoo generate``, ``zoo eval``, ``zoo export-hf`` (in-process), ``zoo.from_pretrained``
and ``model.init_from`` take the same sources (a shipped zoo name, a release folder, a ``zoo fit``
checkpoint, a transformers folder, ``hf:org/name@rev`` from a stand-in for the Hub), apply the same
overrides, and fail with the same one line for a missing path, an unknown name, a malformed
``hf:`` id and a repository that cannot be fetched."""

import json

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.eval import evaluate_model
from zoo.hub import shipped_store
from zoo.hub.release import save_release
from zoo.hub.source import SourceError, parse_source
from zoo.models import Decoder, ModelConfig
from zoo.tokenizer import ByteTokenizer

ARCH = dict(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=64, weight_quant="ternary", sparsity="topk", k_ratio=0.5)
REPO, REVISION = "moezoo/toy", "v1"
SOURCES = ["name", "release", "ckpt", "transformers-folder", "hf"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Each form of source holding the same tiny model (the name: a shipped checkpoint), and the
    Hub stood in for by a snapshot_download that serves the release folder for REPO@REVISION."""
    import huggingface_hub

    from zoo.interop.export import export_hf

    monkeypatch.setenv("ZOO_HUB", shipped_store().as_uri())
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**ARCH)).eval()
    release = save_release(model, ByteTokenizer(), tmp_path / "release", {"steps": 1}, name="toy")
    # what zoo fit writes (ZooLitModule: "model."-prefixed weights, arch hyper-parameters, provenance)
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in zoo.from_pretrained(release).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"arch": model.config.to_dict(), "lr": 1e-3}, "zoo_metrics": {"steps": 1}}, ckpt)
    transformers_folder = export_hf(release, tmp_path / "exported")  # moezoo classes: ternary and top-K
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        if (repo_id, revision) != (REPO, REVISION):
            raise RuntimeError(f"404 Client Error: Repository Not Found for url: https://huggingface.co/api/models/{repo_id}")
        return str(release)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    sources = {
        "name": "bitnet-qsparse-tiny",
        "release": str(release),
        "ckpt": str(ckpt),
        "transformers-folder": str(transformers_folder),
        "hf": f"hf:{REPO}@{REVISION}",
    }
    return {"sources": sources, "release": release, "calls": calls}


def reference(world, kind):
    """The model every form of ``kind`` must load."""
    return zoo.create_model("bitnet-qsparse-tiny", pretrained=True) if kind == "name" else zoo.from_pretrained(world["release"])


def test_the_resolver_names_each_form():
    assert parse_source("bitnet-qsparse-tiny").kind == "name"
    for text in ("hf:org/name@main", "hf://org/name@main"):
        hf = parse_source(text)
        assert (hf.kind, hf.repo, hf.revision, hf.explicit, str(hf)) == ("hf", "org/name", "main", True, "hf:org/name@main")
    bare = parse_source("org/name")  # no such path here: a repository id, as huggingface_hub reads it
    assert (bare.kind, bare.repo, bare.explicit) == ("hf", "org/name", False)
    for path in ("./org/name", "runs/a/b", "/abs/run", "~/run", "last.ckpt", "runs/x.ckpt"):
        assert parse_source(path).kind == "path", path


@pytest.mark.parametrize("kind", SOURCES)
def test_every_entry_point_takes_every_form(kind, world, tmp_path, capsys):
    source = world["sources"][kind]
    expected = reference(world, kind)
    tokens = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = expected(tokens)
        torch.testing.assert_close(zoo.from_pretrained(source)(tokens), want, rtol=1e-5, atol=1e-5)

    # the same overrides on every form: a field that holds no parameter, dtype; one that does is refused
    denser = zoo.from_pretrained(source, k_ratio=0.75, kernel="torch", dtype="bfloat16")
    assert (denser.config.k_ratio, denser.config.kernel, denser.tok_embeddings.weight.dtype) == (0.75, "torch", torch.bfloat16)
    with pytest.raises(ValueError, match="the override of dim changes the released parameters"):
        zoo.from_pretrained(source, dim=64)

    # zoo generate: the greedy continuation of the inference form zoo.from_pretrained gives
    inference = zoo.from_pretrained(source, inference=True)
    prompt = "ROMEO:"
    ids = torch.tensor([list(prompt.encode())])
    continuation = ByteTokenizer().decode(zoo.generate(inference, ids, 6, temperature=0)[0].tolist())
    capsys.readouterr()
    assert main(["generate", source, "--prompt", prompt, "--max-new-tokens", "6", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == prompt + continuation + "\n"

    # zoo eval: the same numbers as evaluating that model directly
    assert main(["eval", source, "--corpus", "ptb", "--max-batches", "1", "--batch-size", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    direct = evaluate_model(inference, ByteTokenizer(), corpus="ptb", max_batches=1, batch_size=2)
    assert result["source"] == source and result["tokens"] == direct["tokens"] > 0
    assert result["bpb"] == pytest.approx(direct["bpb"], rel=1e-6)

    # zoo export-hf: a transformers folder, which is itself a source that loads the same model
    out = tmp_path / "export"
    assert main(["export-hf", source, str(out)]) == 0
    assert "written to" in capsys.readouterr().out
    with torch.no_grad():
        torch.testing.assert_close(zoo.from_pretrained(out)(tokens), want, rtol=1e-5, atol=1e-5)
    if kind == "hf":  # the release patterns alone: a release repository downloads nothing else
        assert set(world["calls"]) == {(REPO, REVISION)}


BAD = {
    "missing path": lambda tmp: (str(tmp / "runs" / "gone"), "no such file or directory"),
    "missing relative path": lambda tmp: ("runs/gone.ckpt", "no such file or directory"),
    "unknown name": lambda tmp: ("no-such-model", "not a published zoo model (published: "),
    "registered name without weights": lambda tmp: ("dense-small", "registered zoo model, but no weights are published"),
    "malformed hf id": lambda tmp: ("hf:not-a-repo", "not a Hugging Face repository id"),
    "unfetchable repository": lambda tmp: ("someone/gone", "no such local path, and the Hugging Face repository hf:someone/gone cannot"),
}


@pytest.mark.parametrize("case", BAD)
def test_every_entry_point_gives_the_same_one_line_error(case, world, tmp_path, capsys):
    source, given = BAD[case](tmp_path)
    with pytest.raises(SourceError) as caught:
        zoo.from_pretrained(source)
    message = str(caught.value)
    assert message.startswith(f"{source}: ") and given in message and "\n" not in message
    assert message.endswith(
        "; expected "
        + (
            "hf:org/name[@revision]"
            if case == "malformed hf id"
            else "a zoo name, a local path (release folder, transformers folder or zoo fit .ckpt) or hf:org/name[@revision]"
        )
    )
    capsys.readouterr()
    for command in (["generate", source], ["eval", source], ["export-hf", source, str(tmp_path / "out")]):
        assert main(command) == 1, command
        assert capsys.readouterr().err == f"zoo {command[0]}: error: {message}\n"
    assert not (tmp_path / "out").exists()

    from zoo.interop.harness import ZooLM
    from zoo.train.module import ZooLitModule

    for load in (lambda: ZooLitModule(arch=ModelConfig(**ARCH), init_from=source), lambda: ZooLM(pretrained=source)):
        with pytest.raises(SourceError) as caught:
            load()
        assert str(caught.value) == message
