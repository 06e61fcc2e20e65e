"""Incremental runs: skip items whose content and stage fingerprints are already in the lake.

Inside each engine task, before any heavy stage, each item's bytes are hashed while they are
read (``transforms.media.fetch_input``) and compared with the ``descriptions`` row it already
has, looked up by key at the table version the driver pinned. Same bytes + same pipeline
fingerprint (models, revisions, prompt, parameters) → nothing to do. ``force`` redoes all.
"""

from __future__ import annotations

from schemas.store import DeltaStore
from transforms.stage import Record, stable_hash


def pipeline_fingerprint(stage_fingerprints: dict[str, str]) -> str:
    """One hash over every stage's fingerprint: anything that changes the output changes it."""
    return stable_hash(stage_fingerprints)


def split_done(
    store: DeltaStore,
    records: list[Record],
    fingerprint: str,
    force: bool,
    version: int | None = None,
) -> tuple[list[Record], list[Record]]:
    """(to process, already done) for hashed ``records``, against ``descriptions`` at
    ``version`` (None: no table yet, nothing is done)."""
    if force or version is None or not records:
        return records, []
    columns = ["item_id", "content_sha256", "pipeline_fingerprint"]
    keys = [r["item_id"] for r in records]
    known = store.read("descriptions", version=version, columns=columns, keys=keys)
    done_keys = {
        (row["item_id"], row["content_sha256"], row["pipeline_fingerprint"])
        for row in known.to_pylist()
    }
    todo, done = [], []
    for record in records:
        key = (record["item_id"], record["content_sha256"], fingerprint)
        (done if record["content_sha256"] and key in done_keys else todo).append(record)
    return todo, done
