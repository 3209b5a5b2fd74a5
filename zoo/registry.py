"""The zoo's named entries: ``<entry>-<size>`` maps to ``configs/<entry>-<size>.yaml``.

The YAML file is the single source of an entry's hyper-parameters: its ``model.arch`` section is
a :class:`~zoo.models.ModelConfig`, read here for :func:`create_model` and by LightningCLI for
``zoo fit``. Nothing in YAML names a Python class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.models.config import ModelConfig
from zoo.paths import configs_dir

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


def config_path(name: str) -> Path:
    """The YAML of a registered name; a bare entry name means its ``tiny`` size."""
    if name in ENTRIES:
        name = f"{name}-tiny"
    path = configs_dir() / f"{name}.yaml"
    if name not in list_models():
        raise KeyError(f"unknown zoo model {name!r}; registered: {', '.join(list_models())}")
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    """A config file as plain data, with OmegaConf interpolations resolved."""
    from omegaconf import OmegaConf

    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # omegaconf raises several types for syntax and interpolation errors
        raise ValueError(f"{path}: not a valid YAML config ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def arch_from_yaml(path: Path, **overrides: Any) -> ModelConfig:
    """The ``model.arch`` section of a config file as a validated :class:`ModelConfig`."""
    arch = load_yaml(path).get("model", {}).get("arch")
    if not isinstance(arch, dict):
        raise ValueError(f"{path}: expected a 'model.arch' mapping of ModelConfig fields")
    return ModelConfig.from_dict({**arch, **overrides}, source=str(path))


def model_config(name: str, **overrides: Any) -> ModelConfig:
    return arch_from_yaml(config_path(name), **overrides)


def create_model(name: str, pretrained: bool = False, **overrides: Any):
    """A :class:`~zoo.models.Decoder` for a registered name; ``pretrained`` loads the released weights."""
    if pretrained:
        from zoo.release import load_release_model
        from zoo.hub import download

        if overrides:
            raise ValueError("create_model: overrides cannot change a pretrained model's architecture")
        return load_release_model(download(name))
    from zoo.models.decoder import Decoder

    return Decoder(model_config(name, **overrides))
