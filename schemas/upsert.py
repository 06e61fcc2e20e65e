"""Keyed upserts, deletes and reads that touch only the files holding the keys.

delta-rs MERGE joins the source with every file of the target and reads all their columns,
so a 10,000-row daily commit into a 2M-row table took 20-50 s (bench/lake_scale.py): the cost
followed the lake, not the day. A commit here instead

1. prunes the active files by the key's min/max in the Delta log (``TableFiles.candidates``),
2. reads only the key column of the rest to learn which files hold a source key (``locate``),
3. rewrites just those files without those keys, writes the source rows as new files, and
4. commits the removes and adds as one transaction at the version it read, with no automatic
   retry: a commit that landed in between fails it (``CommitFailedError``) and the caller
   starts over, so two writers never both insert one key.

The result is the same reader-protocol-1 / writer-protocol-2 table (plain add and remove
actions, no deletion vectors). Cost: a key-column scan of the table (about 0.1 s per million
rows) plus the bytes of the files that hold an updated key plus the batch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from core import storage

TARGET_FILE_BYTES = 128 * 2**20  # new files roll over at about this much Arrow data
JOB_BYTES = 64 * 2**20  # a large batch is written as parallel files of about this size
KEYED_COMMIT = "enrichKeyedCommit"  # commitInfo key holding a keyed commit's metrics


def history_metrics(entry: dict) -> tuple[str, dict]:
    """A history entry's operation name and metrics; keyed commits (delta-rs records them as
    WRITE) read as UPSERT or DELETE with their own counts."""
    keyed = entry.get(KEYED_COMMIT)
    if not keyed:
        return entry["operation"], entry.get("operationMetrics") or {}
    operation = "DELETE" if keyed.get("rows_deleted") else "UPSERT"
    return operation, {
        "num_target_rows_inserted": keyed.get("rows_inserted", 0),
        "num_target_rows_updated": keyed.get("rows_updated", 0),
        "num_target_rows_deleted": keyed.get("rows_deleted", 0),
    }


def string_filter(column: str, values: list[str] | pa.Array | str) -> ds.Expression:
    """``column`` equal to / in ``values``, safe on files that delta-rs wrote as string_view
    next to plain string ones (the cast keeps both comparable)."""
    expr = ds.field(column).cast(pa.string())
    if isinstance(values, str):
        return expr == pa.scalar(values, pa.string())
    return expr.isin(values if isinstance(values, pa.Array) else pa.array(values, pa.string()))


def table_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


class TableFiles:
    """The active files of one loaded table version, with their sizes and key statistics."""

    def __init__(self, table: DeltaTable, root: str, key: str):
        actions = pa.table(table.get_add_actions(flatten=True))
        self.table, self.root, self.key = table, root, key
        self.paths: list[str] = actions.column("path").to_pylist()
        self.sizes = dict(zip(self.paths, actions.column("size_bytes").to_pylist(), strict=True))
        names = actions.column_names
        none = [None] * len(self.paths)
        mins = actions.column(f"min.{key}").to_pylist() if f"min.{key}" in names else none
        maxs = actions.column(f"max.{key}").to_pylist() if f"max.{key}" in names else none
        self.ranges = dict(zip(self.paths, zip(mins, maxs, strict=True), strict=True))

    def uri(self, path: str) -> str:
        return f"{self.root}/{unquote(path)}"

    def candidates(self, sorted_keys: pa.Array) -> list[str]:
        """Files whose key range (unknown counts as everything) may hold one of the keys."""
        ordered = sorted_keys.to_numpy(zero_copy_only=False)
        chosen = []
        for path, (low, high) in self.ranges.items():
            if low is None or high is None:
                chosen.append(path)
                continue
            at = int(np.searchsorted(ordered, low))
            if at < len(ordered) and ordered[at] <= high:
                chosen.append(path)
        return chosen


def sorted_unique(keys: pa.Array | list[str]) -> pa.Array:
    keys = pa.array(keys, pa.string()) if isinstance(keys, list) else keys.cast(pa.string())
    unique = pc.unique(keys)
    return unique.take(pc.sort_indices(unique))


def locate(files: TableFiles, sorted_keys: pa.Array) -> tuple[dict[str, list[str]], int]:
    """Which active files hold which of ``sorted_keys`` (unique; reading the key column
    only), and how many files were scanned."""
    scanned = files.candidates(sorted_keys)
    if not scanned or not len(sorted_keys):
        return {}, len(scanned)
    fs, _ = storage.resolve(files.uri(scanned[0]))
    by_fs_path = {storage.resolve(files.uri(p))[1]: p for p in scanned}
    dataset = ds.dataset(list(by_fs_path), format="parquet", filesystem=fs)
    scanner = dataset.scanner(columns=[files.key], filter=string_filter(files.key, sorted_keys))
    held: dict[str, list[str]] = {}
    for tagged in scanner.scan_batches():
        if tagged.record_batch.num_rows:
            path = by_fs_path[tagged.fragment.path]
            column = tagged.record_batch.column(0).cast(pa.string())
            held.setdefault(path, []).extend(column.to_pylist())
    return held, len(scanned)


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """``batch`` with exactly ``schema``'s columns and types (absent columns as nulls)."""
    rows = batch.num_rows
    columns = [
        batch.column(f.name).cast(f.type)
        if f.name in batch.schema.names
        else pa.nulls(rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def scalar_columns(schema: pa.Schema) -> list[str]:
    """Columns worth a dictionary, statistics and compression: not float vectors (embeddings
    never repeat, nobody filters on their min/max, snappy does not shrink them, and trying
    all three costs a fifth of the write)."""
    return [
        f.name
        for f in schema
        if not (pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type))
    ]


def codecs(schema: pa.Schema) -> dict[str, str]:
    """Snappy for scalar columns; float vectors stored plain (same size, less CPU)."""
    scalar = set(scalar_columns(schema))
    return {f.name: "snappy" if f.name in scalar else "none" for f in schema}


class FileWriter:
    """New Parquet files under the table root, rolled over at ``TARGET_FILE_BYTES``; each
    becomes an add action with its row count and the key's min/max/null count."""

    def __init__(self, files: TableFiles, schema: pa.Schema):
        self.files, self.schema = files, schema
        self.written: list[str] = []
        self.adds: list[AddAction] = []
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(table)
        self._rows += table.num_rows
        self._bytes += table.nbytes
        low, high = pc.min_max(table.column(self.files.key).cast(pa.string())).values()
        self._low = min(filter(None, (self._low, low.as_py())), default=None)
        self._high = max(filter(None, (self._high, high.as_py())), default=None)
        self._nulls += table.column(self.files.key).null_count
        if self._bytes >= TARGET_FILE_BYTES:
            self._close_file()

    def close(self) -> list[AddAction]:
        if self._writer is not None:
            self._close_file()
        return self.adds

    def discard(self) -> None:
        """Delete what was written (the commit did not happen)."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        for path in self.written:
            with contextlib.suppress(Exception):
                storage.delete_file(self.files.uri(path))

    def _open(self) -> None:
        self._path = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        self.written.append(self._path)
        fs, fs_path = storage.resolve(self.files.uri(self._path))
        self._writer = pq.ParquetWriter(
            fs_path,
            self.schema,
            filesystem=fs,
            compression=codecs(self.schema),
            use_dictionary=scalar_columns(self.schema),
            write_statistics=scalar_columns(self.schema),
        )
        self._rows = self._bytes = self._nulls = 0
        self._low = self._high = None

    def _close_file(self) -> None:
        self._writer.close()
        self._writer = None
        key = self.files.key
        stats = {"numRecords": self._rows, "nullCount": {key: self._nulls}}
        if self._low is not None:
            stats |= {"minValues": {key: self._low}, "maxValues": {key: self._high}}
        size = storage.info(self.files.uri(self._path)).size
        now = int(time.time() * 1000)
        self.adds.append(AddAction(self._path, size, {}, now, True, json.dumps(stats)))


@dataclass
class Commit:
    """What one keyed commit changed (also written into the commit's metadata)."""

    files_scanned: int = 0
    files_removed: int = 0
    files_added: int = 0
    bytes_rewritten: int = 0
    rows_copied: int = 0
    rows_updated: int = 0
    rows_inserted: int = 0
    rows_deleted: int = 0
    removes: list[RemoveAction] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "removes"}


class Writers:
    """New files written by a small thread pool (pyarrow releases the GIL while it encodes and
    writes): one job per rewritten file and per ``TARGET_FILE_BYTES`` of the batch."""

    def __init__(self, files: TableFiles, schema: pa.Schema):
        self.files, self.schema = files, schema
        self.workers = os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="upsert-write")
        self.writers: list[FileWriter] = []
        self.jobs: list[Future] = []

    def submit(self, produce: Callable[[], Iterable[pa.Table | pa.RecordBatch]]) -> Future:
        """Write what ``produce`` returns into new files; the job's result is its row count.
        At most two jobs per worker wait, so memory stays bounded."""
        writer = FileWriter(self.files, self.schema)
        self.writers.append(writer)
        self.jobs.append(self.pool.submit(self._run, writer, produce))
        waiting = [job for job in self.jobs if not job.done()]
        if len(waiting) > 2 * self.workers:
            wait(waiting, return_when=FIRST_COMPLETED)
        return self.jobs[-1]

    def _run(self, writer: FileWriter, produce) -> int:
        rows = 0
        for table in produce():
            writer.write(conform(table, self.schema))
            rows += table.num_rows
        return rows

    def close(self) -> list[AddAction]:
        try:
            for job in self.jobs:
                job.result()  # the first error, if any
        finally:
            self.pool.shutdown()
        return [add for writer in self.writers for add in writer.close()]

    def discard(self) -> None:
        """Delete every file written (the commit will not happen)."""
        wait(self.jobs)
        self.pool.shutdown()
        for writer in self.writers:
            writer.discard()


def read_kept(files: TableFiles, path: str, keys: list[str]) -> Iterator[pa.Table]:
    """The rows of one active file whose key is not in ``keys``, one row group at a time:
    a row group whose every key is replaced is skipped without decoding its other columns."""
    drop = pa.array(sorted(set(keys)), pa.string())
    fs, fs_path = storage.resolve(files.uri(path))
    with fs.open_input_file(fs_path) as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            group_keys = parquet.read_row_group(group, columns=[files.key]).column(0)
            keep = pc.invert(pc.is_in(group_keys.cast(pa.string()), value_set=drop))
            kept = pc.sum(keep).as_py() or 0
            if kept == len(group_keys):
                yield parquet.read_row_group(group)
            elif kept:
                yield parquet.read_row_group(group).filter(keep)


def batch_jobs(batches: Iterable[pa.RecordBatch]) -> Iterator[list[pa.RecordBatch]]:
    """The batch stream cut into write jobs of about ``JOB_BYTES``; a large batch is sliced,
    so every core writes (one Parquet file is encoded on one thread)."""
    group: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        for piece in slices(batch, JOB_BYTES):
            group.append(piece)
            size += piece.nbytes
            if size >= JOB_BYTES:
                yield group
                group, size = [], 0
    if group:
        yield group


def submit_jobs(writers: Writers, jobs: Iterable[list[pa.RecordBatch]]) -> None:
    for group in jobs:
        writers.submit(lambda group=group: group)


def slices(batch: pa.RecordBatch, most_bytes: int) -> list[pa.RecordBatch]:
    """``batch`` cut into zero-copy slices of about ``most_bytes`` at most."""
    if batch.nbytes <= most_bytes:
        return [batch]
    rows = max(1, batch.num_rows * most_bytes // batch.nbytes)
    return [batch.slice(start, rows) for start in range(0, batch.num_rows, rows)]


def keyed_commit(
    files: TableFiles, keys: pa.Array | list[str], batches: Iterable[pa.RecordBatch] | None
) -> int | None:
    """Rewrite the files holding ``keys`` without them, write ``batches`` as new files, and
    commit both at the version read. None when there is nothing to commit."""
    keys = sorted_unique(keys)
    read_version = files.table.version()
    writers = Writers(files, table_schema(files.table))
    jobs = batch_jobs(batches) if batches is not None else iter(())
    try:
        # New rows need no probe: one core writes them while it runs. The copies of the files
        # it finds, the longest jobs, go next, so no core idles at the end.
        submit_jobs(writers, itertools.islice(jobs, max(1, writers.workers - 1)))
        held, scanned = locate(files, keys)
        if batches is None and not held:
            writers.discard()
            return None
        commit = Commit(files_scanned=scanned, files_removed=len(held))
        now = int(time.time() * 1000)
        copies = [
            writers.submit(lambda path=path, found=found: read_kept(files, path, found))
            for path, found in held.items()
        ]
        submit_jobs(writers, jobs)
        adds = writers.close()
        commit.removes = [RemoveAction(p, True, now, files.sizes[p], {}) for p in held]
        commit.files_added = len(adds)
        commit.rows_copied = sum(job.result() for job in copies)
        commit.bytes_rewritten = sum(files.sizes[p] for p in held)
        found = sum(len(set(k)) for k in held.values())
        if batches is None:
            commit.rows_deleted = found
        else:
            commit.rows_updated, commit.rows_inserted = found, len(keys) - found
        files.table.create_write_transaction(
            [*commit.removes, *adds],
            mode="append",
            schema=files.table.schema(),
            commit_properties=CommitProperties(
                max_commit_retries=0, custom_metadata={KEYED_COMMIT: commit.metrics()}
            ),
        )
    except BaseException:
        writers.discard()  # a concurrent commit raises CommitFailedError: the caller retries
        raise
    files.table.update_incremental()
    return read_version + 1  # no retries: the commit landed right after the version read


def upsert(files: TableFiles, keys: pa.Array | list[str], batches: Iterable[pa.RecordBatch]) -> int:
    """Replace the rows of ``keys`` (unique) and insert the rest, from ``batches``."""
    return keyed_commit(files, keys, batches)


def delete(files: TableFiles, keys: pa.Array | list[str]) -> int | None:
    """Delete the rows of ``keys``; None when none is in the table (nothing committed)."""
    return keyed_commit(files, keys, None)


def read_keyed(
    files: TableFiles, keys: list[str], columns: list[str] | None = None
) -> pa.Table | None:
    """The rows of ``keys`` read from only the files that hold them; None when no file does."""
    held, _ = locate(files, sorted_unique(keys))
    if not held:
        return None
    uris = [files.uri(path) for path in held]
    fs, _ = storage.resolve(uris[0])
    dataset = ds.dataset(
        [storage.resolve(u)[1] for u in uris],
        format="parquet",
        filesystem=fs,
        schema=table_schema(files.table),
    )
    return dataset.to_table(columns=columns, filter=string_filter(files.key, keys))
