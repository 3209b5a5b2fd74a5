"""The zoo's named entries: ``<entry>-<size>`` is its size's base config plus the entry's deltas.

``configs/sizes/<size>.yaml`` holds what every entry of a size shares (shape, optimiser, data,
trainer); ``configs/<entry>-<size>.yaml`` only what makes the entry itself (quantisation,
sparsity, experts, its learning-rate recipe, its run folder). :func:`config_files` composes them
in that order, here for :func:`create_model` and in ``zoo fit`` as LightningCLI's repeated
``--config``. The YAML files are the single source of an entry's hyper-parameters: their
``model.arch`` sections are a :class:`~zoo.models.ModelConfig`. Nothing in YAML names a Python class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.models.config import ModelConfig
from zoo.paths import configs_dir

if TYPE_CHECKING:
    from zoo.models.decoder import Decoder

ENTRIES = (
    "dense",
    "qsparse",
    "block-qsparse",
    "bitnet",
    "bitnet-qsparse",
    "moe",
    "qsparse-moe",
    "bitnet-qsparse-moe",
)
SIZES = ("tiny", "small")


def list_models() -> list[str]:
    """Every ``<entry>-<size>`` whose config is shipped, in registry order."""
    root = configs_dir()
    return [f"{e}-{s}" for e in ENTRIES for s in SIZES if (root / f"{e}-{s}.yaml").is_file()]


def with_size(name: str) -> str:
    """A bare entry name (``qsparse``) means its ``tiny`` size; any other name is left as it is."""
    return f"{name}-tiny" if name in ENTRIES else name


def canonical_name(name: str) -> str:
    """``<entry>-<size>`` for a registered name (:func:`with_size` first)."""
    name = with_size(name)
    if name not in list_models():
        raise KeyError(f"unknown zoo model {name!r}; registered: {', '.join(list_models())}")
    return name


def config_path(name: str) -> Path:
    """The YAML of a registered name (a bare entry name means its ``tiny`` size)."""
    return configs_dir() / f"{canonical_name(name)}.yaml"


def pretrained_models(hub: str | None = None) -> list[str]:
    """The registered names with published weights in the manifest ``download`` trusts for ``hub``,
    each followed by its published seed replicates."""
    from zoo.hub.fetch import trusted_manifest

    published = trusted_manifest(hub)["checkpoints"]
    names = []
    for name in list_models():
        if name in published:  # each entry, then its seed replicates (the leaderboard's <entry>-seed<k>)
            names += [name, *sorted(replicate_names(name, published), key=lambda n: int(n.rsplit("seed", 1)[1]))]
    return names


def replicate_names(name: str, published) -> list[str]:
    """The published seed replicates of a registered name: ``<name>-seed<k>``."""
    pattern = re.compile(rf"^{re.escape(name)}-seed\d+$")
    return [other for other in published if pattern.match(other)]


def entry_of(name: str) -> str:
    """The registered name a checkpoint name is of: itself, or the entry of a seed replicate."""
    return re.sub(r"-seed\d+$", "", with_size(name))


def size_config_path(size: str) -> Path:
    """``configs/sizes/<size>.yaml``: what every entry of ``size`` shares."""
    if size not in SIZES:
        raise KeyError(f"unknown zoo size {size!r}; sizes: {', '.join(SIZES)}")
    return configs_dir() / "sizes" / f"{size}.yaml"


def config_files(path: Path) -> list[Path]:
    """The files a config is made of, in merge order: a shipped ``<entry>-<size>.yaml`` is its
    size's base then itself; any other file is itself alone."""
    path = Path(path)
    stem = path.name.removesuffix(".yaml")
    size = stem.rsplit("-", 1)[-1]
    shipped = path.resolve().parent == configs_dir().resolve() and stem in list_models()
    return [size_config_path(size), path] if shipped else [path]


def _merged(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in dicts:
        for key, value in layer.items():
            both = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = _merged([merged[key], value]) if both else value
    return merged


def load_yaml(path: Path) -> dict[str, Any]:
    """A config (with its base, see :func:`config_files`) as plain data, interpolations resolved."""
    files = config_files(path)
    try:
        from omegaconf import OmegaConf
    except ImportError:  # a machine with only torch (a lent GPU): the arch sections interpolate nothing
        import yaml

        return _merged([yaml.safe_load(f.read_text()) or {} for f in files])
    try:
        loaded = OmegaConf.to_container(OmegaConf.merge(*(OmegaConf.load(f) for f in files)), resolve=True)
    except Exception as error:  # omegaconf raises several types for syntax and interpolation errors
        raise ValueError(f"{' + '.join(map(str, files))}: not a valid YAML config ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def arch_from_yaml(path: Path, **overrides: Any) -> ModelConfig:
    """The ``model.arch`` section of a config (with its base) as a validated :class:`ModelConfig`."""
    arch = load_yaml(path).get("model", {}).get("arch")
    if not isinstance(arch, dict):
        raise ValueError(f"{path}: expected a 'model.arch' mapping of ModelConfig fields")
    return ModelConfig.from_dict({**arch, **overrides}, source=str(path))


def model_config(name: str, **overrides: Any) -> ModelConfig:
    return arch_from_yaml(config_path(name), **overrides)


def create_model(name: str, pretrained: bool = False, inference: bool = False, **overrides: Any):
    """A :class:`~zoo.models.Decoder` for a registered name; ``pretrained`` loads the released weights
    (``zoo list`` says which names have them). ``overrides`` are :class:`~zoo.models.ModelConfig`
    fields; on a pretrained model only those that hold no parameter (``k_ratio``, ``sparsity``,
    ``kernel``, ``top_k``, ``moe_impl``...) are accepted.

    ``inference=True`` returns the inference form (:func:`zoo.models.inference.to_inference`):
    ternary projections packed at 2 bits with no latent copy, run by the packed kernels, in eval mode.
    """
    if pretrained:
        # the loader's own path for a zoo name (zoo.interop.loader): a registered name (bare entry
        # names mean -tiny) or any other checkpoint the hub publishes, with the same overrides
        model, tokenizer, _ = load_published(name, **overrides)
        model.tokenizer = tokenizer  # text in and out (zoo.text)
    else:
        from zoo.models.decoder import Decoder

        model = Decoder(model_config(name, **overrides))
    if inference:
        from zoo.models.inference import to_inference

        model = to_inference(model)
    return model


def load_published(name: str, *, hub: str | None = None, **overrides: Any) -> tuple[Decoder, Any, dict[str, Any]]:
    """(model, tokenizer, metrics) of the zoo checkpoint ``name`` (a bare entry name means its tiny
    size), downloaded and verified from ``hub`` (see :func:`zoo.hub.download`); ``overrides`` as in
    :func:`zoo.hub.release.load_release`. A name the hub does not publish is a :class:`~zoo.hub.source.SourceError`."""
    from zoo.hub.fetch import download
    from zoo.hub.manifest import UnknownCheckpointError
    from zoo.hub.release import load_release
    from zoo.hub.source import unpublished

    try:
        folder = download(with_size(name), hub=hub)
    except UnknownCheckpointError as error:
        raise unpublished(name, error.known, registered=with_size(name) in list_models()) from None
    return load_release(folder, **overrides)
