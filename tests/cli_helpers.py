"""The one way tests build an ``enrich run`` command line.

``run_argv(source, lake, *settings, extra=...)``: the quick settings (``QUICK``: no ASR, OCR
or visual tags, no progress bar), then the test's own ``key=value`` overrides (later ones win),
then any other flags. A test that needs one of the quick stages passes ``quick=`` without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

QUICK = ("asr.enabled=false", "ocr.enabled=false", "visual.enabled=false", "run.progress=off")


def set_args(settings: Iterable[str]) -> list[str]:
    """``--set key=value`` for each of ``settings``."""
    return [arg for setting in settings for arg in ("--set", setting)]


def run_argv(
    source: Path | str,
    lake: Path | str,
    *settings: str,
    extra: Sequence[str] = (),
    quick: Sequence[str] = QUICK,
) -> list[str]:
    """``enrich run --input source --lake lake`` with ``quick`` and ``settings`` set, then
    ``extra`` flags (``--no-report``, ``--config``, ``--resume``, ...)."""
    overrides = set_args((*quick, *settings))
    return ["run", "--input", str(source), "--lake", str(lake), *overrides, *extra]
