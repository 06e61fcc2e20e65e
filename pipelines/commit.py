"""Commit what engine tasks staged, once ``pipelines.staging`` reconciled it with the plan,
and the run's summary and ``runs`` row. Shared by every engine, so the tables come out the
same."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.config import Config
from core.errors import INPUT_ERROR_CODES, UsageError, echo, error_rate
from pipelines.failures import RunFailed
from pipelines.staging import TaskMarker, staged_files
from schemas.rows import ERROR_IDENTITY, error_identity, run_row, utc_now
from schemas.store import DeltaStore, parquet_dataset
from schemas.tables import ERROR_CODE, TABLES, RunStatus
from transforms.runner import add_stats

logger = logging.getLogger(__name__)
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks", "errors", "runs")


class ErrorRateExceeded(RunFailed):
    """More items failed than ``run.max_error_rate`` allows (the describer endpoint is down,
    a model is broken): what did succeed is committed, but the run is not a success."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


# The one shape of a run id, what ``new_run_id`` makes: 20261101T000000Z-1a2b3c4d (ASCII
# digits only: ``\d`` would also take other scripts' digits).
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")


def new_run_id() -> str:
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def check_run_id(run_id: object, flag: str = "run id") -> str:
    """``run_id`` if it has the shape of a run id (``RUN_ID``); a ``UsageError`` (exit 2)
    otherwise, raised before any path is built from it."""
    if isinstance(run_id, str) and RUN_ID.fullmatch(run_id):
        return run_id
    raise UsageError(
        f"{flag} {echo(run_id)} is not a run id: a run id looks like 20261101T000000Z-1a2b3c4d "
        "(UTC time, then 8 hex digits), as a run prints it and the runs table records it"
    )


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
    runtime: dict[str, Any] = field(default_factory=dict)  # the tasks' runtime, summed
    stage_fingerprints: dict[str, str] = field(default_factory=dict)
    codebook_version: str | None = None
    codebook_metrics: dict[str, Any] = field(default_factory=dict)
    table_versions: dict[str, int | None] = field(default_factory=dict)
    missing_input: int = 0
    known_failures: int = 0  # failed again with the same code on the same content
    status: str = RunStatus.RUNNING
    notes: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    def count(self, marker: TaskMarker) -> None:
        """Add one committed enrich task's counts."""
        self.items += marker.items
        self.succeeded += marker.enriched or 0
        self.failed += marker.failed or 0
        self.skipped += marker.skipped or 0
        self.stage_stats = add_stats(self.stage_stats, marker.stage_stats)
        self.runtime = add_runtime(self.runtime, marker.runtime)
        for code, count in marker.errors_by_code.items():
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + count

    @property
    def error_rate(self) -> float:
        """``core.errors.error_rate`` without the known failures (a known bad file, retried
        each run, is not news)."""
        return error_rate(self.succeeded, self.failed, self.known_failures)

    def check_error_rate(self, limit: float) -> None:
        """Raise ``ErrorRateExceeded`` when the error rate is over ``limit``."""
        if self.error_rate <= limit:
            return
        codes = ", ".join(
            f"{code} {count}"
            for code, count in sorted(self.errors_by_code.items(), key=lambda kv: -kv[1])[:5]
        )
        known = f" ({self.known_failures} known from earlier runs not counted)"
        raise ErrorRateExceeded(
            f"{self.failed - self.known_failures} of "
            f"{self.succeeded + self.failed - self.known_failures} processed items failed"
            + (known if self.known_failures else "")
            + " "
            f"(error rate {self.error_rate:.2f} > run.max_error_rate {limit}); errors: {codes}. "
            "The items that succeeded are committed; see the errors table, fix the cause and "
            "rerun (succeeded items are skipped), or raise run.max_error_rate",
            self,
        )


def add_runtime(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum the tasks' runtime reports: wall seconds, and per stage its batches, items and
    busy seconds (``pipelines.stream.StreamReport``)."""
    if not part:
        return total
    merged = {
        "task_wall_s": round(total.get("task_wall_s", 0.0) + part["wall_s"], 3),
        "stages": {name: dict(stats) for name, stats in total.get("stages", {}).items()},
    }
    for name, stats in part.get("stages", {}).items():
        into = merged["stages"].setdefault(name, {"batches": 0, "items": 0, "busy_s": 0.0})
        into["batches"] += stats["batches"]
        into["items"] += stats["items"]
        into["busy_s"] = round(into["busy_s"] + stats["busy_s"], 3)
        into["lanes"] = stats["lanes"]
    return merged


def commit_enriched(
    store: DeltaStore, markers: list[TaskMarker], summary: RunSummary, max_items: int
) -> None:
    """MERGE the staged rows of finished enrich tasks, streamed from their files, about
    ``max_items`` items per MERGE (a MERGE's memory follows its rows). Within each group the
    description rows go last: they mark an item done for the next run, so a crash between
    these commits leaves the item to be redone, never half-written."""
    for group in marker_groups(markers, max_items):
        descriptions, errors = staged_files(group, "descriptions"), staged_files(group, "errors")
        store.merge_files("embeddings", staged_files(group, "embeddings"))
        store.delete_keys_in_files("errors", descriptions)  # errors that resolved
        summary.known_failures += known_failures(store, errors)
        store.merge_files("errors", errors)
        store.merge_files("descriptions", descriptions)
        for marker in group:
            summary.count(marker)


def known_failures(store: DeltaStore, error_files: list[str]) -> int:
    """Staged error rows that repeat the lake's row for the item: the same input error code
    (``INPUT_ERROR_CODES``) on the same content."""
    if not error_files or not store.exists("errors"):
        return 0
    columns = list(ERROR_IDENTITY)
    staged = parquet_dataset(error_files).to_table(columns=columns)
    keys = staged.column(TABLES["errors"].key).to_pylist()
    before = set(map(error_identity, store.read("errors", columns=columns, keys=keys).to_pylist()))
    return sum(
        row[ERROR_CODE] in INPUT_ERROR_CODES and error_identity(row) in before
        for row in staged.to_pylist()
    )


def marker_groups(markers: list[TaskMarker], max_items: int) -> list[list[TaskMarker]]:
    """Consecutive markers, grouped to at most ``max_items`` items (one task at least)."""
    groups: list[list[TaskMarker]] = []
    size = 0
    for marker in markers:
        if not groups or size + marker.items > max_items:
            groups.append([])
            size = 0
        groups[-1].append(marker)
        size += marker.items
    return groups


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
    row = run_row(
        summary,
        config_fingerprint=config.fingerprint(),
        config_json=config.redacted_json(),
        tool_version=tool_version,
        now=utc_now(),
    )
    store.merge("runs", [row])
