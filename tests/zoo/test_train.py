"""zoo fit end to end: every config, falling loss, exact resume, DDP parity, continue-training,
non-finite losses, release export and generation."""

import csv
import math
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.hub.registry import list_models
from zoo.paths import configs_dir
from zoo.train import lr_multiplier, run_lightning_cli

TINY_ARCH = [
    "--model.arch.dim",
    "32",
    "--model.arch.n_layers",
    "1",
    "--model.arch.n_heads",
    "2",
    "--model.arch.n_kv_heads",
    "2",
    "--model.arch.ffn_dim",
    "64",
    "--model.arch.max_seq_len",
    "32",
]


def fit_args(tmp_path, config="dense-tiny", steps=30, *extra):
    return [
        "fit",
        "--config",
        str(configs_dir() / f"{config}.yaml"),
        *TINY_ARCH,
        "--data.batch_size",
        "8",
        "--trainer.max_steps",
        str(steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--sample.tokens",
        "16",
        *extra,
    ]


def logged(tmp_path, key):
    path = sorted(Path(tmp_path).rglob("metrics.csv"))[-1]
    return [float(row[key]) for row in csv.DictReader(path.open()) if row.get(key)]


def test_every_yaml_in_configs_parses_strictly(capsys):
    for path in sorted(configs_dir().rglob("*.yaml")):
        with pytest.raises(SystemExit) as exit_info:
            run_lightning_cli(["fit", "--config", str(path), "--print_config"])
        assert exit_info.value.code in (0, None), path
    printed = capsys.readouterr().out
    assert "arch:" in printed and "max_seq_len" in printed


@pytest.mark.parametrize("config", [n for n in list_models() if n.endswith("-tiny")])
def test_fit_every_tiny_config_with_falling_loss(tmp_path, config, capsys):
    assert main(fit_args(tmp_path, config, 30)) == 0
    losses = logged(tmp_path, "train/loss")
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    assert logged(tmp_path, "val/bpb"), "validation bits per byte were not logged"
    release = tmp_path / "release"
    assert {p.name for p in release.iterdir()} >= {"model.safetensors", "config.yaml", "tokenizer.json", "metrics.json", "README.md"}
    out = capsys.readouterr().out
    assert "sample (16 tokens after 'ROMEO:')" in out and str(release) in out


def test_sparsity_and_activated_params_are_logged(tmp_path):
    run_lightning_cli(fit_args(tmp_path, "qsparse-tiny", 4, "--sparsity_log.every_n_steps", "2"))
    ffn_in = logged(tmp_path, "sparsity/ffn_in")
    assert ffn_in and all(s >= 0.3 - 1e-6 for s in ffn_in)  # k_ratio 0.7 keeps 70 %
    assert logged(tmp_path, "activated_params")
    assert logged(tmp_path, "train/tokens_per_s")


def test_the_largest_expert_load_is_logged_for_moe(tmp_path):
    run_lightning_cli(fit_args(tmp_path, "moe-tiny", 2, "--sparsity_log.every_n_steps", "2"))
    loads = logged(tmp_path, "moe/max_expert_load")
    assert loads and all(0.0 < load <= 1.0 for load in loads), loads


def final_weights(cli):
    return {k: v.detach().clone() for k, v in cli.model.model.state_dict().items()}


class Interrupted(Exception):
    pass


def test_resume_is_exact(tmp_path, monkeypatch):
    from zoo.train import module as lit

    args = ("bitnet-qsparse-tiny", 8, "--trainer.val_check_interval", "4")
    straight = run_lightning_cli(fit_args(tmp_path / "a", *args))

    # The same run, killed right after step 4 was checkpointed (callbacks run before the module hook).
    original = lit.ZooLitModule.on_train_batch_end

    def crash_at_step_4(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step == 4:
            raise Interrupted()

    monkeypatch.setattr(lit.ZooLitModule, "on_train_batch_end", crash_at_step_4)
    with pytest.raises(Interrupted):
        run_lightning_cli(fit_args(tmp_path / "b", *args))
    monkeypatch.undo()
    ckpt = next((tmp_path / "b").rglob("last.ckpt"))
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    resumed = run_lightning_cli(fit_args(tmp_path / "b", *args, "--ckpt_path", str(ckpt)))
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(resumed)[key]), key
    assert logged(tmp_path / "a", "train/loss")[4:] == logged(tmp_path / "b", "train/loss")[-4:]


def test_continue_training_starts_from_dense_weights(tmp_path):
    dense = run_lightning_cli(fit_args(tmp_path / "dense", "dense-tiny", 3))
    release = tmp_path / "dense" / "release"
    sparse = run_lightning_cli(
        fit_args(
            tmp_path / "sparse",
            "dense-tiny",
            1,
            "--model.arch.sparsity",
            "topk",
            "--model.arch.k_ratio",
            "0.5",
            "--model.init_from",
            str(release),
            "--trainer.max_steps",
            "1",
        )
    )
    from zoo.hub.release import load_release
    from zoo.models import Decoder

    dense_model, _, _ = load_release(release)
    sparse_start = Decoder(sparse.model.arch)
    from zoo.hub.release import load_weights

    load_weights(sparse_start, dense_model.state_dict(), "test")
    for key, value in dense_model.state_dict().items():
        assert torch.equal(value, sparse_start.state_dict()[key])
    tokens = torch.randint(0, 256, (2, 16))
    assert not torch.allclose(dense_model(tokens), sparse_start.eval()(tokens))
    assert sparse.model.model.layers[0].ffn.w_down.sparsity == "topk"
    del dense


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    from zoo.train import module as lit

    original = lit.ZooLitModule._lm_loss

    def poisoned(self, batch):
        nll, count = original(self, batch)
        return (nll * float("nan") if self.global_step >= 3 else nll), count

    monkeypatch.setattr(lit.ZooLitModule, "_lm_loss", poisoned)
    with pytest.raises(lit.NonFiniteLossError, match="non-finite training loss .* at step 3.*Last good checkpoint: .*last.ckpt"):
        run_lightning_cli(fit_args(tmp_path, "dense-tiny", 6, "--trainer.val_check_interval", "2"))
    saved = torch.load(next(Path(tmp_path).rglob("last.ckpt")), weights_only=True)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_generate_and_export_from_a_checkpoint(tmp_path, capsys):
    cli = run_lightning_cli(fit_args(tmp_path, "dense-tiny", 2))
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    capsys.readouterr()
    assert main(["generate", ckpt, "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", ckpt, "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "3"]) == 0
    assert first == capsys.readouterr().out and first.startswith("ROMEO:")
    assert main(["export", ckpt, str(tmp_path / "rel")]) == 0
    assert main(["generate", str(tmp_path / "rel"), "--max-new-tokens", "12", "--seed", "3", "--prompt", "ROMEO:"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == first.splitlines()[-1]


def test_learning_rate_schedules():
    kwargs = dict(warmup_steps=10, total_steps=110, min_ratio=0.1)
    cosine = [lr_multiplier(s, schedule="cosine", **kwargs) for s in range(110)]
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert cosine[10] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))
    bitnet = [lr_multiplier(s, schedule="bitnet", **kwargs) for s in range(110)]
    assert bitnet[54] == pytest.approx(cosine[54]) and bitnet[55] == pytest.approx(cosine[55] * 2 / 3)


def test_ddp_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = ("qsparse-tiny", 4, "--trainer.accelerator", "cpu", "--sample.prompt", "")
    single = run_lightning_cli(fit_args(tmp_path / "one", *common, "--data.batch_size", "8"))
    ddp = run_lightning_cli(
        fit_args(tmp_path / "two", *common, "--data.batch_size", "4", "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2")
    )
    assert ddp.trainer.world_size == 2
    one, two = final_weights(single), final_weights(ddp)
    for key in one:
        # Same samples per step; only the order of the gradient sum differs (all-reduce vs one batch).
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert not torch.equal(
        one["layers.0.attn.wqkv.weight"],
        run_lightning_cli(fit_args(tmp_path / "fresh", "qsparse-tiny", 0, "--sample.prompt", "")).model.model.state_dict()[
            "layers.0.attn.wqkv.weight"
        ],
    )


def test_continue_training_and_fine_tuning_configs_merge(tmp_path):
    dense = tmp_path / "dense"
    run_lightning_cli(fit_args(dense, "dense-tiny", 2))
    args = fit_args(tmp_path / "cont", "dense-tiny", 2)
    config_at = args.index("--config") + 2
    merged = args[:config_at] + ["--config", str(configs_dir() / "continue-qsparse.yaml")] + args[config_at:]
    cont = run_lightning_cli(merged + ["--model.init_from", str(dense / "release"), "--trainer.default_root_dir", str(tmp_path / "cont")])
    assert cont.model.arch.sparsity == "topk" and cont.model.arch.k_ratio == 0.6 and cont.model.arch.dim == 32
    finetune = fit_args(tmp_path / "ft", "dense-tiny", 2)
    finetune = finetune[:config_at] + ["--config", str(configs_dir() / "finetune-ptb.yaml")] + finetune[config_at:]
    ft = run_lightning_cli(
        finetune + ["--model.init_from", str(tmp_path / "cont" / "release"), "--trainer.default_root_dir", str(tmp_path / "ft")]
    )
    assert ft.datamodule.source.name == "ptb" and logged(tmp_path / "ft", "val/bpb")


def test_moe_bias_balancing_steps_once_per_optimizer_step(tmp_path):
    """Two optimizer steps of two accumulated micro-batches each: the selection bias moves twice
    (by ±rate or 0 per expert each time), not once per forward."""
    rate = 0.01
    cli = run_lightning_cli(
        fit_args(tmp_path, "moe-tiny", 2, "--model.arch.balance_bias_rate", str(rate), "--trainer.accumulate_grad_batches", "2")
    )
    biases = torch.stack([layer.ffn.selection_bias for layer in cli.model.model.layers])
    steps = biases / rate
    assert torch.allclose(steps, steps.round(), atol=1e-4), biases
    assert steps.abs().max() <= 2 + 1e-4 and steps.abs().max() > 0, steps


def test_fit_from_python_takes_dotted_overrides_and_logs_the_learning_rate(tmp_path):
    from zoo.train import fit, override_arguments

    assert override_arguments({"trainer.max_steps": 3, "sample.prompt": "", "trainer.logger": False, "model.betas": [0.9, 0.9]}) == [
        "--trainer.max_steps=3",
        "--sample.prompt=",
        "--trainer.logger=false",
        "--model.betas=[0.9, 0.9]",
    ]
    with pytest.raises(ValueError, match="dotted config keys"):
        override_arguments({"--trainer.max_steps": 3})
    overrides = dict(zip((a.removeprefix("--") for a in TINY_ARCH[::2]), (int(v) for v in TINY_ARCH[1::2])))
    overrides |= {
        "data.batch_size": 4,
        "trainer.max_steps": 3,
        "trainer.val_check_interval": 3,
        "trainer.limit_val_batches": 1,
        "trainer.log_every_n_steps": 1,
        "trainer.enable_progress_bar": False,
        "trainer.default_root_dir": str(tmp_path),
        "sample.prompt": "",
        "release.enabled": False,
    }
    cli = fit("qsparse-tiny", overrides)
    assert cli.trainer.global_step == 3 and cli.model.arch.dim == 32 and cli.model.arch.sparsity == "topk"
    assert not (tmp_path / "release").exists()  # release.enabled false
    rates = logged(tmp_path, "lr-AdamW/pg1")  # Lightning's LearningRateMonitor, added by default
    assert len(rates) == 3 and rates[0] < rates[1] < rates[2]  # in the warmup
