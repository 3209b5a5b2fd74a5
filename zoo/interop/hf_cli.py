"""The arguments of ``zoo import-hf`` and ``zoo export-hf`` (Hugging Face Llama / Mistral / Qwen2
checkpoints, see :mod:`zoo.interop.hf`), kept free of torch: building the ``zoo`` parser, which
``zoo --help`` does, must not import it. The commands import :mod:`zoo.interop.hf` when they run."""

from __future__ import annotations

import argparse

from zoo.hub.source import SOURCE_HELP

# Equal to zoo.interop.convert.MODEL_TYPES and zoo.interop.hf.DTYPES (tests/zoo/test_cli.py keeps them so).
HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "mixtral")
EXPORT_MODEL_TYPES = ("moezoo", *HF_MODEL_TYPES)
DTYPE_NAMES = ("bfloat16", "float16", "float32")


def _cmd_import_hf(args: argparse.Namespace) -> int:
    from zoo.interop.hf import cmd_import_hf

    return cmd_import_hf(args)


def _cmd_export_hf(args: argparse.Namespace) -> int:
    from zoo.interop.export import cmd_export_hf

    return cmd_export_hf(args)


def add_import_hf_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``zoo import-hf`` on ``parser`` (a subparser), with ``func`` set."""
    parser.add_argument(
        "src", help="Hugging Face model folder (config.json + safetensors), or hf:org/name[@revision] (a bare org/name too)"
    )
    parser.add_argument("out", help="release directory to write")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="ModelConfig overrides, e.g. sparsity=topk k_ratio=0.6")
    parser.add_argument("--name", default=None, help="model name for the model card")
    parser.add_argument("--dtype", default=None, choices=DTYPE_NAMES, help="dtype of the stored weights (default float32)")
    parser.set_defaults(func=_cmd_import_hf)
    return parser


def add_export_hf_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``zoo export-hf`` on ``parser`` (a subparser), with ``func`` set."""
    parser.add_argument("src", help=SOURCE_HELP)
    parser.add_argument("out", help="folder to write (config.json, model.safetensors, tokenizer, generation config)")
    parser.add_argument(
        "--model-type",
        dest="model_type",
        default=None,
        choices=EXPORT_MODEL_TYPES,
        help="default: llama (qwen2 with q/k/v biases) for dense full-precision models, else moezoo (trust_remote_code)",
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    parser.set_defaults(func=_cmd_export_hf)
    return parser
