"""A run's staging: where engine tasks leave their typed Parquet and completion markers, on
the lake's storage (or ``run.staging_uri``), and the one place that knows its layout:

    <staging>/_plan.json                              the driver's plan (checked on --resume)
    <staging>/<table>/part-<wave>-<task>.parquet      one file per table a task wrote
    <staging>/_tasks/<wave>/<task>.json               the task's ``TaskMarker``, written last

A task whose marker exists is done: a retried or resumed task returns it without redoing the
work (datatrove's completions). The driver commits only what markers name, after reconciling
them with its plan: every planned task left a marker, every file a marker names holds the
rows it says, and an enrich task's items add up (items in = enriched + failed + skipped).
Anything else fails the run before a row is committed, naming the missing tasks and where
their staging should have been.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from core.errors import UsageError
from pipelines.failures import ReconciliationError
from schemas.store import is_storage_error, lake_write_error, rows_to_table
from schemas.tables import SID_CODES, TABLES

# The waves of a run, in order: each one's tasks stage files and markers under its name.
WaveName = Literal["enrich", "code", "dedup"]
WAVES: tuple[WaveName, ...] = get_args(WaveName)

STAGED_SCHEMAS = {**{name: spec.schema for name, spec in TABLES.items()}, "sid_codes": SID_CODES}
PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class StagedFile:
    """One Parquet file a task staged, and the rows it holds."""

    uri: str
    rows: int


@dataclass(frozen=True)
class TaskMarker:
    """A finished task: its staged files and counts. The enrich wave also accounts for every
    item it read (``enriched`` + ``failed`` + ``skipped`` = ``items``); the code and dedup
    waves leave those None."""

    wave: WaveName
    task_id: str
    items: int
    files: dict[str, StagedFile] = field(default_factory=dict)
    attempt: int = 0
    enriched: int | None = None
    failed: int | None = None
    skipped: int | None = None
    errors_by_code: dict[str, int] = field(default_factory=dict)
    stage_stats: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)  # the task runtime's report

    @property
    def accounted(self) -> int | None:
        """Items the enrich counts account for (None for a wave that does not count them)."""
        if self.enriched is None:
            return None
        return self.enriched + (self.failed or 0) + (self.skipped or 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskMarker:
        data = json.loads(text)
        files = {table: StagedFile(**staged) for table, staged in data.pop("files").items()}
        return cls(files=files, **data)


def staged_files(markers: Iterable[TaskMarker], table: str) -> list[str]:
    """The staged files of ``table`` that finished tasks name, in task order."""
    return [m.files[table].uri for m in markers if table in m.files]


class StagedParts:
    """One task's typed Parquet writers, one file per table, opened on first rows."""

    def __init__(self, staging: str, wave: WaveName, task_id: str):
        self.staging, self.stem = staging, f"part-{wave}-{task_id}.parquet"
        self.writers: dict[str, tuple[Any, Any, str]] = {}
        self.rows: dict[str, int] = {}

    def write(self, table: str, rows: list[dict[str, Any]] | pa.Table) -> None:
        schema = STAGED_SCHEMAS[table]
        data = rows if isinstance(rows, pa.Table) else rows_to_table(table, schema, rows)
        if data.num_rows == 0:
            return
        if table not in self.writers:
            uri = storage.join(self.staging, table, self.stem)
            stream = storage.open_output(uri)
            self.writers[table] = (pq.ParquetWriter(stream, schema), stream, uri)
        self.writers[table][0].write_table(data.select(schema.names).cast(schema))
        self.rows[table] = self.rows.get(table, 0) + data.num_rows

    def close(self) -> dict[str, StagedFile]:
        """The files written, by table."""
        files = {}
        for table, (writer, stream, uri) in self.writers.items():
            writer.close()
            stream.close()
            files[table] = StagedFile(uri, self.rows[table])
        return files


def staged_rows(uri: str) -> int | None:
    """Rows in a staged Parquet file (its footer only), None if the file is gone."""
    fs, path = storage.resolve(uri)
    try:
        with fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    except (FileNotFoundError, OSError):
        return None


def staging_root(lake: str, staging_uri: str | None = None) -> str:
    """Where runs stage: on the lake's storage unless ``run.staging_uri`` says where."""
    return staging_uri or storage.join(lake, "_staging")


class Staging:
    """One run's staging folder. Tasks build one from the folder's URI to write their parts
    and marker; the driver keeps one for the run, which reconciles each task once (as it is
    reported, or when its wave ends) and deletes the folder after the commit."""

    def __init__(self, uri: str):
        self.uri = uri
        self.reconciled: dict[tuple[str, str], TaskMarker] = {}

    @classmethod
    def for_run(cls, lake: str, run_id: str, staging_uri: str | None = None) -> Staging:
        """The staging of ``run_id``, refused (``PathEscape``) unless it lies under the root."""
        return cls(storage.join_under(staging_root(lake, staging_uri), run_id))

    # -- the plan ------------------------------------------------------------------------------
    def check_plan(self, plan: dict[str, Any], resume: bool) -> None:
        """Record a new run's plan; a resumed run must find the same plan there (same input,
        settings and parallelism), or it would commit foreign work."""
        uri = storage.join(self.uri, "_plan.json")
        found = storage.exists(uri)
        if resume and not found:
            raise UsageError(f"--resume: no staged run under {self.uri}; start a new run instead")
        if not resume and found:
            raise UsageError(f"a run already staged under {self.uri}; use --resume to finish it")
        if not found:
            storage.write_bytes(uri, json.dumps(plan, sort_keys=True).encode())
        elif json.loads(storage.read_bytes(uri)) != json.loads(json.dumps(plan, sort_keys=True)):
            raise UsageError(
                f"--resume: the plan under {self.uri} differs from this one (the input, the "
                "settings or the engine's parallelism changed); start a new run instead"
            )

    # -- what tasks write ----------------------------------------------------------------------
    def marker_uri(self, wave: WaveName, task_id: str) -> str:
        return storage.join(self.uri, "_tasks", wave, f"{task_id}.json")

    def read_marker(self, wave: WaveName, task_id: str) -> TaskMarker | None:
        uri = self.marker_uri(wave, task_id)
        return TaskMarker.from_json(storage.read_bytes(uri)) if storage.exists(uri) else None

    def finished_count(self, wave: WaveName) -> int:
        """Markers already in the wave's folder (an earlier attempt's, on --resume)."""
        return len(storage.list_files(storage.join(self.uri, "_tasks", wave)))

    def parts(self, wave: WaveName, task_id: str) -> StagedParts:
        return StagedParts(self.uri, wave, task_id)

    def finish(self, marker: TaskMarker) -> TaskMarker:
        """Write the completion marker, after the task's files: a task without one did not
        finish."""
        storage.write_bytes(self.marker_uri(marker.wave, marker.task_id), marker.to_json().encode())
        return marker

    # -- reconciliation ------------------------------------------------------------------------
    def finished(self, wave: WaveName, planned: dict[str, int | None]) -> dict[str, TaskMarker]:
        """The markers of a wave's planned tasks (task_id → items, None when the plan cannot
        know), each reconciled once; ``ReconciliationError`` unless every one finished, its
        items add up and its staged files hold what it says. Nothing is committed before it
        returns."""
        markers: dict[str, TaskMarker] = {}
        problems: list[str] = []
        lost = 0
        for task_id, items in planned.items():
            marker = self.reconciled.get((wave, task_id))
            if marker is None:
                marker = self.read_marker(wave, task_id)
                found, missing = task_problems(task_id, items, marker)
                problems, lost = problems + found, lost + missing
                if marker is None or found:
                    continue
                self.reconciled[(wave, task_id)] = marker
            markers[task_id] = marker
        if problems:
            total = sum(n or 0 for n in planned.values())
            raise self.reconciliation_error(wave, problems, lost, total)
        return markers

    def reconciliation_error(
        self, wave: WaveName, problems: list[str], lost: int, planned: int
    ) -> ReconciliationError:
        more = len(problems) - PROBLEMS_SHOWN
        return ReconciliationError(
            f"{lost} of {planned} items are missing: their staged output should be under "
            f"{self.uri} (each task writes its Parquet there and a marker under _tasks/{wave}/), "
            "on storage that the driver and every worker share. "
            + "; ".join(problems[:PROBLEMS_SHOWN])
            + (f"; and {more} more problems" if more > 0 else "")
        )

    # -- the folder ----------------------------------------------------------------------------
    @contextmanager
    def writes(self) -> Iterator[None]:
        """Storage failures while writing staging (a full disk, no permission) become the
        same clear ``LakeWriteError`` as a failed table write."""
        try:
            yield
        except OSError as exc:
            if not is_storage_error(exc) or isinstance(exc, FileNotFoundError):
                raise  # a file that is gone was being read: not a failed write
            raise lake_write_error("the run's staging", self.uri, exc) from exc

    def delete(self) -> None:
        storage.delete_tree(self.uri)


def task_problems(
    task_id: str, planned: int | None, marker: TaskMarker | None
) -> tuple[list[str], int]:
    """What is wrong with one task's output (nothing: an empty list), and the items lost."""
    if marker is None:
        return [f"task {task_id} ({planned or 'unknown'} items) left no marker"], planned or 0
    problems, lost = [], 0
    items = marker.items if planned is None else planned
    if marker.items != items or marker.accounted not in (None, items):
        problems.append(
            f"task {task_id} planned {items} items but accounted for "
            f"{marker.accounted} of {marker.items} read"
        )
        lost += max(0, items - (marker.accounted or 0))
    for table, staged in marker.files.items():
        found = staged_rows(staged.uri)
        if found != staged.rows:
            problems.append(
                f"task {task_id}: {staged.uri} should hold {staged.rows} {table} "
                f"rows but {'is missing' if found is None else f'holds {found}'}"
            )
            lost += staged.rows if table in ("descriptions", "errors") else 0
    return problems, lost
