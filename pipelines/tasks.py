"""Engine tasks: the unit of work every engine runs, on any worker, against any storage.

A task reads its own share of the input through the storage layer, runs the stages, and
stages typed Parquet (the Arrow schemas of ``schemas/``) with a completion marker that names
its files and counts (``pipelines.staging``). A task whose marker exists is done: a retried or
resumed task returns it without redoing the work. Every task function takes
``(job, task, attempt, worker)``: ``worker`` is what its engine keeps between tasks
(``pipelines.worker.Worker``). Nothing here imports an engine.

Waves: ``enrich`` (an input task → descriptions, embeddings, errors), ``code`` (embeddings →
``sid_codes`` with the pinned codebook: the one place codes are computed), ``dedup`` (one
bucket of codes → ``semantic_ids`` rows with stable dedup suffixes: the group-by on code
prefixes).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Config
from pipelines.incremental import done_keys, split_done
from pipelines.sids import code_items, group_sid_rows
from pipelines.staging import WAVES, StagedParts, Staging, TaskMarker
from pipelines.stream import ProcessStage, StreamOptions, run_stream
from pipelines.worker import Worker, prep_processes
from schemas.rows import error_codes, sid_code_row, table_rows
from schemas.store import DeltaStore, parquet_dataset
from schemas.tables import (
    BUCKET,
    CHOICES,
    CODEBOOK_VERSION,
    CODES,
    CONTENT_SHA256,
    DEDUP,
    EMBEDDING,
    ENCODER,
    ITEM_ID,
    LINEAGE_COLUMNS,
    PIPELINE_FINGERPRINT,
    SID_CODES,
    TABLES,
)
from schemas.upsert import string_filter
from transforms.manifest import TaskInput, read_task_input
from transforms.media import MEDIA_COLUMNS, fetch_input, release_input
from transforms.runner import StageRunner
from transforms.semantic_ids.dedup import dedup_entry
from transforms.stage import Record, has_error, mark_error

logger = logging.getLogger(__name__)
ENRICH_TABLES = ("embeddings", "errors", "descriptions")  # commit order: descriptions last
# The waves' names (staging markers), not the errors.code / semantic_ids.dedup columns.
ENRICH_WAVE, CODE_WAVE, DEDUP_WAVE = WAVES


# -- wave 1: enrich an input task --------------------------------------------------------------
@dataclass(frozen=True)
class EnrichJob:
    """What every enrich task needs (small and picklable: no items, no models)."""

    config_json: str
    lake: str
    staging: str
    run_id: str
    fingerprint: str
    force: bool
    descriptions_version: int | None  # the snapshot incremental selection compares against
    cache_dir: str | None = None


def enrich_task(job: EnrichJob, task: TaskInput, attempt: int, worker: Worker) -> TaskMarker:
    """Read the task's items, skip unchanged ones, run the stages, stage the rows, mark done."""
    staging = Staging(job.staging)
    if done := staging.read_marker(ENRICH_WAVE, task.task_id):
        return done  # finished by an earlier attempt (a retry or a resumed run): not redone
    config = worker.config(job.config_json)
    runners = worker.runners(job.config_json, attempt)
    records = read_task_input(task)
    selection = Selection(job, config, DeltaStore(job.lake), records)
    sink = RowSink(staging.parts(ENRICH_WAVE, task.task_id), job, config.run.items_per_staged_file)
    try:
        report = run_streaming(config, runners, selection.batches(records), sink.add)
        sink.flush()
    finally:
        selection.release_all()
    files = sink.parts.close()
    return staging.finish(
        TaskMarker(
            wave=ENRICH_WAVE,
            task_id=task.task_id,
            items=len(records),
            files=files,
            attempt=attempt,
            enriched=files["descriptions"].rows if "descriptions" in files else 0,
            failed=files["errors"].rows if "errors" in files else 0,
            skipped=selection.skipped,
            errors_by_code=dict(sink.errors_by_code),
            stage_stats={r.name: r.stats.as_dict() for r in runners},
            runtime=report,
        )
    )


class Selection:
    """The task's input, a media batch at a time: each item fetched and hashed, unchanged
    items dropped (counted as skipped) against what the lake holds of the task's items (one
    read). Remembers the items it fetched, so a failed task still deletes their temporary
    media copies."""

    def __init__(self, job: EnrichJob, config: Config, store: DeltaStore, records: list[Record]):
        self.job, self.media = job, config.media
        ids = [str(r.get(ITEM_ID)) for r in records if not has_error(r)]
        self.known = done_keys(store, ids, job.descriptions_version, job.force)
        self.skipped = 0
        self.fetched: list[Record] = []

    def batches(self, records: list[Record]) -> Iterator[Record]:
        size = self.media.batch_size
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            for record in batch:
                self.fetch(record)
            todo, done = split_done(batch, self.known, self.job.fingerprint)
            for record in done:
                release_media(record)
            self.skipped += len(done)
            yield from todo

    def fetch(self, record: Record) -> None:
        """Hash the item's input (an item the manifest already refused keeps its error)."""
        record[PIPELINE_FINGERPRINT] = self.job.fingerprint
        self.fetched.append(record)
        if has_error(record):
            record.setdefault(CONTENT_SHA256, None)
            return
        try:
            fetch_input(record, self.media, self.job.cache_dir)
        except Exception as exc:  # noqa: BLE001 - one item's input must not sink the task
            record.setdefault(CONTENT_SHA256, None)
            mark_error(record, "media", "read_failed", f"{type(exc).__name__}: {exc}")

    def release_all(self) -> None:
        for record in self.fetched:
            release_media(record)


def release_media(record: Record) -> None:
    """Drop an item's decoded frames and audio and delete its temporary media copy."""
    release_input(record)
    for column in MEDIA_COLUMNS:
        record.pop(column, None)


class RowSink:
    """Finished items → staged rows, a Parquet file per table every ``per_file`` items."""

    def __init__(self, parts: StagedParts, job: EnrichJob, per_file: int):
        self.parts, self.job, self.per_file = parts, job, per_file
        self.pending: list[Record] = []
        self.errors_by_code: Counter = Counter()

    def add(self, record: Record) -> None:
        release_media(record)
        self.pending.append(record)
        if len(self.pending) >= self.per_file:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.errors_by_code.update(stage_rows(self.parts, self.pending, self.job.run_id))
            self.pending = []


def run_streaming(
    config: Config, runners: list[StageRunner], items: Iterator[Record], on_done
) -> dict[str, Any]:
    """Items flow through the stages on bounded queues (``pipelines.stream``), the task's one
    runtime; torch keeps to the cores the media worker processes leave."""
    in_processes = any(isinstance(r.stage, ProcessStage) for r in runners)
    threads = host_threads(prep_processes(config))
    with torch_threads(threads) if in_processes else nullcontext():
        return run_stream(items, runners, on_done, stream_options(config, runners)).as_dict()


def host_threads(processes: int) -> int:
    """The cores left to this process's model stages while ``processes`` worker processes
    decode: at least one. torch's OpenMP threads spin at every barrier, so on cores the
    decoders already held they slowed encoding about 3x (bench/throughput.py's shape)."""
    return max(1, (os.cpu_count() or 1) - processes)


@contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads capped at ``threads`` for the block. Thread count does not
    change torch's CPU results here (checked bit for bit on the encoder)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(threads, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stream_options(config: Config, runners: list[StageRunner]) -> StreamOptions:
    """The media budget spans the stage that decodes media to the last stage that reads it
    (from the stages' declared ``adds`` and ``needs``)."""
    media = set(MEDIA_COLUMNS)
    stages = [runner.stage for runner in runners]
    decoders = [k for k, stage in enumerate(stages) if stage_of(stage).adds & media]
    readers = [k for k, stage in enumerate(stages) if stage_of(stage).needs & media]
    return StreamOptions(
        max_wait_s=config.run.max_wait_ms / 1000,
        budget_bytes=config.run.prefetch_mb * 2**20,
        held_bytes=media_bytes,
        budget_from=decoders[0] if decoders else 0,
        release_after=max(readers) if readers else 0,
        release=release_media,
    )


def stage_of(stage: Any) -> Any:
    """The stage itself, where a ``ProcessStage`` stands in for it."""
    return stage.stage if isinstance(stage, ProcessStage) else stage


def media_bytes(record: Record) -> int:
    """An item's decoded frames and audio, in bytes."""
    frames = record.get("frames") or []
    audio = record.get("audio")
    return sum(getattr(f, "nbytes", 0) for f in frames) + getattr(audio, "nbytes", 0)


def stage_rows(parts: StagedParts, records: list[Record], run_id: str) -> Counter:
    """Stage the table rows of processed records; returns the error codes among them."""
    rows = table_rows(records, run_id)
    for table in ENRICH_TABLES:
        parts.write(table, rows[table])
    return error_codes(rows["errors"])


# -- Semantic IDs: code (wave 2, after a fit) and dedup by codes bucket (wave 3) ----------------
def sid_bucket(codes: np.ndarray, buckets: int) -> np.ndarray:
    """A stable hash of each row's prefix (all levels but the last), modulo ``buckets``: the
    dedup group-by's partition (items of one prefix always share a bucket)."""
    value = np.zeros(len(codes), dtype=np.int64)
    for level in range(codes.shape[1] - 1 if codes.ndim == 2 else 0):
        value = (value * 65599 + codes[:, level].astype(np.int64)) % 2_147_483_647
    return (value % max(1, buckets)).astype(np.int32)


def coded_rows(codebook: Any, items: list[dict[str, Any]], buckets: int) -> list[dict[str, Any]]:
    """``sid_codes`` rows: each item's codes under the pinned codebook, and its bucket."""
    coded = code_items(codebook, items)
    matrix = np.asarray([item[CODES] for item in coded], dtype=np.int64)
    return [
        sid_code_row(item, bucket)
        for item, bucket in zip(coded, sid_bucket(matrix, buckets), strict=True)
    ]


@dataclass(frozen=True)
class SidTask:
    """One SID task: embeddings files to code (``only`` restricts to those item ids), or one
    bucket of staged codes to deduplicate."""

    task_id: str
    files: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    bucket: int = 0


@dataclass(frozen=True)
class SidWaveJob:
    lake: str
    staging: str
    run_id: str
    codebook_version: str
    encoder: str
    buckets: int
    hash_buckets: int
    held_version: int | None = None  # semantic_ids snapshot whose suffixes are kept
    code_files: tuple[str, ...] = field(default_factory=tuple)  # staged sid_codes files


def code_task(job: SidWaveJob, task: SidTask, attempt: int, worker: Worker) -> TaskMarker:
    """Code embedded items of ``job.encoder`` with the pinned codebook; stage ``sid_codes``."""
    staging = Staging(job.staging)
    if done := staging.read_marker(CODE_WAVE, task.task_id):
        return done
    columns = [ITEM_ID, EMBEDDING, *LINEAGE_COLUMNS]
    where = string_filter(ENCODER, job.encoder)
    if task.only is not None:
        where = where & string_filter(ITEM_ID, list(task.only))
    items = (
        parquet_dataset(list(task.files), TABLES["embeddings"].schema)
        .to_table(columns=columns, filter=where)
        .to_pylist()
    )
    parts = staging.parts(CODE_WAVE, task.task_id)
    if items:
        codebook = worker.codebook(job.lake, job.codebook_version)
        parts.write("sid_codes", coded_rows(codebook, items, job.buckets))
    return staging.finish(TaskMarker(CODE_WAVE, task.task_id, len(items), parts.close(), attempt))


def dedup_task(job: SidWaveJob, task: SidTask, attempt: int, worker: Worker) -> TaskMarker:
    """One bucket of the group-by on code prefixes: the items coded now with the codes and
    suffixes held under the same codebook → ``semantic_ids`` rows (held ones stay; collisions
    move within their choices, then take the lowest free suffix, exactly as a single global
    pass would)."""
    staging = Staging(job.staging)
    if done := staging.read_marker(DEDUP_WAVE, task.task_id):
        return done
    staged = parquet_dataset(list(job.code_files), SID_CODES)
    coded_now = set(staged.to_table(columns=[ITEM_ID])[ITEM_ID].to_pylist())
    mine = staged.to_table(filter=pc.field(BUCKET) == task.bucket).to_pylist()
    held = held_assignments(job, task.bucket)
    group: dict[tuple[int, ...], list[tuple[dict | None, dict]]] = {}
    for item in mine:
        held_now = held.get(item[ITEM_ID])
        key, entry = dedup_entry(item[ITEM_ID], item[CODES], held_now, item[CHOICES])
        group.setdefault(key, []).append((item, entry))
    for item_id, assignment in held.items():  # held in this bucket, not re-coded now
        if item_id not in coded_now:
            key, entry = dedup_entry(item_id, None, assignment)
            group.setdefault(key, []).append((None, entry))
    rows: list[dict[str, Any]] = []
    codebook = worker.codebook(job.lake, job.codebook_version)
    for entries in group.values():
        rows.extend(group_sid_rows(codebook, entries, job.run_id, job.hash_buckets))
    parts = staging.parts(DEDUP_WAVE, task.task_id)
    parts.write("semantic_ids", sorted(rows, key=lambda r: r[ITEM_ID]))
    return staging.finish(TaskMarker(DEDUP_WAVE, task.task_id, len(mine), parts.close(), attempt))


def held_assignments(job: SidWaveJob, bucket: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """item_id → (codes, suffix) held under the codebook, for items whose held codes fall in
    ``bucket`` or that are coded now (filtered in Arrow before any Python object is made)."""
    if job.held_version is None:
        return {}
    store = DeltaStore(job.lake)
    table = store.read(
        "semantic_ids",
        version=job.held_version,
        columns=[ITEM_ID, CODES, DEDUP, CODEBOOK_VERSION],
    )
    table = table.filter(pc.equal(table[CODEBOOK_VERSION], job.codebook_version))
    if table.num_rows == 0:
        return {}
    codes = np.asarray(table[CODES].to_pylist(), dtype=np.int64)
    staged_ids = parquet_dataset(list(job.code_files), SID_CODES).to_table(columns=[ITEM_ID])
    keep = pc.or_(
        pa.array(sid_bucket(codes, job.buckets) == bucket),
        pc.is_in(table[ITEM_ID], value_set=staged_ids[ITEM_ID]),
    )
    table = table.filter(keep)
    return {
        r[ITEM_ID]: (tuple(r[CODES]), r[DEDUP])
        for r in table.select([ITEM_ID, CODES, DEDUP]).to_pylist()
    }


__all__ = [
    "ENRICH_WAVE",
    "EnrichJob",
    "SidTask",
    "SidWaveJob",
    "code_task",
    "dedup_task",
    "enrich_task",
    "sid_bucket",
]
