"""The ``zoo`` command: LightningCLI's ``fit/validate/test/predict`` plus the zoo's own subcommands.

``zoo fit --config configs/<entry>-<size>.yaml`` trains; ``zoo list``, ``zoo export``,
``zoo download``, ``zoo eval`` and ``zoo bench`` are plain argparse commands, and ``zoo generate``,
``zoo chat`` and ``zoo serve`` come from :mod:`zoo.text_cli`.
Everything heavy (Lightning, Triton, datasets) is imported inside the command that needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _format_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def weights_label(source: str | None) -> str:
    """The ``weights`` column of ``zoo list`` for a published name (see ``zoo.hub.fetch.weights_source``)."""
    if source is None:
        return "set ZOO_HUB"
    return {"hub": "yes", "store": "store/", "cache": "cached"}.get(source) or source.split("://")[0]


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.hub import DownloadError
    from zoo.hub.fetch import NO_COPY_HINT, trusted_manifest, weights_source
    from zoo.hub.registry import entry_of, list_models, model_config, pretrained_models, replicate_names
    from zoo.models.counts import config_counts

    try:
        published: list[str] | None = pretrained_models(args.hub)  # entries, each with its seed replicates after it
        entries = trusted_manifest(args.hub)["checkpoints"]
    except DownloadError as error:  # an unreachable hub must not hide the registry
        print(f"zoo list: cannot tell which names have weights: {error}", file=sys.stderr)
        published, entries = None, {}
    rows = []
    # every registered name, each followed by its published seed replicates (same config)
    for name in [n for entry in list_models() for n in [entry, *replicate_names(entry, published or ())]]:
        stats = config_counts(model_config(entry_of(name)))  # arithmetic: no model is built, torch is not imported
        source = weights_source(name, entries[name], args.hub) if name in entries else None
        rows.append(
            {
                "name": name,
                "pretrained": None if published is None else name in published,
                "weights_from": source,
                "total_params": stats.total_params,
                "non_embedding_params": stats.non_embedding_params,
                "activated_params": round(stats.activated_params),
                "weight_bytes_per_token": round(stats.weight_bytes_per_token),
                "basis": "nominal",
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "weights", "total", "non-emb", "activated*", "weight MB/token")
    table = [header] + [
        (
            r["name"],
            {True: weights_label(r["weights_from"]), False: "-", None: "?"}[r["pretrained"]],
            _format_count(r["total_params"]),
            _format_count(r["non_embedding_params"]),
            _format_count(r["activated_params"]),
            f"{r['weight_bytes_per_token'] / 1e6:.3f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\nweights: where zoo.create_model(name, pretrained=True) / zoo download name get them: store/ (this checkout's), "
        "cached, hf or https (a source the manifest lists), yes (the hub you named); bare entry names mean -tiny"
    )
    if any(r["pretrained"] and r["weights_from"] is None for r in rows):
        print(f"set ZOO_HUB: published in the project's store/, which a pip install does not carry: {NO_COPY_HINT}")
    print(
        "* activated parameters per token (Q-Sparse §3.6) from the configured top-K alone; "
        "measured values on data are in leaderboard/LEADERBOARD.md"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.hub.release import save_release
    from zoo.interop.loader import load_source

    model, tokenizer, metrics = load_source(args.checkpoint)
    out = save_release(model, tokenizer, args.out_dir, metrics, name=args.name or args.out_dir.rstrip("/").split("/")[-1], bf16=args.bf16)
    print(f"release written to {out}")
    return 0


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from zoo.interop.gguf import write_gguf
    from zoo.interop.loader import load_source

    model, _, _ = load_source(args.src)
    out = write_gguf(model, args.out, args.type, name=args.src.rstrip("/").split("/")[-1])
    print(f"GGUF file written to {out} ({out.stat().st_size:,} bytes)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from zoo.hub import UnknownCheckpointError, download
    from zoo.hub.source import SourceError, parse_source, unpublished

    # the sources resolver decides what the argument is, so `zoo download runs/x` says it is a path
    source = parse_source(args.name)
    if source.kind != "name":  # a path is local already; a repository is cached by huggingface_hub when loaded
        raise SourceError(args.name, "a local path" if source.kind == "path" else "a Hugging Face repository", "a zoo name")
    try:
        print(download(args.name, hub=args.hub, offline=args.offline or None))
    except UnknownCheckpointError as error:
        raise unpublished(args.name, error.known, expected="a zoo name") from None
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from zoo.hub import publish

    if (args.release_dir is None) != (args.name is None):
        raise ValueError("zoo publish takes a release folder and its name together (or neither, with --to)")
    names = None
    if args.release_dir is not None:
        entry = publish(args.release_dir, args.name, store=args.store, source=args.source)
        print(json.dumps({args.name: entry}, indent=2))
        names = [args.name]
    elif args.to is None:
        raise ValueError("zoo publish needs a release folder and a name, or --to hf:org/repo to upload the store")
    if args.to is not None:
        from zoo.hub.hf_source import upload_to_hf

        url = "hf://" + args.to.removeprefix("hf://").removeprefix("hf:")
        uploaded = upload_to_hf(args.store, url, names)
        print(f"uploaded {', '.join(uploaded)} to {url}; recorded it among their sources in {args.store}/manifest.json")
    return 0


# What a local file's extension says about the datasets builder that reads it (zoo eval --data-files).
LOCAL_BUILDER_OF = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def eval_data(corpus: str, split: str, data_files: list[str] | None) -> tuple[str, dict | None]:
    """(corpus, data_files) for ``zoo eval``: a corpus that names an existing file, or ``--data-files``,
    means local text (never a Hub dataset of that name), read by the builder its extension implies."""
    if data_files is None and os.path.isfile(corpus):
        data_files, corpus = [corpus], ""
    if data_files is None:
        return corpus, None
    from zoo.data.corpus import LOCAL_BUILDERS

    if corpus not in ("", "shakespeare", *LOCAL_BUILDERS):
        allowed = ", ".join(LOCAL_BUILDERS[:-1]) + f" or {LOCAL_BUILDERS[-1]}"
        raise ValueError(f"--data-files reads local files; --corpus must be {allowed} with it, got {corpus!r}")
    if corpus in ("", "shakespeare"):  # the default: let the first file's extension decide
        corpus = LOCAL_BUILDER_OF.get(os.path.splitext(data_files[0])[1].lower(), "text")
    return corpus, {split: list(data_files)}


def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.eval.bpb import evaluate_source

    corpus, data_files = eval_data(args.corpus, args.split, args.data_files)
    result = evaluate_source(
        args.source,
        corpus=corpus,
        data_files=data_files,
        split=args.split,
        hub=args.hub,
        max_batches=args.max_batches,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from zoo.curves import plot_run

    out = plot_run(args.run, args.out or f"{os.path.basename(os.path.abspath(args.run))}-curves.png")
    print(f"curves drawn to {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    from zoo.bench.common import BenchOptions, default_output, write_jsonl

    if args.what == "gpu":
        from zoo.bench import gpu

        return gpu.main(["--out", args.out or str(default_output("bench_gpu")), *(["--quick"] if args.quick else [])])
    options = BenchOptions(device=args.device, quick=args.quick, configs=tuple(args.config) if args.config else None, threads=args.threads)
    module = importlib.import_module(f"zoo.bench.{args.what}")
    records = module.run(**options.arguments(args.what, module.OPTIONS))
    for item in records:
        print(json.dumps(item, sort_keys=True))
    if not args.no_save:
        out = write_jsonl(records, args.out or default_output(f"bench_{args.what}.jsonl"))
        print(f"{len(records)} results appended to {out}")
    return 0


def _version() -> str:
    """The installed distribution's version (the source tree's pyproject when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moezoo")
    except PackageNotFoundError:
        return "unknown (not installed)"


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments get one line naming the option and where to read more, not a usage wall."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from zoo.hub.source import SOURCE_HELP

    parser = OneLineErrors(
        prog="zoo",
        description="moezoo: sparse decoder LLMs. Training: zoo {fit,validate,test,predict} --config configs/<entry>-<size>.yaml "
        "(LightningCLI; see zoo fit --help).",
    )
    parser.add_argument("--version", action="version", version=f"moezoo {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list the registered zoo models, which have weights, and their parameter counts")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table (key 'pretrained': has weights)")
    p.add_argument("--hub", default=None, help="hub whose manifest says which names have weights (default: $ZOO_HUB or the store)")
    p.set_defaults(func=cmd_list)
    from zoo.text_cli import add_text_commands

    add_text_commands(sub)

    p = sub.add_parser("export", help="write a release directory (safetensors, config, tokenizer, metrics) from any model source")
    p.add_argument("checkpoint", help=SOURCE_HELP)
    p.add_argument("out_dir")
    p.add_argument("--name", default=None, help="model name for the model card")
    p.add_argument(
        "--bf16", action="store_true", help="store full-precision matrices as bf16 (half the bytes), as published checkpoints are"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-gguf", help="write a dense or BitNet model as one GGUF file llama.cpp loads")
    p.add_argument("src", help=SOURCE_HELP)
    p.add_argument("out", help="the .gguf file to write")
    p.add_argument(
        "--type",
        default=None,
        choices=("f32", "f16", "bf16", "q8_0", "tq2_0", "tq1_0"),
        help="projection weights: f32 (default for full precision), f16, bf16, q8_0; tq2_0 (default for ternary) or tq1_0",
    )
    p.set_defaults(func=cmd_export_gguf)

    p = sub.add_parser("download", help="download and verify a zoo checkpoint into the cache; prints its directory")
    p.add_argument("name")
    p.add_argument("--hub", default=None)
    p.add_argument("--offline", action="store_true", help="use the cache only (same as ZOO_OFFLINE=1)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "publish", help="copy a release directory into a hub store and update its manifest; --to uploads the store to the Hugging Face Hub"
    )
    p.add_argument("release_dir", nargs="?", default=None)
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--to", default=None, help="hf:org/repo[@revision]: upload the store's checkpoints (or just NAME) there")
    p.add_argument("--store", required=True, help="store folder to publish into (created; its manifest.json is updated)")
    p.add_argument("--source", default="", help="how the checkpoint was produced (free text)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("eval", help="bits per byte and perplexity of a model on a corpus split")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--corpus", default="shakespeare", help="shakespeare, ptb, a Hugging Face dataset name, or a local file")
    p.add_argument("--data-files", nargs="+", default=None, help="local files to score (.txt as text, .json/.jsonl, .csv, .parquet)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--hub", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="draw a zoo fit run's loss, bpb, learning-rate and sparsity curves into a PNG")
    p.add_argument("run", help="the run folder (its newest lightning_logs/version_*), a version folder, or a metrics.csv")
    p.add_argument("--out", default=None, help="the PNG to write (default: ./<run>-curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("bench", help="benchmarks; results appended as JSON lines to --out (default ./bench_<what>.jsonl)")
    p.add_argument(
        "what",
        choices=("kernels", "moe", "train", "decode", "peer", "hf", "gpu"),
        help="hf: greedy decode through transformers (the export-hf class) against zoo.generate; "
        "gpu: every GPU test and benchmark in one call (--out is a folder)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer shapes, for a smoke run")
    p.add_argument(
        "--config", action="append", help="(train/decode) entries or config files to compare, default every tiny entry; (peer) shapes"
    )
    p.add_argument("--threads", type=int, default=None, help="pin torch's CPU threads (steadier ratios on a busy machine)")
    p.add_argument("--out", default=None)
    p.add_argument("--no-save", action="store_true")
    p.set_defaults(func=cmd_bench)

    from zoo.interop.hf_cli import add_export_hf_arguments, add_import_hf_arguments

    add_import_hf_arguments(sub.add_parser("import-hf", help="convert a Hugging Face Llama/Mistral/Qwen2 directory into a release"))
    add_export_hf_arguments(sub.add_parser("export-hf", help="write any zoo model as a folder transformers loads (and lm-eval scores)"))

    from zoo.scaling import add_scaling_parser

    add_scaling_parser(sub)

    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (zoo {name} --help for its options)", add_help=False)
    return parser


def run_lightning(argv: Sequence[str] | None) -> int:
    from zoo.train.cli import lightning_main

    return lightning_main(None if argv is None else list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        # LightningCLI reads sys.argv itself; handing it the same list again only earns a warning.
        return run_lightning(None if from_command_line else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `zoo list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, NotImplementedError) as error:
        # Bad input and failed downloads are the user's to fix: one clear line, no traceback.
        if os.environ.get("ZOO_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
