"""Incremental runs: skip items whose content and stage fingerprints are already in the lake.

Before any heavy stage, each item's file is hashed (streaming, only inside the allowed roots)
and compared with the ``descriptions`` row it already has. Same bytes + same pipeline
fingerprint (models, revisions, prompt, parameters) → nothing to do. ``force`` redoes all.
"""

from __future__ import annotations

from schemas.store import DeltaStore
from transforms.config import MediaConfig
from transforms.manifest import content_sha256
from transforms.media import confine
from transforms.stage import Record, StageError, stable_hash


def pipeline_fingerprint(stage_fingerprints: dict[str, str]) -> str:
    """One hash over every stage's fingerprint: anything that changes the output changes it."""
    return stable_hash(stage_fingerprints)


def hash_inputs(records: list[Record], media: MediaConfig) -> None:
    """Set ``content_sha256`` on each record (None when the path is refused or unreadable)."""
    for record in records:
        try:
            record["content_sha256"] = content_sha256(confine(record["uri"], media))
        except StageError:
            record["content_sha256"] = None


def split_done(
    store: DeltaStore, records: list[Record], fingerprint: str, force: bool
) -> tuple[list[Record], list[Record]]:
    """(to process, already done) for hashed ``records``."""
    if force or not store.exists("descriptions"):
        return records, []
    columns = ["item_id", "content_sha256", "pipeline_fingerprint"]
    known = store.read("descriptions", columns=columns, keys=[r["item_id"] for r in records])
    done_keys = {
        (row["item_id"], row["content_sha256"], row["pipeline_fingerprint"])
        for row in known.to_pylist()
    }
    todo, done = [], []
    for record in records:
        key = (record["item_id"], record["content_sha256"], fingerprint)
        (done if record["content_sha256"] and key in done_keys else todo).append(record)
    return todo, done
