"""The text commands of ``zoo``: ``generate`` (streams a continuation), ``chat`` (an interactive
continuation loop for base models) and ``serve`` (an OpenAI-compatible HTTP server,
:mod:`zoo.serving`). All three load any model source into the inference form (BitNet b1.58 packed
ternary weights, arXiv 2402.17764; Q-Sparse top-K inputs, arXiv 2407.10969) and decode with
:mod:`zoo.text`, whose sampling defaults they show in ``--help``.
"""

from __future__ import annotations

import argparse
import sys

from zoo.text import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLING


def escaped(text: str) -> str:
    """A command-line string with its backslash escapes read (``--stop '\\n\\n'`` is a blank line)."""
    import codecs

    try:
        return codecs.decode(text.encode("utf-8"), "unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{text!r} has a malformed escape: {error}") from None


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Where the model comes from and what it runs on."""
    from zoo.hub.source import SOURCE_HELP

    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--hub", default=None, help="hub for zoo names; None: $ZOO_HUB, else the shipped store")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU (the Triton kernels)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for decoding; None: torch's choice, one per core")


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed: int | None) -> None:
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="at most this many tokens a reply")
    p.add_argument("--temperature", type=float, default=DEFAULT_SAMPLING["temperature"], help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=DEFAULT_SAMPLING["top_k"], help="sample from the k likeliest tokens only; None: all")
    p.add_argument("--top-p", type=float, default=DEFAULT_SAMPLING["top_p"], help="nucleus sampling; 1 to turn it off")
    p.add_argument("--seed", type=int, default=seed, help="makes sampling reproducible")


def sampling_options(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}


def load_for_text(args: argparse.Namespace):
    """The inference form of ``args.source`` on ``args.device``, its tokenizer attached."""
    import torch

    from zoo.interop.loader import load_source
    from zoo.models.inference import to_inference
    from zoo.models.inference.release import is_inference_form

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    model = load_source(args.source, hub=args.hub)[0].to(device)  # the tokenizer rides along (model.tokenizer)
    return model if is_inference_form(model) else to_inference(model)


def cmd_generate(args: argparse.Namespace) -> int:
    from zoo.text import stream_text

    model = load_for_text(args)
    print(args.prompt, end="", flush=True)
    for piece in stream_text(model, args.prompt, args.max_new_tokens, stop=args.stop, **sampling_options(args)):
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Each line read is appended to the conversation and the model continues it, streamed, until a
    stop string or ``--max-new-tokens``; a base model needs no template. Ends at EOF or ``/exit``."""
    from zoo.text import stream_text

    model = load_for_text(args)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"{args.source}: each line you type is continued by the model; /reset forgets the conversation, /exit or Ctrl-D ends.")
    transcript = ""
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            transcript = ""
            continue
        transcript += line.rstrip("\n") + args.separator
        # keep the conversation within the model's window: characters are at least one token each
        transcript = transcript[-model.config.max_seq_len :]
        reply = ""
        for piece in stream_text(model, transcript, args.max_new_tokens, stop=args.stop or ["\n\n"], **sampling_options(args)):
            reply += piece
            print(piece, end="", flush=True)
        print()
        transcript += reply + "\n"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from zoo.serving import serve
    except ImportError:
        raise RuntimeError("zoo serve needs FastAPI and uvicorn: pip install 'moezoo[serve]'") from None

    model = load_for_text(args)
    serve(model, name=args.name or args.source, host=args.host, port=args.port)
    return 0


def add_text_commands(sub) -> None:
    """``generate``, ``chat`` and ``serve`` on the ``zoo`` command's subparsers."""
    formatter = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("generate", help="stream a continuation of --prompt from any model source", formatter_class=formatter)
    add_model_arguments(p)
    p.add_argument("--prompt", default="ROMEO:", help="the text to continue")
    p.add_argument(
        "--stop", action="append", default=None, type=escaped, help="end before this string (repeatable; \\n and other escapes are read)"
    )
    add_sampling_arguments(p, seed=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="talk to a base model: each line you type is continued, streamed", formatter_class=formatter)
    add_model_arguments(p)
    p.add_argument(
        "--stop", action="append", default=None, type=escaped, help="end a reply before this string (repeatable); None: a blank line"
    )
    p.add_argument("--separator", default="\n", type=escaped, help="appended after each line you type (default: %(default)r)")
    add_sampling_arguments(p, seed=None)
    p.set_defaults(func=cmd_chat, max_new_tokens=120)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, streaming)", formatter_class=formatter)
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default=None, help="the model id /v1/models lists (default: the source)")
    p.set_defaults(func=cmd_serve)
