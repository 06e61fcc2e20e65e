"""Commit stage outputs to the lake. Shared by every engine so the tables come out the same."""

from __future__ import annotations

import json
import logging
import pickle
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.rows import table_rows, utc_now
from schemas.store import DeltaStore
from schemas.tables import LINEAGE_COLUMNS
from transforms.config import Config
from transforms.stage import Record, add_stats

logger = logging.getLogger(__name__)
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks", "errors", "runs")
ENVELOPE_TABLES = ("descriptions", "embeddings", "errors")  # what the stages produce per item
STAGE_STATS = "_stage_stats"  # staged envelopes of one task's stage stats each (Spark)


def new_run_id() -> str:
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunSummary:
    """What one run did; becomes the ``runs`` row and the CLI summary."""

    run_id: str
    engine: str
    input: str
    started_at: datetime
    items: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    stage_stats: dict[str, Any] = field(default_factory=dict)
    stage_fingerprints: dict[str, str] = field(default_factory=dict)
    codebook_version: str | None = None
    codebook_metrics: dict[str, Any] = field(default_factory=dict)
    table_versions: dict[str, int | None] = field(default_factory=dict)
    status: str = "running"
    notes: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    def count(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Add one chunk's committed rows to the counts."""
        self.succeeded += len(rows["descriptions"])
        self.failed += len(rows["errors"])
        self.items += len(rows["descriptions"]) + len(rows["errors"])
        for row in rows["errors"]:
            self.errors_by_code[row["code"]] = self.errors_by_code.get(row["code"], 0) + 1


def commit_rows(
    store: DeltaStore, rows: dict[str, list[dict[str, Any]]], summary: RunSummary, chunk: int
) -> list[dict[str, Any]]:
    """MERGE descriptions, embeddings and errors (``chunk`` rows per commit), clear errors
    that resolved, count them; returns the SID inputs (the embedding rows' item, vector and
    lineage)."""
    chunk = max(1, chunk)

    def merge(name: str) -> None:
        for start in range(0, len(rows[name]), chunk):
            store.merge(name, rows[name][start : start + chunk])

    # descriptions go last: a description row is what marks an item done for the next run,
    # so a crash between these commits leaves the item to be redone, never half-written.
    merge("embeddings")
    store.delete_keys("errors", [row["item_id"] for row in rows["descriptions"]])
    merge("errors")
    merge("descriptions")
    summary.count(rows)
    return [
        {k: row[k] for k in ("item_id", "embedding", *LINEAGE_COLUMNS)}
        for row in rows["embeddings"]
    ]


def record_run(store: DeltaStore, config: Config, summary: RunSummary) -> None:
    """Write the run's lineage row (config, fingerprints, counts, table versions)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("video-enrich")
    except PackageNotFoundError:
        tool_version = "dev"
    summary.table_versions = {
        name: store.version(name) for name in FEATURE_TABLES if name != "runs"
    }
    store.merge(
        "runs",
        [
            {
                "run_id": summary.run_id,
                "status": summary.status,
                "engine": summary.engine,
                "input": summary.input,
                "started_at": summary.started_at,
                "finished_at": summary.finished_at,
                "items": summary.items,
                "succeeded": summary.succeeded,
                "skipped": summary.skipped,
                "failed": summary.failed,
                "config_fingerprint": config.fingerprint(),
                "config_json": json.dumps(config.model_dump(mode="json"), sort_keys=True),
                "stage_fingerprints_json": json.dumps(summary.stage_fingerprints, sort_keys=True),
                "stage_stats_json": json.dumps(summary.stage_stats, sort_keys=True),
                "table_versions_json": json.dumps(summary.table_versions, sort_keys=True),
                "codebook_version": summary.codebook_version,
                "tool_version": tool_version,
                "updated_at": utc_now(),
            }
        ],
    )


# -- staging: how Beam and Spark hand their results to the one commit step ---------------------


def envelopes(records: list[Record], run_id: str) -> list[dict[str, Any]]:
    """Table rows of processed records, as (table, item_id, pickled row) envelopes that any
    engine can write to Parquet staging files without knowing the table schemas."""
    return [
        staged_envelope(table, row)
        for table, rows in table_rows(records, run_id).items()
        for row in rows
    ]


def staged_envelope(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"table": table, "item_id": row["item_id"], "payload": pickle.dumps(row, protocol=5)}


def read_staged(
    staging: str, tables: tuple[str, ...] = ENVELOPE_TABLES
) -> dict[str, list[dict[str, Any]]]:
    """The staged rows of ``tables``, in item_id order (Parquet files under ``staging``)."""
    import pyarrow.dataset as ds

    files = [str(p) for p in Path(staging).rglob("*.parquet") if p.stat().st_size]
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    if files:
        table = ds.dataset(files, format="parquet").to_table(
            columns=["table", "item_id", "payload"], filter=ds.field("table").isin(tables)
        )
        for name, payload in zip(
            table["table"].to_pylist(), table["payload"].to_pylist(), strict=True
        ):
            grouped[name].append(pickle.loads(payload))
    for rows in grouped.values():
        rows.sort(key=lambda row: row["item_id"])
    return grouped


def commit_staged(
    store: DeltaStore, staging: str, summary: RunSummary, chunk: int
) -> list[dict[str, Any]]:
    """Commit what an engine staged, exactly as the local engine commits its chunks. Staged
    stage-stats rows (one per committed task) become the run's stage stats."""
    staged = read_staged(staging, (*ENVELOPE_TABLES, STAGE_STATS))
    if tasks := staged.pop(STAGE_STATS):
        summary.stage_stats = summed_stage_stats(tasks)
    return commit_rows(store, staged, summary, chunk)


def summed_stage_stats(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {}
    for task in tasks:
        total = add_stats(total, {k: v for k, v in task.items() if k != "item_id"})
    return total
