"""Trains the tiny zoo entries at one budget, several seeds, resumably; publishes on request.

    python leaderboard/train_zoo.py [--entries NAME ...] [--tokens 4600000] [--seeds-for dense-tiny=3 ...]
                                    [--threads 2] [--out runs/zoo] [--publish [--store store]]

Every run sees the same corpus (Shakespeare train split, byte tokenizer), sequence length (256),
batch (16), token budget and data order, so the leaderboard compares architectures, not budgets;
seeds (``seed_everything``: initialisation and dropout-free training noise) differ per run. The
default budget, 4.6M tokens (1,124 steps of 16 x 256), is 1.02 passes over the train split's
4.5M tokens (1,103 batches a pass).

The driver is safe to stop and start again: a run whose ``release/`` exists is done and skipped;
an unfinished one continues from its ``last.ckpt`` (``zoo fit`` checkpoints every
``--checkpoint-every`` steps and on SIGTERM), with exactly the batches it would have seen. Each
run's output goes to ``<out>/<name>/seed<k>.log``. ``--publish`` exports every finished release
with bf16 matrices and publishes it into ``store/``: seed 0 as ``<name>``, seed k as
``<name>-seed<k>`` (the leaderboard scores an entry over all its published seeds).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.hub.registry import list_models  # noqa: E402

BATCH, SEQ = 16, 256
DEFAULT_TOKENS = 4_600_000
# Seed noise is measured on these; bitnet-tiny's verdict against dense-tiny on PTB flipped between a
# normal and a t draw of that noise, so its own spread is measured too (issue 26).
DEFAULT_SEEDS = {"dense-tiny": 3, "bitnet-qsparse-tiny": 3, "bitnet-tiny": 3}


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / name / f"seed{seed}"


def last_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def fit_command(name: str, seed: int, steps: int, directory: Path, checkpoint_every: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "zoo.cli",
        "fit",
        "--config",
        name,
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={checkpoint_every}",
        f"--trainer.default_root_dir={directory}",
        "--trainer.enable_progress_bar=false",
        f"--data.batch_size={BATCH}",
        f"--model.arch.max_seq_len={SEQ}",
        "--data.seed=0",  # one data order for every run: seeds vary the model, not the batches
        f"--seed_everything={1337 + seed}",
    ]
    resume = last_checkpoint(directory)
    return command + ([f"--ckpt_path={resume}"] if resume else [])


def train(name: str, seed: int, steps: int, out: Path, checkpoint_every: int, threads: int | None) -> bool:
    """Runs (or continues) one training run; True when its release exists afterwards."""
    directory = run_dir(out, name, seed)
    if (directory / "release" / "model.safetensors").is_file():
        return True
    directory.mkdir(parents=True, exist_ok=True)
    command = fit_command(name, seed, steps, directory, checkpoint_every)
    resumed = "--ckpt_path" in " ".join(command)
    print(f"{'continuing' if resumed else 'training'} {name} seed {seed}: {steps} steps ({steps * BATCH * SEQ:,} tokens)", flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with (directory.parent / f"seed{seed}.log").open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            code = process.wait()
        except KeyboardInterrupt:  # pass the stop on: zoo fit writes a resumable last.ckpt on SIGTERM
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
    if code not in (0, 143):
        print(f"  {name} seed {seed} failed (exit {code}); see {directory.parent / f'seed{seed}.log'}", flush=True)
    return (directory / "release" / "model.safetensors").is_file()


def published_name(name: str, seed: int) -> str:
    """The hub name of a run: the entry's own name for seed 0, ``<entry>-seed<k>`` for seed k (the
    leaderboard scores an entry as the mean of all its published seeds)."""
    return name if seed == 0 else f"{name}-seed{seed}"


def publish(name: str, seed: int, out: Path, tokens: int, store: Path) -> None:
    release = run_dir(out, name, seed) / "release"
    compact = run_dir(out, name, seed) / "release-bf16"
    zoo = [sys.executable, "-m", "zoo.cli"]
    source = (
        f"zoo fit --config {name}, {tokens:,} tokens of Shakespeare (bytes, 1.02 passes over the train split), "
        f"batch {BATCH} x {SEQ}, seed {1337 + seed}"
    )
    # published checkpoints are small: full-precision matrices bf16, ternary ones 2-bit
    subprocess.run([*zoo, "export", str(release), str(compact), "--name", name, "--bf16"], check=True, cwd=ROOT)
    subprocess.run(
        [*zoo, "publish", str(compact), published_name(name, seed), "--store", str(store), "--source", source],
        check=True,
        cwd=ROOT,
    )


def stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def parse_seeds(items: list[str]) -> dict[str, int]:
    seeds = dict(DEFAULT_SEEDS)
    for item in items:
        name, _, count = item.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"train_zoo: --seeds-for expects NAME=COUNT with COUNT >= 1, got {item!r}")
        seeds[name] = int(count)
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="*", default=[n for n in list_models() if n.endswith("-tiny")])
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="training tokens per run (rounded up to whole steps)")
    parser.add_argument(
        "--seeds-for",
        nargs="*",
        default=[],
        metavar="NAME=COUNT",
        help="seeds per entry (default 1; 3 for dense-tiny, bitnet-qsparse-tiny and bitnet-tiny)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between validation + checkpoint")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "zoo")
    parser.add_argument("--publish", action="store_true", help="publish every finished release into store/ (seed k as NAME-seedK)")
    parser.add_argument("--store", type=Path, default=ROOT / "store", help="the store --publish writes into (default: the shipped store/)")
    args = parser.parse_args(argv)
    # a scheduler's (or session's) SIGTERM stops the current run resumably, like Ctrl-C
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    unknown = sorted(set(args.entries) - set(list_models()))
    if unknown:
        raise SystemExit(f"train_zoo: unknown entries {unknown}; registered: {', '.join(list_models())}")
    seeds = parse_seeds(args.seeds_for)
    steps = math.ceil(args.tokens / (BATCH * SEQ))
    # seed 0 of every entry first, so a cut-short campaign still covers the whole board
    plan = [
        (name, seed) for seed in range(max(seeds.get(n, 1) for n in args.entries)) for name in args.entries if seed < seeds.get(name, 1)
    ]
    try:
        done = [(name, seed) for name, seed in plan if train(name, seed, steps, args.out, args.checkpoint_every, args.threads)]
    except KeyboardInterrupt:
        print("stopped; the current run left a resumable checkpoint: run the same command to continue", flush=True)
        return 130
    print(f"{len(done)} of {len(plan)} runs finished", flush=True)
    if args.publish:
        for name, seed in done:
            publish(name, seed, args.out, steps * BATCH * SEQ, args.store)
    return 0 if len(done) == len(plan) else 1


if __name__ == "__main__":
    sys.exit(main())
