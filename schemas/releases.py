"""The consumer's reader of releases (written by ``enrich publish``): the table versions a
release pins, so every downstream reader sees the same validated snapshot.

    versions = release_versions("s3://bucket/lake", "2026-11-01")
    read_table("s3://bucket/lake", "semantic_ids", version=versions["semantic_ids"])
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import UsageError
from schemas.store import DeltaStore


def release_versions(lake: str | Path, label: str) -> dict[str, int | None]:
    """The table versions recorded for release ``label``."""
    rows = DeltaStore(lake).read_or_empty("releases", keys=[label]).to_pylist()
    if not rows:
        raise UsageError(f"release '{label}' is not in the releases table of {lake}")
    return json.loads(rows[0]["table_versions_json"])
