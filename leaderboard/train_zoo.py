"""Trains every tiny zoo entry with one budget and publishes each release into the shipped store.

    python leaderboard/train_zoo.py [--entries dense-tiny qsparse-tiny ...] [--steps 300] [--threads 1]

Every entry sees the same corpus (Shakespeare, byte tokenizer), sequence length (256), batch
(16), seed and number of steps, so the leaderboard compares architectures, not budgets. Each
run's log goes to runs/zoo/<name>.log; each release is published into store/ with bf16 matrices.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.hub.registry import list_models  # noqa: E402

BATCH, SEQ = 16, 256


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", nargs="*", default=[n for n in list_models() if n.endswith("-tiny")])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (several lanes can run side by side)")
    args = parser.parse_args(argv)
    tokens = args.steps * BATCH * SEQ
    for name in args.entries:
        run_dir = ROOT / "runs" / "zoo" / name
        log = ROOT / "runs" / "zoo" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "zoo.cli",
            "fit",
            "--config",
            str(ROOT / "configs" / f"{name}.yaml"),
            "--trainer.max_steps",
            str(args.steps),
            "--trainer.val_check_interval",
            str(args.steps // 3),
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--data.batch_size",
            str(BATCH),
            "--model.arch.max_seq_len",
            str(SEQ),
            "--data.seed",
            "0",
            "--seed_everything",
            "1337",
        ]
        print(f"training {name} for {args.steps} steps ({tokens:,} tokens); log: {log}", flush=True)
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
        with log.open("w") as handle:
            subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True, cwd=ROOT, env=env)
        if not args.no_publish:
            source = f"zoo fit --config {name}, {args.steps} steps x {BATCH} x {SEQ} tokens = {tokens:,} tokens of Shakespeare (bytes), seed 1337"
            compact = ROOT / "runs" / "zoo" / f"{name}-bf16"
            zoo_command = [sys.executable, "-m", "zoo.cli"]
            # published checkpoints are small: full-precision matrices bf16, ternary ones 2-bit
            subprocess.run([*zoo_command, "export", str(run_dir / "release"), str(compact), "--name", name, "--bf16"], check=True, cwd=ROOT)
            subprocess.run(
                [*zoo_command, "publish", str(compact), name, "--store", str(ROOT / "store"), "--source", source], check=True, cwd=ROOT
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
