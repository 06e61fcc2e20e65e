"""Room kept on a local lake's disk for a run's closing ``runs`` row.

A run records itself as ``running`` first and closes its row when it ends. If the disk fills
in between (staging, a MERGE, another process), the closing write would fail too, and the
lake would say ``running`` about a run that ended with an error it saw. So a run on a local
lake writes ``RESERVE_BYTES`` under ``<lake>/_reserve/`` at its start and frees them just
before the closing row.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from core import storage

logger = logging.getLogger(__name__)
RESERVE_BYTES = 1 << 20  # a runs row MERGE with its log entry takes tens of KiB


def reserve_space(lake: str, run_id: str) -> Path | None:
    """The reserve file of ``run_id``; None on object storage (it does not fill), or where
    the disk has no room for it already."""
    if not storage.is_local(lake):
        return None
    try:
        path = Path(storage.join_under(lake, "_reserve", run_id))
    except storage.PathEscape as exc:  # _reserve links out of the lake: reserve nothing there
        logger.warning("no room reserved for the closing runs row: %s", exc)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(RESERVE_BYTES))  # random: no filesystem compresses it away
    except OSError as exc:
        logger.warning("no room reserved for the closing runs row: %s", exc)
        path.unlink(missing_ok=True)
        return None
    return path


def release_space(reserve: Path | None) -> None:
    """Free the reserve (before the closing row is written)."""
    if reserve is not None:
        reserve.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another run's reserve is still there
            reserve.parent.rmdir()
