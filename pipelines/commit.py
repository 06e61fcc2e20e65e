"""Commit stage outputs to the lake. Shared by every engine so the tables come out the same."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.rows import description_row, embedding_row, error_row, utc_now
from schemas.store import DeltaStore
from transforms.config import Config
from transforms.stage import Record, has_error

logger = logging.getLogger(__name__)
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks", "errors", "runs")


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

    def count(self, records: list[Record]) -> None:
        self.items += len(records)
        for record in records:
            if has_error(record):
                self.failed += 1
                code = record["error"]["code"]
                self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
            else:
                self.succeeded += 1


def commit_records(store: DeltaStore, records: list[Record], run_id: str) -> None:
    """MERGE descriptions, embeddings and errors for one chunk; clear errors that resolved."""
    now = utc_now()
    good = [r for r in records if not has_error(r)]
    bad = [r for r in records if has_error(r)]
    store.merge("descriptions", [description_row(r, run_id, now) for r in good])
    store.merge("embeddings", [embedding_row(r, run_id, now) for r in good])
    store.merge("errors", [error_row(r, run_id, now) for r in bad])
    store.delete_keys("errors", [r["item_id"] for r in good])


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
