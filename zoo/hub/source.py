"""What a model *source* string means: one resolver for every place that loads a model
(``zoo.from_pretrained``, ``zoo generate``, ``zoo eval``, ``zoo export``, ``zoo export-hf``,
``zoo import-hf``, ``zoo download``, evaluation, the lm-eval model and ``model.init_from``).

Three forms, tried in this order:

1. ``hf:org/name[@revision]`` (or ``hf://org/name[@revision]``): a Hugging Face repository, read
   through huggingface_hub (its cache, ``HF_HUB_OFFLINE``). Explicit; never a local path.
2. A local path that exists: a release folder, a transformers folder (``config.json`` +
   safetensors) or a ``zoo fit`` checkpoint file. An existing path always wins over a name.
3. Otherwise, by its shape:

   - something that can only be a path (absolute, ``./``, ``../`` or ``~`` at the start, more
     than one ``/``, a backslash, or a file suffix such as ``.ckpt``): a *missing path* error;
   - ``org/name[@revision]``: the Hugging Face repository ``hf:org/name[@revision]`` (a bare
     repository id, as huggingface_hub and transformers take it; write ``./org/name`` for a local
     folder of that name); if it cannot be fetched, the error says that no such path exists either;
   - a zoo name (``bitnet-qsparse-tiny``, ``dense-tiny-seed1``; a bare entry such as ``qsparse``
     means its tiny size), published in the hub's manifest.

Every failure is one :class:`SourceError` line: ``<source>: <what was found>; expected <forms>``.
This module is plain string work (no torch), so the ``zoo`` command can use it cheaply.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HF_PREFIXES = ("hf://", "hf:")
# A repository id as huggingface_hub validates it: two names of letters, digits, '-', '_', '.'.
REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
# A checkpoint name as the manifest allows it (zoo.hub.manifest.check_name).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Files a source can name; a name with one of these suffixes is a path, never a zoo name.
FILE_SUFFIXES = (".ckpt", ".safetensors", ".yaml", ".yml", ".json", ".pt", ".pth", ".bin")
EVERY_FORM = "a zoo name, a local path (release folder, transformers folder or zoo fit .ckpt) or hf:org/name[@revision]"
# The help of every command argument that takes a source (zoo generate, eval, export, export-hf).
SOURCE_HELP = (
    "zoo name (e.g. bitnet-qsparse-tiny; downloaded from the hub), local path (release folder, transformers folder, "
    "zoo fit .ckpt) or hf:org/name[@revision]; a bare org/name that is no local path means hf:org/name"
)


class SourceError(FileNotFoundError, ValueError):
    """A source that names nothing loadable: ``<source>: <given>; expected <expected>``, one line.

    Both a ``FileNotFoundError`` (a missing path, an unknown name) and a ``ValueError`` (a
    malformed source), as the separate errors it replaces were; the ``zoo`` command prints it
    without a traceback.
    """

    def __init__(self, source: object, given: str, expected: str = EVERY_FORM) -> None:
        self.source, self.given, self.expected = str(source), " ".join(given.split()), expected
        super().__init__(f"{self.source}: {self.given}; expected {self.expected}")

    def __str__(self) -> str:  # OSError would format a second argument as "[Errno ...]"
        return self.args[0]


@dataclass(frozen=True)
class Source:
    """A resolved source: ``kind`` is ``name``, ``path`` or ``hf``; ``text`` is what the user wrote."""

    kind: str
    text: str
    name: str | None = None  # kind "name"
    path: Path | None = None  # kind "path"
    repo: str | None = None  # kind "hf": org/name
    revision: str | None = None  # kind "hf": branch, tag or commit; None for the default branch
    explicit: bool = True  # kind "hf": written with hf:, not a bare org/name

    def __str__(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.repo}" + (f"@{self.revision}" if self.revision else "")
        return str(self.path) if self.kind == "path" else str(self.name)


def can_only_be_a_path(text: str) -> bool:
    """True for text no zoo name or repository id can be: ``/x``, ``./x``, ``~/x``, ``a/b/c``, ``x.ckpt``..."""
    return (
        text.startswith(("/", ".", "~"))
        or text.count("/") > 1
        or "\\" in text
        or (os.sep != "/" and os.sep in text)
        or text.lower().endswith(FILE_SUFFIXES)
    )


def parse_hf(text: str) -> Source:
    """``hf:org/name[@revision]`` (or ``hf://...``) → a ``hf`` source; raises :class:`SourceError` when malformed."""
    body = text.split(":", 1)[1].removeprefix("//")
    match = REPO_ID.match(body)
    if not match:
        raise SourceError(text, f"not a Hugging Face repository id ({body!r} is not org/name[@revision])", "hf:org/name[@revision]")
    return Source("hf", text, repo=match["repo"], revision=match["revision"])


def parse_source(source: str | os.PathLike) -> Source:
    """The form ``source`` takes (see the module's rules); raises :class:`SourceError` for text that
    fits none. Whether a name is published or a repository exists is for the loader to find out."""
    if isinstance(source, os.PathLike):  # a Path object is a path, whatever its text looks like
        path = Path(source).expanduser()
        return Source("path", str(source), path=path)
    text = str(source).strip()
    if not text:
        raise SourceError(repr(str(source)), "an empty source")
    if text.startswith(HF_PREFIXES):
        return parse_hf(text)
    path = Path(text).expanduser()
    if path.exists() or can_only_be_a_path(text):
        return Source("path", text, path=path)
    match = REPO_ID.match(text)
    if match:
        return Source("hf", text, repo=match["repo"], revision=match["revision"], explicit=False)
    if NAME.match(text):
        return Source("name", text, name=text)
    raise SourceError(text, "neither an existing path, a zoo name nor a Hugging Face repository id")


def missing_path(source: Source) -> SourceError:
    """The one error for a path that does not exist."""
    return SourceError(source.text, "no such file or directory")


def unpublished(name: str, published: list[str], *, registered: bool = False, expected: str = EVERY_FORM) -> SourceError:
    """The one error for a zoo name the hub's manifest does not publish."""
    why = " (a registered zoo model, but no weights are published for it)" if registered else ""
    return SourceError(name, f"not a published zoo model{why} (published: {', '.join(sorted(published))})", expected)
