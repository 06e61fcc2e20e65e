"""Commit what engine tasks staged, after reconciling it with the plan. Shared by every
engine, so the tables come out the same.

Reconciliation: every planned task must have left a completion marker, every file a marker
names must exist with the rows it says, and the marker's items must add up (items in =
enriched + failed + skipped). Anything else fails the run before a row is committed, with a
message that names the missing tasks and where their staging should have been.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

from schemas.rows import utc_now
from schemas.store import DeltaStore, parquet_dataset
from transforms import storage
from transforms.config import Config
from transforms.errors import INPUT_ERROR_CODES
from transforms.stage import add_stats

logger = logging.getLogger(__name__)
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks", "errors", "runs")


class RunFailed(RuntimeError):
    """The run ended ``failed``: the CLI exits 1 with this message."""

    run_status = "failed"


class SidStepFailed(RunFailed):
    """Fitting the lake's first codebook failed (not for want of embeddings): the enriched
    items are committed, but the run ends ``sids_failed``."""

    run_status = "sids_failed"


class ReconciliationError(RunFailed):
    """Items went missing between the plan and the commit: the run fails, nothing is lost
    silently."""


class ErrorRateExceeded(RunFailed):
    """More items failed than ``run.max_error_rate`` allows (the describer endpoint is down,
    a model is broken): what did succeed is committed, but the run is not a success."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


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
    runtime: dict[str, Any] = field(default_factory=dict)  # the tasks' runtime, summed
    stage_fingerprints: dict[str, str] = field(default_factory=dict)
    codebook_version: str | None = None
    codebook_metrics: dict[str, Any] = field(default_factory=dict)
    table_versions: dict[str, int | None] = field(default_factory=dict)
    missing_input: int = 0
    known_failures: int = 0  # failed again with the same code on the same content
    status: str = "running"
    notes: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    def count(self, marker: dict[str, Any]) -> None:
        """Add one committed task's counts."""
        self.items += marker["items"]
        self.succeeded += marker["enriched"]
        self.failed += marker["failed"]
        self.skipped += marker["skipped"]
        self.stage_stats = add_stats(self.stage_stats, marker["stage_stats"])
        self.runtime = add_runtime(self.runtime, marker.get("runtime") or {})
        for code, count in marker["errors_by_code"].items():
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + count

    @property
    def error_rate(self) -> float:
        """New failures among the items this run processed. Unchanged items are not
        processed; an item that failed before with the same code on the same content (a
        known bad file, retried each run) is not news."""
        new_failures = self.failed - self.known_failures
        processed = self.succeeded + new_failures
        return new_failures / processed if processed else 0.0

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
        "mode": part["mode"],
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


def staged_rows(uri: str) -> int | None:
    """Rows in a staged Parquet file (its footer only), None if the file is gone."""
    fs, path = storage.resolve(uri)
    try:
        with fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    except (FileNotFoundError, OSError):
        return None


def finished_markers(
    staging: str, wave: str, planned: dict[str, int | None]
) -> dict[str, dict[str, Any]]:
    """The markers of a wave's planned tasks, reconciled (see ``reconcile``)."""
    from pipelines.tasks import read_marker

    markers = {task_id: read_marker(staging, wave, task_id) for task_id in planned}
    found = {task_id: m for task_id, m in markers.items() if m is not None}
    reconcile(staging, wave, planned, found)
    return found


def reconcile(
    staging: str, wave: str, planned: dict[str, int | None], markers: dict[str, dict[str, Any]]
) -> None:
    """Raise ``ReconciliationError`` unless every planned task (task_id → items, None when
    the plan cannot know) finished, its items add up and its staged files hold what its
    marker says."""
    problems, lost = [], 0
    for task_id, items in planned.items():
        marker = markers.get(task_id)
        if marker is None:
            problems.append(f"task {task_id} ({items or 'unknown'} items) left no marker")
            lost += items or 0
            continue
        items = marker["items"] if items is None else items
        if marker["items"] != items or _accounted(marker) not in (None, items):
            problems.append(
                f"task {task_id} planned {items} items but accounted for "
                f"{_accounted(marker)} of {marker['items']} read"
            )
            lost += max(0, items - (_accounted(marker) or 0))
        for table, staged in marker["files"].items():
            found = staged_rows(staged["uri"])
            if found != staged["rows"]:
                problems.append(
                    f"task {task_id}: {staged['uri']} should hold {staged['rows']} {table} "
                    f"rows but {'is missing' if found is None else f'holds {found}'}"
                )
                lost += staged["rows"] if table in ("descriptions", "errors") else 0
    if problems:
        raise ReconciliationError(
            f"{lost} of {sum(n or 0 for n in planned.values())} items are missing: their "
            f"staged output should be under {staging} (each task writes its Parquet there "
            f"and a marker under _tasks/{wave}/), on storage that the driver and every "
            "worker share. "
            + "; ".join(problems[:10])
            + ("" if len(problems) <= 10 else f"; and {len(problems) - 10} more problems")
        )


def _accounted(marker: dict[str, Any]) -> int | None:
    if "enriched" not in marker:
        return None
    return marker["enriched"] + marker["failed"] + marker["skipped"]


def commit_enriched(
    store: DeltaStore, markers: list[dict[str, Any]], summary: RunSummary, max_items: int
) -> None:
    """MERGE the staged rows of finished enrich tasks, streamed from their files, about
    ``max_items`` items per MERGE (a MERGE's memory follows its rows). Within each group the
    description rows go last: they mark an item done for the next run, so a crash between
    these commits leaves the item to be redone, never half-written."""
    from pipelines.tasks import staged_files

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
    columns = ["item_id", "code", "content_sha256"]
    staged = parquet_dataset(error_files).to_table(columns=columns)
    held = store.read("errors", columns=columns, keys=staged.column("item_id").to_pylist())
    before = {(r["item_id"], r["code"], r["content_sha256"]) for r in held.to_pylist()}
    return sum(
        r["code"] in INPUT_ERROR_CODES and (r["item_id"], r["code"], r["content_sha256"]) in before
        for r in staged.to_pylist()
    )


def marker_groups(markers: list[dict[str, Any]], max_items: int) -> list[list[dict[str, Any]]]:
    """Consecutive markers, grouped to at most ``max_items`` items (one task at least)."""
    groups: list[list[dict[str, Any]]] = []
    size = 0
    for marker in markers:
        if not groups or size + marker["items"] > max_items:
            groups.append([])
            size = 0
        groups[-1].append(marker)
        size += marker["items"]
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
                "missing_input": summary.missing_input,
                "config_fingerprint": config.fingerprint(),
                "config_json": config.redacted_json(),
                "stage_fingerprints_json": json.dumps(summary.stage_fingerprints, sort_keys=True),
                "stage_stats_json": json.dumps(summary.stage_stats, sort_keys=True),
                "table_versions_json": json.dumps(summary.table_versions, sort_keys=True),
                "codebook_version": summary.codebook_version,
                "tool_version": tool_version,
                "updated_at": utc_now(),
            }
        ],
    )
