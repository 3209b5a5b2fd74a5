"""``zoo fit`` as a user meets it: the architecture it trains is the registry's, config mistakes are
one line, checkpoints load weights-only (a remote pickle is never run), SIGTERM leaves a resumable
checkpoint and a non-zero exit, checkpoint names and intervals are the user's to set."""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train import fit_args  # noqa: E402  (tests/zoo is on sys.path under pytest)

from zoo.cli import main
from zoo.hub.registry import create_model, list_models, model_config
from zoo.models.config import ModelConfig
from zoo.train import ZooLitModule, lr_multiplier, run_lightning_cli


def shapes(model):
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.mark.parametrize("name", list_models())
def test_fit_trains_the_architecture_the_registry_builds(name):
    cli = run_lightning_cli(["fit", "--config", name], run=False)
    assert cli.model.arch == model_config(name)
    with torch.device("meta"):
        assert shapes(cli.model.model) == shapes(create_model(name))
    if model_config(name).weight_quant == "ternary":
        assert cli.model.arch.has_sub_norm and "layers.0.attn.sub_norm.weight" in cli.model.model.state_dict()


def test_entry_configs_are_deltas_over_their_size_base(tmp_path):
    """An entry file sets only what differs from its size's base, and `zoo fit` composes both, for a
    name, a path, and beside a user's own overlay (which wins)."""
    import yaml

    from zoo.hub.registry import SIZES, config_files, config_path, size_config_path
    from zoo.train.cli import resolve_config_arguments

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            yield from leaves(value, (*prefix, key)) if isinstance(value, dict) else [((*prefix, key), value)]

    for name in list_models():
        base = dict(leaves(yaml.safe_load(size_config_path(name.rsplit("-", 1)[1]).read_text())))
        delta = dict(leaves(yaml.safe_load(config_path(name).read_text())))
        repeated = sorted(".".join(key) for key, value in delta.items() if base.get(key) == value)
        assert not repeated, f"{name} repeats its base: {repeated}"
        assert config_files(config_path(name)) == [size_config_path(name.rsplit("-", 1)[1]), config_path(name)]
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("model:\n  lr: 0.001\n")
    argv, files = resolve_config_arguments(["--config", "qsparse-tiny", f"--config={overlay}", "--trainer.max_steps", "3"])
    assert files == [str(size_config_path("tiny")), str(config_path("qsparse-tiny")), str(overlay)]
    assert argv == [*(a for f in files for a in ("--config", f)), "--trainer.max_steps", "3"]
    assert config_files(overlay) == [overlay]  # a user's own file is taken as it is
    cli = run_lightning_cli(["fit", "--config", str(config_path("qsparse-tiny")), "--config", str(overlay)], run=False)
    assert cli.model.hparams.lr == 0.001 and cli.model.arch == model_config("qsparse-tiny")
    assert cli.datamodule.batch_size == 16  # from the tiny base
    for size in SIZES:  # a size alone is a config too: the dense shape of that size
        assert run_lightning_cli(["fit", "--config", size], run=False).model.arch.dim == model_config(f"dense-{size}").dim


def test_derived_fields_follow_the_final_values():
    # A config built over a resolved default must not inherit its derived values.
    base = ModelConfig()
    ternary = base.replace(weight_quant="ternary")
    assert ternary.has_sub_norm and not base.has_sub_norm
    assert ternary.replace(sub_norm=False).has_sub_norm is False
    wider = base.replace(n_heads=8)
    assert wider.kv_heads == 8 and base.kv_heads == base.n_heads
    assert ModelConfig(n_heads=8, n_kv_heads=2).kv_heads == 2


def run_main(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--model.arch.k_ratio", "1.5"], ["dense-tiny.yaml", "k_ratio", "(0, 1]", "1.5"]),
        (["--model.arch.dim", "abc"], ["model.arch.dim", "int", "abc"]),
        (["--model.arch.k_ration", "0.5"], ["k_ration"]),
        (["--model.arch.k_ratio", "true"], ["k_ratio", "True"]),
        (["--config", "no-such-entry"], ["no-such-entry", "no such config file", "dense-tiny"]),
    ],
)
def test_config_mistakes_are_one_line(capsys, extra, words):
    code, err = run_main(["fit", "--config", "dense-tiny", *extra, "--trainer.max_steps", "1"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("zoo fit: error:"), err
    for word in words:
        assert word in err, (word, err)


def test_mistyped_key_and_malformed_yaml_name_the_file(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  arch:\n    k_ration: 0.5\n")
    code, err = run_main(["fit", "--config", "dense-tiny", "--config", str(typo)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "k_ration" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  arch:\n    dim: [1,\n")
    code, err = run_main(["fit", "--config", str(broken)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(broken) in err and "line 4" in err and "unicode string" not in err


class Payload:
    """Unpickling this runs ``touch marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_remote_checkpoint_is_never_unpickled(tmp_path, http_root, capsys, command):
    root, url = http_root
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "payload": Payload(marker)}, root / "x.ckpt", pickle_protocol=2)
    args = fit_args(tmp_path, "dense-tiny", 1, "--ckpt_path", f"{url}/x.ckpt")
    args[0] = command
    code, err = run_main(args, capsys)
    assert not marker.exists(), "the pickle payload ran"
    assert code != 0 and "was not loaded" in err and len(err.splitlines()) == 1
    # fetched for the call only: nothing left in torch.hub's cache (keyed by file name alone) or $ZOO_HOME
    assert not (Path(torch.hub.get_dir()) / "checkpoints" / "x.ckpt").exists()
    assert not list(Path(os.environ["ZOO_HOME"]).rglob("*.ckpt"))


def test_a_remote_checkpoint_that_cannot_be_fetched_is_one_line(tmp_path, http_root, capsys):
    _, url = http_root
    code, err = run_main(fit_args(tmp_path, "dense-tiny", 1, "--ckpt_path", f"{url}/missing.ckpt"), capsys)
    assert code == 2 and "missing.ckpt: could not be downloaded" in err and len(err.splitlines()) == 1


def test_sigterm_exits_non_zero_with_a_resumable_checkpoint(tmp_path):
    args = fit_args(tmp_path, "dense-tiny", 100000, "--trainer.val_check_interval", "2")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not list(tmp_path.rglob("step=*.ckpt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    last = next(tmp_path.rglob("last.ckpt"))
    assert "--ckpt_path" in err and str(last) in err
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] >= 2 and saved["optimizer_states"]
    assert not list(tmp_path.rglob(".last.ckpt.partial"))
    # and it resumes, weights-only, to a run that ends normally
    resumed = run_lightning_cli(fit_args(tmp_path / "resumed", "dense-tiny", saved["global_step"] + 2, "--ckpt_path", str(last)))
    assert resumed.trainer.global_step == saved["global_step"] + 2


def test_checkpoint_names_and_a_users_own_checkpoint_callback(tmp_path, capsys):
    run_lightning_cli(fit_args(tmp_path / "default", "qsparse-tiny", 4, "--trainer.val_check_interval", "2"))
    names = sorted(p.name for p in (tmp_path / "default").rglob("*.ckpt"))
    assert names == ["last.ckpt", "step=4.ckpt"]
    # zoo plot draws the run's curves where --out says, from the CSV the run logged
    from zoo.curves import PANELS, find_metrics, read_curves

    curves = read_curves(find_metrics(tmp_path / "default"))
    assert {"train/loss", "val/bpb"} <= set(curves) and any(c.startswith("lr-") for c in curves)
    assert any(c.startswith("sparsity/") for c in curves)  # qsparse-tiny logs its measured top-K sparsity
    assert all(any(wanted(c) for c in curves) for _, wanted in PANELS)
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "default"), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "curves drawn to" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nowhere")]) == 1
    assert "no such run folder or metrics file" in capsys.readouterr().err
    mine = fit_args(tmp_path / "mine", "dense-tiny", 3) + [
        "--trainer.callbacks+=ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path / 'mine-ckpts'}",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
    ]
    run_lightning_cli(mine)
    assert sorted(p.name for p in (tmp_path / "mine-ckpts").iterdir()) == [
        "epoch=0-step=1.ckpt",
        "epoch=0-step=2.ckpt",
        "epoch=0-step=3.ckpt",
    ]


def test_zero_steps_writes_no_release_and_says_so(tmp_path, capsys):
    assert main(fit_args(tmp_path, "dense-tiny", 0)) == 0
    assert "no training step ran" in capsys.readouterr().err
    assert not (tmp_path / "release").exists()


def test_bitnet_stages_agree_on_the_middle_of_an_epoch_based_run(tmp_path, monkeypatch):
    seen = []
    original = ZooLitModule.on_train_batch_start

    def record(self, batch, batch_idx):
        original(self, batch, batch_idx)
        group = self.optimizers().param_groups[0]
        seen.append((self.global_step, group["weight_decay"], group["lr"]))

    monkeypatch.setattr(ZooLitModule, "on_train_batch_start", record)
    cli = run_lightning_cli(
        fit_args(
            tmp_path,
            "bitnet-tiny",
            -1,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "6",
            "--trainer.val_check_interval",
            "6",
            "--model.warmup_steps",
            "0",
        )
    )
    assert cli.model.total_steps == 6
    decay = [wd for _, wd, _ in seen]
    assert decay == [0.1, 0.1, 0.1, 0.0, 0.0, 0.0]
    lr = cli.model.hparams.lr
    expected = [lr * lr_multiplier(s, warmup_steps=0, total_steps=6, min_ratio=0.1, schedule="bitnet") for s, _, _ in seen]
    assert [x for _, _, x in seen] == pytest.approx(expected)
    assert expected[3] == pytest.approx(lr * lr_multiplier(3, warmup_steps=0, total_steps=6, min_ratio=0.1, schedule="cosine") * 2 / 3)


def test_export_of_a_checkpoint_keeps_its_provenance(tmp_path):
    cli = run_lightning_cli(fit_args(tmp_path, "dense-tiny", 2))
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    assert main(["export", ckpt, str(tmp_path / "exported")]) == 0
    import json

    metrics = json.loads((tmp_path / "exported" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["corpus"] == "shakespeare" and metrics["tokens_seen"] == 2 * 8 * 32
    assert metrics["hparams"]["lr"] == cli.model.hparams.lr


def test_a_missing_path_is_named_as_a_missing_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "model.ckpt"
    code, err = run_main(["generate", str(missing)], capsys)
    assert code == 1 and "no such file or directory" in err and str(missing) in err
    assert "zoo checkpoint name" not in err


def test_a_short_fit_prints_the_run_and_no_noise(tmp_path):
    """No Lightning advertisements, no tensorboardX warning, no warnings about Lightning's
    internals, and a progress label in steps (the stock one said "Epoch 0/-2")."""
    args = fit_args(tmp_path, "dense-tiny", 2, "--trainer.enable_progress_bar", "true")
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    for noise in ("Tip:", "tensorboardX", "LeafSpec", "/-2", "Warning"):
        assert noise not in output, (noise, output[-3000:])
    assert "release written to" in output and "train (max 2 steps" in output
    assert list(tmp_path.rglob("metrics.csv")), "the explicit CSV logger wrote nothing"
