"""moezoo: a model zoo of sparse decoder LLMs (Q-Sparse, BitNet b1.58, dropless MoE).

Kept light on purpose: importing ``zoo`` loads neither Lightning nor Triton, so that
``import zoo.kernels`` stays cheap. Public helpers are imported lazily.
"""

from __future__ import annotations

from zoo.text import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLING  # the one sampling default (no torch there)

__version__ = "0.1.0"
__all__ = [
    "create_model",
    "from_pretrained",
    "generate",
    "list_models",
    "push_to_hub",
    "save_pretrained",
    "stream",
    "to_inference",
    "__version__",
]


def create_model(name: str, pretrained: bool = False, inference: bool = False, **overrides):
    """Build a registered zoo model by name (e.g. ``"bitnet-qsparse-tiny"``); see :mod:`zoo.hub.registry`.

    ``inference=True`` gives the inference form: packed 2-bit ternary weights run by the packed kernels.
    """
    from zoo.hub.registry import create_model as _create

    return _create(name, pretrained=pretrained, inference=inference, **overrides)


def to_inference(model, *, embedding_dtype=None):
    """Converts a trained model in place into its inference form (see :mod:`zoo.models.inference`);
    ``embedding_dtype`` (``torch.bfloat16`` or ``torch.int8``) also shrinks the embedding and LM head."""
    from zoo.models.inference import to_inference as _convert

    return _convert(model, embedding_dtype=embedding_dtype)


def generate(
    model,
    prompt,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    stream: bool = False,
    tokenizer=None,
    stop=None,
    stop_ids=(),
    temperature: float = DEFAULT_SAMPLING["temperature"],
    top_k=DEFAULT_SAMPLING["top_k"],
    top_p=DEFAULT_SAMPLING["top_p"],
    seed=None,
    report=None,
):
    """Continues ``prompt`` by up to ``max_new_tokens`` tokens and returns what it was given:

    - a string: the continuation's text (without the prompt), through ``tokenizer`` or the model's
      own (``model.tokenizer``), ending before a ``stop`` string or at a token of ``stop_ids``;
    - token ids ``[B, T]``: the new ids ``[B, max_new_tokens]``.

    ``stream=True`` returns an iterator instead: text pieces for a string (see :mod:`zoo.text`),
    a ``[B]`` tensor a step for ids. Sampling defaults to temperature 0.8 with nucleus top-p 0.95,
    the CLI's default too; ``temperature=0`` is greedy; ``seed`` makes it reproducible. ``report``,
    a dict, receives a text prompt's token counts and why it ended (``"stop"`` or ``"length"``).
    """
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    if isinstance(prompt, str):
        from zoo.text import generate_text, stream_text

        text_options = {"tokenizer": tokenizer, "stop": stop, "stop_ids": stop_ids, "report": report, **sampling}
        run = stream_text if stream else generate_text
        return run(model, prompt, max_new_tokens, **text_options)
    if stop is not None or tuple(stop_ids) or report is not None:
        raise ValueError("stop, stop_ids and report apply to a text prompt; with token ids, stop iterating zoo.generate(..., stream=True)")
    from zoo.models.generate import generate as generate_ids
    from zoo.models.generate import stream_tokens

    return (stream_tokens if stream else generate_ids)(model, prompt, max_new_tokens, **sampling)


def stream(model, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **options):
    """``zoo.generate(model, prompt, ..., stream=True)``: yields the continuation's text piece by piece."""
    return generate(model, prompt, max_new_tokens, stream=True, **options)


def list_models(filter: str = "", pretrained: bool = False, *, hub=None) -> list[str]:
    """Names of the registered zoo entries, as timm's ``list_models``: ``filter`` a shell pattern
    (``"*bitnet*"``), ``pretrained=True`` only those with published weights on ``hub`` (default:
    ``$ZOO_HUB`` or the shipped store's manifest)."""
    from fnmatch import fnmatchcase

    from zoo.hub.registry import list_models as _list
    from zoo.hub.registry import pretrained_models

    names = pretrained_models(hub) if pretrained else _list()
    return [name for name in names if not filter or fnmatchcase(name, filter)]


def from_pretrained(source, *, inference: bool = False, hub=None, **overrides):
    """A zoo model from any source: a zoo name, a local path (release folder, transformers folder,
    ``zoo fit`` checkpoint) or ``hf:org/name[@revision]``, the same sources ``zoo generate``,
    ``zoo eval`` and ``zoo export-hf`` take; see :mod:`zoo.hub.source` and :mod:`zoo.interop.loader`.
    ``overrides``: fields that hold no parameter (``k_ratio``, ``kernel``...) and ``dtype``."""
    from zoo.interop.loader import from_pretrained as _load

    return _load(source, inference=inference, hub=hub, **overrides)


def save_pretrained(model, out_dir, **options):
    """Writes ``model`` as a release folder; see :mod:`zoo.hub.pretrained`."""
    from zoo.hub.pretrained import save_pretrained as _save

    return _save(model, out_dir, **options)


def push_to_hub(model, repo_id: str, **options) -> str:
    """Uploads ``model`` as a release to a Hugging Face repository; see :mod:`zoo.hub.pretrained`."""
    from zoo.hub.pretrained import push_to_hub as _push

    return _push(model, repo_id, **options)
