"""Engine tasks: the unit of work every engine runs, on any worker, against any storage.

A task reads its own share of the input through the storage layer, runs the stages, and
stages typed Parquet (the Arrow schemas of ``schemas/``) with a completion marker that names
its files and counts (``pipelines.staging``). A task whose marker exists is done: a retried or
resumed task returns it without redoing the work. Nothing here imports an engine.

Waves: ``enrich`` (input shard → descriptions, embeddings, errors, and ``sid_codes`` when a
codebook is pinned), ``code`` (embeddings → ``sid_codes`` after a fit), ``dedup`` (one bucket
of codes → ``semantic_ids`` rows with stable dedup suffixes: the group-by on code prefixes).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Config
from pipelines.codebooks import load_codebook
from pipelines.incremental import split_done
from pipelines.sids import code_items, group_sid_rows
from pipelines.staging import StagedParts, Staging, TaskMarker
from pipelines.stream import ProcessStage, StreamOptions, run_stream
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
from transforms.manifest import InputShard, read_shard
from transforms.media import MEDIA_COLUMNS, fetch_input, release_input
from transforms.semantic_ids.dedup import dedup_entry
from transforms.stage import Record, Stage, has_error, mark_error, stats_delta

logger = logging.getLogger(__name__)
ENRICH_TABLES = ("embeddings", "errors", "descriptions")  # commit order: descriptions last
MAX_AUTO_PREP_PROCESSES = 4
# The SID waves' names (staging markers), not the errors.code / semantic_ids.dedup columns.
CODE_WAVE, DEDUP_WAVE = "code", "dedup"


# -- per-process state: stages and models load once per worker process -------------------------
_WORKER_STAGES: dict[tuple[str, int], list[Stage]] = {}
_WORKER_LOCK = threading.Lock()


def worker_stages(config_json: str, attempt: int = 0) -> list[Stage]:
    """The stages for this worker process, built once (models load on first use). Only
    injected faults depend on the task's attempt, so other runs share one set across tries."""
    config = Config.model_validate_json(config_json)
    key = (config_json, attempt if config.run.faults else 0)
    with _WORKER_LOCK:
        if key not in _WORKER_STAGES:
            from transforms.pipeline import build_stages

            _log_to_stderr()
            _WORKER_STAGES[key] = build_stages(config, task_attempt=key[1])
        return _WORKER_STAGES[key]


def _log_to_stderr() -> None:
    """Worker processes start with no logging set up; show the stages' progress lines."""
    stage_logger = logging.getLogger("transforms")
    if not stage_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        stage_logger.addHandler(handler)
        stage_logger.setLevel(logging.INFO)


# -- wave 1: enrich an input shard -------------------------------------------------------------
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
    codebook_version: str | None  # pinned: tasks code items right after encoding
    sid_buckets: int
    chunk_items: int
    commit_items: int = 8192
    commit_interval_s: float = 0.0
    cache_dir: str | None = None


def enrich_task(job: EnrichJob, shard: InputShard, attempt: int = 0) -> TaskMarker:
    """Read the shard, skip unchanged items, run the stages, stage the rows, mark done."""
    staging = Staging(job.staging)
    if done := staging.read_marker("enrich", shard.task_id):
        return done  # finished by an earlier attempt (a retry or a resumed run): not redone
    stages = worker_stages(job.config_json, attempt)
    before = {stage.name: stage.stats.as_dict() for stage in stages}
    config = Config.model_validate_json(job.config_json)
    records = read_shard(shard)
    selection = Selection(job, config.media, DeltaStore(job.lake))
    sink = RowSink(staging.parts("enrich", shard.task_id), job)
    try:
        runtime = run_streaming if config.run.runtime == "streaming" else run_serial
        report = runtime(config, stages, selection.chunks(records), sink.add)
        sink.flush()
    finally:
        selection.release_all()
    files = sink.parts.close()
    return staging.finish(
        TaskMarker(
            wave="enrich",
            task_id=shard.task_id,
            items=len(records),
            files=files,
            attempt=attempt,
            enriched=files["descriptions"].rows if "descriptions" in files else 0,
            failed=files["errors"].rows if "errors" in files else 0,
            skipped=selection.skipped,
            errors_by_code=dict(sink.errors_by_code),
            stage_stats={s.name: stats_delta(s.stats.as_dict(), before[s.name]) for s in stages},
            runtime={"mode": config.run.runtime, **report},
        )
    )


class Selection:
    """The task's input, chunk by chunk: each item fetched and hashed, unchanged items
    dropped (counted as skipped). Remembers the items it fetched, so a failed task still
    deletes their temporary media copies."""

    def __init__(self, job: EnrichJob, media: Any, store: DeltaStore):
        self.job, self.media, self.store = job, media, store
        self.skipped = 0
        self.fetched: list[Record] = []

    def chunks(self, records: list[Record]) -> Iterator[list[Record]]:
        for start in range(0, len(records), self.job.chunk_items):
            chunk = records[start : start + self.job.chunk_items]
            for record in chunk:
                self.fetch(record)
            todo, done = split_done(
                self.store,
                chunk,
                self.job.fingerprint,
                self.job.force,
                self.job.descriptions_version,
            )
            for record in done:
                release_media(record)
            self.skipped += len(done)
            yield todo

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
    """Finished items → staged rows, written every ``chunk_items`` items."""

    def __init__(self, parts: StagedParts, job: EnrichJob):
        self.parts, self.job = parts, job
        self.pending: list[Record] = []
        self.errors_by_code: Counter = Counter()

    def add(self, record: Record) -> None:
        release_media(record)
        self.pending.append(record)
        if len(self.pending) >= self.job.chunk_items:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.errors_by_code.update(stage_rows(self.parts, self.pending, self.job))
            self.pending = []


def run_serial(config: Config, stages: list[Stage], chunks, on_done) -> dict[str, Any]:
    """Each stage over a whole chunk, one after another (the baseline runtime)."""
    started = time.perf_counter()
    for chunk in chunks:
        for stage in stages:
            for begin in range(0, len(chunk), stage.batch_size):
                stage.process_batch(chunk[begin : begin + stage.batch_size])
        for record in chunk:
            on_done(record)
    return {"wall_s": round(time.perf_counter() - started, 3)}


def run_streaming(config: Config, stages: list[Stage], chunks, on_done) -> dict[str, Any]:
    """Items flow through the stages on bounded queues (``pipelines.stream``)."""
    items = (record for chunk in chunks for record in chunk)
    options = stream_options(config, stages)
    processes = prep_processes(config)
    moved = [in_processes(stage, processes) for stage in stages]
    stages = [ProcessStage(s, processes) if m else s for s, m in zip(stages, moved, strict=True)]
    with torch_threads(host_threads(processes)) if any(moved) else nullcontext():
        return run_stream(items, stages, on_done, options).as_dict()


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


def prep_processes(config: Config) -> int:
    """Worker processes for stages that hold the GIL (``run.prep_processes``)."""
    if config.run.prep_processes is not None:
        return config.run.prep_processes
    return min(os.cpu_count() or 1, MAX_AUTO_PREP_PROCESSES)


def in_processes(stage: Stage, processes: int) -> bool:
    """A stage that holds the GIL runs in worker processes, unless it carries injected faults
    (a crash fault must take the engine's worker, as a real crash would)."""
    return processes > 0 and stage.holds_gil and stage.runtime.faults is None


def stream_options(config: Config, stages: list[Stage]) -> StreamOptions:
    """The media budget spans the stage that decodes media to the last stage that reads it
    (from the stages' declared ``adds`` and ``needs``)."""
    media = set(MEDIA_COLUMNS)
    decoders = [k for k, stage in enumerate(stages) if stage.adds & media]
    readers = [k for k, stage in enumerate(stages) if stage.needs & media]
    return StreamOptions(
        max_wait_s=config.run.max_wait_ms / 1000,
        budget_bytes=config.run.prefetch_mb * 2**20,
        held_bytes=media_bytes,
        budget_from=decoders[0] if decoders else 0,
        release_after=max(readers) if readers else 0,
        release=release_media,
    )


def media_bytes(record: Record) -> int:
    """An item's decoded frames and audio, in bytes."""
    frames = record.get("frames") or []
    audio = record.get("audio")
    return sum(getattr(f, "nbytes", 0) for f in frames) + getattr(audio, "nbytes", 0)


def stage_rows(parts: StagedParts, records: list[Record], job: EnrichJob) -> Counter:
    """Stage the table rows of processed records (and their codes when a codebook is
    pinned); returns the error codes among them."""
    rows = table_rows(records, job.run_id)
    for table in ENRICH_TABLES:
        parts.write(table, rows[table])
    if job.codebook_version and rows["embeddings"]:
        codebook = load_codebook(job.lake, job.codebook_version)
        parts.write("sid_codes", coded_rows(codebook, rows["embeddings"], job.sid_buckets))
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


def code_task(job: SidWaveJob, task: SidTask, attempt: int = 0) -> TaskMarker:
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
        codebook = load_codebook(job.lake, job.codebook_version)
        parts.write("sid_codes", coded_rows(codebook, items, job.buckets))
    return staging.finish(TaskMarker(CODE_WAVE, task.task_id, len(items), parts.close(), attempt))


def dedup_task(job: SidWaveJob, task: SidTask, attempt: int = 0) -> TaskMarker:
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
    codebook = load_codebook(job.lake, job.codebook_version)
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
    "EnrichJob",
    "SidTask",
    "SidWaveJob",
    "code_task",
    "dedup_task",
    "enrich_task",
    "sid_bucket",
]
