"""Zoo checkpoints: the registry of names, the manifest, publishing into a store, verified
downloads from a hub, release directories (:mod:`zoo.hub.release`) and the parsing of model
sources (:mod:`zoo.hub.source`). Release directories load torch, safetensors and YAML, so they are
imported by name, not from here. The transformers interchange lives in :mod:`zoo.interop`, which
imports the hub, never the other way round.

A released checkpoint is a directory of plain files (``model.safetensors``, ``config.yaml``,
``tokenizer.json``, ``metrics.json``, ``README.md``). A *hub* is a root under which each
checkpoint lives at ``<hub>/<name>/<file>``: a folder or ``file://`` URL (with the hub's
``manifest.json`` beside the checkpoints), an ``http(s)://`` mirror, or a Hugging Face repository
``hf://org/repo[@revision]``, read through huggingface_hub (its cache, ``HF_HUB_OFFLINE``; the
files are checked against the zoo's manifest, never trusted from the repository).

Weights are never package data. The project's *store* is the folder ``store/`` of a source
checkout (manifest and weights); a wheel carries its ``manifest.json`` alone, as
``zoo/store/manifest.json``. ``ZOO_HUB`` or ``hub=`` names one hub to use; by default a download
tries the store, then the hubs the manifest lists under the checkpoint's ``sources``, in order.

Manifest schema (``version`` 1)::

    {"version": 1,
     "checkpoints": {
        NAME: {"files": {RELPATH: {"sha256": "<64 lowercase hex>", "size": <int bytes>}},
               "source": "free text: how the checkpoint was produced",
               "sources": ["hf://org/repo@revision", "https://mirror/root"],  # optional
               ...any other keys are kept but ignored}}}

Which manifest a download trusts: the hub's own ``manifest.json``; when the hub has none
(a bytes-only mirror, any Hugging Face repository), the shipped one. Every online download keeps a copy of the manifest it
used in the cache, so offline mode can verify what is cached without touching the hub.

Cache layout, under ``zoo.paths.cache_dir("checkpoints")`` (``$ZOO_HOME/checkpoints``)::

    <name>/<file>                 verified files only (what ``download`` returns)
    <name>/.<file>.part           bytes received so far; resumed with an HTTP Range request
    <name>/.<file>.lock           filelock serialising processes that fetch the same file
    <name>/.<file>.verified       size, mtime and sha256 of the verified file (skips re-hashing)
    .hubs/<hash of hub URL>.json  the manifest last used for that hub (for offline mode)

This module only moves and hashes bytes: nothing is ever unpickled or imported from a hub.
"""

from zoo.hub.fetch import download, fetch_hub_manifest, trusted_manifest
from zoo.hub.manifest import (
    DEFAULT_TIMEOUT,
    DownloadError,
    NotCachedError,
    UnknownCheckpointError,
    default_hub,
    file_sha256,
    load_manifest,
    publish,
    shipped_store,
)

__all__ = [
    "ENTRIES",
    "SIZES",
    "config_path",
    "create_model",
    "list_models",
    "model_config",
    "DEFAULT_TIMEOUT",
    "DownloadError",
    "NotCachedError",
    "UnknownCheckpointError",
    "default_hub",
    "download",
    "fetch_hub_manifest",
    "trusted_manifest",
    "file_sha256",
    "load_manifest",
    "publish",
    "shipped_store",
]

_REGISTRY_NAMES = ("ENTRIES", "SIZES", "canonical_name", "config_path", "create_model", "list_models", "model_config", "pretrained_models")


def __getattr__(name: str):
    # The registry builds models (torch); loaded on first use so that `zoo --help` and the
    # manifest and download code stay torch-free.
    if name in _REGISTRY_NAMES:
        from zoo.hub import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo.hub' has no attribute {name!r}")
