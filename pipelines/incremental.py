"""Incremental runs: skip items whose content and stage fingerprints are already in the lake.

Inside each engine task, before any heavy stage, each item's bytes are hashed while they are
read (``transforms.media.fetch_input``) and compared with the ``descriptions`` row it already
has, looked up by key at the table version the driver pinned. Same bytes + same metadata
(title, tags, text, published_at: the prompt reads them) + same pipeline fingerprint (models,
revisions, prompt, parameters) → nothing to do. ``force`` redoes all.
"""

from __future__ import annotations

from typing import Any

from core.hashing import stable_hash
from schemas.store import DeltaStore
from transforms.manifest import METADATA_FIELDS
from transforms.stage import Record


def pipeline_fingerprint(stage_fingerprints: dict[str, str]) -> str:
    """One hash over every stage's fingerprint: anything that changes the output changes it."""
    return stable_hash(stage_fingerprints)


def done_keys(
    store: DeltaStore, item_ids: list[str], version: int | None, force: bool
) -> set[tuple]:
    """What ``descriptions`` at ``version`` holds of these items, as comparable keys: one read
    for a whole task (None version: no table yet; ``force``: nothing counts as done)."""
    if force or version is None or not item_ids:
        return set()
    metadata = list(METADATA_FIELDS)
    columns = ["item_id", "content_sha256", "pipeline_fingerprint", *metadata]
    known = store.read("descriptions", version=version, columns=columns, keys=item_ids)
    return {
        (
            row["item_id"],
            row["content_sha256"],
            row["pipeline_fingerprint"],
            comparable_metadata(row, metadata),
        )
        for row in known.to_pylist()
    }


def split_done(
    records: list[Record], known: set[tuple], fingerprint: str
) -> tuple[list[Record], list[Record]]:
    """(to process, already done) for hashed ``records``: done when the lake holds the same
    bytes and metadata under the same pipeline fingerprint (``done_keys``)."""
    metadata = list(METADATA_FIELDS)
    todo, done = [], []
    for record in records:
        key = (
            record["item_id"],
            record["content_sha256"],
            fingerprint,
            comparable_metadata(record, metadata),
        )
        (done if record["content_sha256"] and key in known else todo).append(record)
    return todo, done


def comparable_metadata(item: dict[str, Any], fields: list[str]) -> tuple:
    """What the input says of an item (``fields`` of its metadata), comparable between a
    record and its stored row: an edited title or tags is new content."""
    return tuple(tuple(item.get(f) or ()) if f == "tags" else item.get(f) for f in fields)
