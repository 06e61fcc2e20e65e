"""The Delta store: create, MERGE-upsert by key, delete, and read a version (delta-rs).

Tables stay readable by every Delta client: reader protocol 1, writer protocol 2, no
deletion vectors, no column mapping. Optimistic-concurrency conflicts are retried.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

# delta-rs allocates through its own jemalloc, which by default keeps freed pages: a driver
# that commits many MERGEs would hold the peak of all of them. Return them at once (read when
# deltalake loads; a value the user set wins).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
with contextlib.suppress(NotImplementedError):  # pyarrow's own jemalloc pool, likewise
    pa.jemalloc_set_decay_ms(0)

from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake  # noqa: E402
from deltalake.exceptions import CommitFailedError

from core import storage
from core.errors import EnrichError, UsageError, echo
from core.signatures import positional_deprecated
from schemas import upsert
from schemas.tables import SCHEMA_VERSION, TABLES, TableName, TableSpec

logger = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 6


def table_description(name: str) -> str:
    """delta-rs refuses custom table properties, so the schema version lives in the description."""
    return f"video-enrich {name} table; schema_version={SCHEMA_VERSION}"


def _spec(name: str) -> TableSpec:
    if not isinstance(name, str) or name not in TABLES:
        raise BadTableRequest(f"unknown table {echo(name)}; tables are {', '.join(TABLES)}")
    return TABLES[name]


class SchemaMismatch(EnrichError, ValueError):
    """A write would change a column's type: only additive (new nullable column) evolution."""


class LakeError(EnrichError, RuntimeError):
    """A table of the lake cannot be read (a corrupt ``_delta_log``) or written: a storage
    error (exit 1). The message names the path and the cause."""


class NotALake(LakeError, UsageError):
    """``--lake`` names no usable lake (a file, or a folder that holds none of our tables):
    a usage error."""

    exit_code = UsageError.exit_code


class BadTableRequest(LakeError, UsageError, ValueError):
    """A read that asks for what the lake does not have, or asks it wrongly: an unknown table
    or column, a table not written yet, a version that does not exist, ``version`` with
    ``as_of``, a bool for a version. A usage error (exit 2) whose message says what there is;
    still a ``LakeError``, as an unreadable table was before, for callers that catch those."""

    exit_code = UsageError.exit_code


class DamagedTable(LakeError):
    """A table whose log references data files that are gone (deleted by hand, a failed
    copy): it would read wrong and take writes, so a run stops before writing anything."""


class LakeWriteError(LakeError):
    """The lake's storage refused a write (disk full, permissions, read-only). Delta commits
    are atomic: nothing of the failed write is visible, and every table stays readable at its
    previous version."""


_OS_HINTS = {
    "os error 28": "the disk is full",
    "os error 13": "permission denied",
    "os error 30": "the file system is read-only",
    "os error 122": "the disk quota is exceeded",
}


def is_storage_error(exc: BaseException) -> bool:
    """delta-rs reports I/O failures as DeltaError / TableNotFoundError with the OS error."""
    return isinstance(exc, OSError) or "os error" in str(exc)


def lake_write_error(name: str, lake: str, exc: BaseException) -> LakeWriteError:
    """A clear error for a failed write of table ``name`` (or, with a space in ``name``, of
    what it says, e.g. "the run's staging")."""
    what = name if " " in name else f"table '{name}'"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    said = str(exc).lower().replace("errno ", "os error ")  # pyarrow says [Errno 28]
    hint = next((h for code, h in _OS_HINTS.items() if code in said), "a storage error")
    return LakeWriteError(
        f"could not write {what} under {lake}: {hint} ({text}). Nothing of this write "
        "was committed; every table stays readable at its previous version"
    )


def damaged_table_error(store: DeltaStore, name: str, missing: list[str]) -> DamagedTable:
    """The error for a table whose log references files that are gone: what is missing, and
    the two ways out (restore them, or drop them from the table with maintain --repair)."""
    shown = ", ".join(storage.name_of(uri) for uri in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return DamagedTable(
        f"table '{name}' under {store.lake} is damaged: its _delta_log references "
        f"{len(missing)} data file(s) that are gone ({shown}{more}). Nothing was written to it. "
        "Restore the files (from a backup or the storage's object versions) and rerun, or "
        f"drop them from the table with `enrich maintain --lake {store.lake} --repair` (their "
        "rows are lost; a later `enrich run --force` rebuilds them from the input)"
    )


def is_missing_file(exc: BaseException) -> bool:
    """A read of a file that is not there (pyarrow's FileNotFoundError, delta-rs's os error 2)."""
    return isinstance(exc, FileNotFoundError) or "os error 2)" in str(exc)


def check_compatible(table: DeltaTable, source: pa.Schema, name: str) -> None:
    """Refuse type changes to existing columns, naming each column and both types."""
    existing = {f.name: str(f.type) for f in table.schema().fields}
    incoming = {f.name: str(f.type) for f in Schema.from_arrow(source).fields}
    changed = [
        f"{col}: table has {existing[col]}, write has {kind}"
        for col, kind in incoming.items()
        if col in existing and existing[col] != kind
    ]
    if changed:
        raise SchemaMismatch(
            f"table '{name}' cannot take this write (schema evolution is additive only; "
            f"migrate to a new table or lake for type changes): " + "; ".join(changed)
        )


def rows_to_table(name: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as Arrow with ``schema``; a key it has no column for is refused (``from_pylist``
    would drop it silently)."""
    unknown = sorted({key for row in rows for key in row} - set(schema.names))
    if unknown:
        raise SchemaMismatch(
            f"rows for table '{name}' carry {', '.join(unknown)}, which it has no column "
            "for: add the column to schemas/tables.py or stop producing the key"
        )
    return pa.Table.from_pylist(rows, schema=schema)


def _last_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the last row for each key, so an upsert never sees a duplicate source key."""
    if table.num_rows < 2 or len(pc.unique(table.column(key))) == table.num_rows:
        return table
    keys = table.column(key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    return table.take(sorted(last.values())) if len(last) < len(keys) else table


def parquet_dataset(uris: list[str], schema: pa.Schema | None = None) -> ds.Dataset:
    """A dataset over Parquet files on any storage (one filesystem per call)."""
    if not uris:
        raise ValueError("parquet_dataset needs at least one file")
    fs, _ = storage.resolve(uris[0])
    paths = [storage.resolve(uri)[1] for uri in uris]
    return ds.dataset(paths, format="parquet", schema=schema, filesystem=fs)


def active_files(table: DeltaTable) -> list[str]:
    """The table version's Parquet files, readable through ``storage``: delta-rs returns local
    paths percent-encoded (a lake under "my lake/" lists "my%20lake/...")."""
    from urllib.parse import unquote

    return [unquote(u) if storage.is_local(u) else u for u in table.file_uris()]


def delta_to_arrow(
    table: DeltaTable, columns: list[str] | None = None, where: ds.Expression | None = None
) -> pa.Table:
    """Read a loaded table version as Arrow through its active files.

    deltalake's ``to_pyarrow_table`` can abort the interpreter at exit ("terminate called
    without an active exception", delta-rs #2184); reading the active Parquet files with
    pyarrow avoids it. Exact for our tables: no deletion vectors, no column mapping, and files
    written before an additive schema change read the new columns as nulls.
    """
    schema = pa.schema(table.schema().to_arrow())
    files = active_files(table)
    if not files:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    return parquet_dataset(files, schema).to_table(columns=columns, filter=where)


class StagedFiles:
    """Parquet files read one after another as one Arrow stream: the memory of a commit
    follows one file, not how many there are (a dataset scan reads several ahead)."""

    def __init__(self, uris: list[str], schema: pa.Schema):
        self.uris, self.schema = uris, schema

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._batches())

    def keys(self, key: str) -> pa.Array:
        """The key column of every file (small next to the rows)."""
        only_key = StagedFiles(self.uris, pa.schema([self.schema.field(key)]))
        return only_key.reader().read_all().column(key).combine_chunks()

    def _batches(self):
        for uri in self.uris:
            fs, path = storage.resolve(uri)
            with fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(columns=self.schema.names):
                    yield batch.cast(self.schema)


def predates(table: Any, moment: datetime) -> bool:
    """Whether ``moment`` (naive = UTC) is before ``table``'s first commit; ``table`` is loaded
    at the version in force at ``moment`` (so only version 0 can predate it)."""
    if table.version() != 0:
        return False
    first = min(commit["timestamp"] for commit in table.history())  # ms since the epoch
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware < datetime.fromtimestamp(first / 1000, tz=UTC)


class DeltaStore:
    """All tables of one lake directory (a local path or an object-store URI)."""

    def __init__(self, lake: str | Path):
        self.lake = storage.normalize(str(lake))
        if (
            storage.is_local(self.lake)
            and Path(self.lake).exists()
            and not storage.is_dir(self.lake)
        ):
            raise NotALake(
                f"--lake {self.lake} is a file, not a directory: point it at a folder (created "
                "when absent) or an object-store URI"
            )
        self.options = storage.delta_storage_options(self.lake)

    def path(self, name: str) -> str:
        return f"{self.lake}/{_spec(name).name}"

    def exists(self, name: str) -> bool:
        """Whether the table has a Delta log (a folder with a broken log counts: reading it
        then says what is wrong, rather than a new table being written over it)."""
        path = self.path(name)
        if DeltaTable.is_deltatable(path, storage_options=self.options):
            return True
        return storage.is_local(path) and Path(path, "_delta_log").is_dir()

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        version = checked_version(version)
        try:
            return DeltaTable(self.path(name), version=version, storage_options=self.options)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for a bad log
            raise self._unreadable(name, version, exc) from exc

    def _unreadable(self, name: str, version: int | None, exc: Exception) -> LakeError:
        """Why table ``name`` (at ``version``) did not load: no lake, no such table, no such
        version, a version whose log is gone, or a damaged log."""
        cause = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        where = f"table '{name}' under {self.lake}"
        if not self.exists(name):
            if not storage.exists(self.lake):
                return NotALake(f"there is no lake at {self.lake}: nothing exists there")
            present = [t for t in TABLES if self.exists(t)]
            return BadTableRequest(
                f"{where} does not exist (yet); the tables there are "
                + (", ".join(present) or "none (no run wrote there: is the lake path right?)")
            )
        latest = self._latest(name) if version is not None else None
        if latest is not None and version > latest:
            return BadTableRequest(
                f"{where} has versions 0 to {latest}; version {version} does not exist (yet)"
            )
        if latest is not None:
            return LakeError(
                f"{where} cannot be read at version {version}, though its latest (version "
                f"{latest}) can: {cause}. The log or files of that version were removed "
                "(enrich maintain --cleanup-logs, VACUUM); read a newer version"
            )
        return LakeError(
            f"{where} cannot be read"
            + (f" at version {version}" if version is not None else "")
            + f": {cause}. Restore its _delta_log or point --lake at a healthy lake"
        )

    def _latest(self, name: str) -> int | None:
        """The latest version of a table, None when even that cannot be loaded."""
        try:
            return DeltaTable(self.path(name), storage_options=self.options).version()
        except Exception:  # noqa: BLE001 - the log itself is damaged: the caller says so
            return None

    def missing_files(self, name: str) -> list[str]:
        """The data files the table's current version references that storage no longer has."""
        files = active_files(self.table(name))
        if storage.is_local(self.lake):
            return [uri for uri in files if not os.path.isfile(uri)]
        present = set(storage.list_files(self.path(name)))
        return [uri for uri in files if uri not in present]

    def require_intact(self, names: tuple[str, ...] = tuple(TABLES)) -> None:
        """Raise ``DamagedTable`` when a table's log references files that are gone: a MERGE
        would read wrong rows or fail half-way, so nothing may be written to it."""
        for name in names:
            if self.exists(name) and (missing := self.missing_files(name)):
                raise damaged_table_error(self, name, missing)

    def require_lake(self) -> None:
        """Fail with a clear message when no table of ours exists here (a mistyped --lake)."""
        if not any(self.exists(name) for name in TABLES):
            raise NotALake(
                f"{self.lake} is not a lake: none of its tables ({', '.join(TABLES)}) exist "
                "there. Check --lake"
            )

    def version(self, name: str) -> int | None:
        return self.table(name).version() if self.exists(name) else None

    def merge(self, name: str, rows: list[dict[str, Any]] | pa.Table) -> int | None:
        """Upsert rows by the table's key; returns the table version after the commit."""
        spec = _spec(name)
        source = rows if isinstance(rows, pa.Table) else rows_to_table(name, spec.schema, rows)
        source = _last_per_key(source.select(spec.schema.names).cast(spec.schema), spec.key)
        if source.num_rows == 0:
            return self.version(name)
        return self._merge_retried(spec, source)

    def merge_files(self, name: str, uris: list[str]) -> int | None:
        """Upsert the rows of staged Parquet files (typed with the table's schema), streamed
        into one MERGE without materializing them. Source keys must be unique."""
        spec = _spec(name)
        if not uris:
            return self.version(name)
        return self._merge_retried(spec, StagedFiles(uris, spec.schema))

    def _merge_retried(self, spec: TableSpec, source: pa.Table | StagedFiles) -> int | None:
        return self._committed(spec.name, lambda: self._merge_once(spec, source))

    def _committed(self, name: str, attempt_commit: Callable[[], int | None]) -> int | None:
        """Run one commit attempt, retrying optimistic-concurrency conflicts with backoff."""
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            try:
                return attempt_commit()
            except (SchemaMismatch, LakeWriteError):
                raise
            except CommitFailedError as exc:
                if attempt == MAX_COMMIT_ATTEMPTS:
                    raise
                delay = min(5.0, 0.1 * 2**attempt) * (0.5 + random.random())
                logger.warning(
                    "%s: commit conflict (%s), retry %d in %.2fs", name, exc, attempt, delay
                )
                time.sleep(delay)
            except Exception as exc:
                if is_missing_file(exc) and (missing := self.missing_files(name)):
                    raise damaged_table_error(self, name, missing) from exc
                if is_storage_error(exc):
                    raise lake_write_error(name, self.lake, exc) from exc
                raise
        raise AssertionError("unreachable")

    def _merge_once(self, spec: TableSpec, source: pa.Table | StagedFiles) -> int:
        path = self.path(spec.name)
        if not self.exists(spec.name):
            try:
                write_deltalake(
                    path,
                    source if isinstance(source, pa.Table) else source.reader(),
                    mode="error",
                    name=spec.name,
                    description=table_description(spec.name),
                    storage_options=self.options,
                    # No retry: a retried create lands as version 1 on another writer's
                    # table, and each writer would take itself for the table's first.
                    commit_properties=CommitProperties(max_commit_retries=0),
                )
                return 0  # the commit that creates a table is version 0
            except Exception as exc:  # noqa: BLE001 - another writer created it first: merge
                if not self.exists(spec.name):
                    raise
                logger.info("%s was created concurrently (%s); merging", spec.name, exc)
        table = self.table(spec.name)
        check_compatible(table, source.schema, spec.name)
        if set(source.schema.names) - set(table.schema().to_arrow().names):
            return self._evolving_merge(spec, table, source)
        files = upsert.TableFiles(table, path, spec.key)
        if isinstance(source, pa.Table):
            return upsert.upsert(
                files, source.column(spec.key).combine_chunks(), source.to_batches()
            )
        return upsert.upsert(files, source.keys(spec.key), source.reader())

    def _evolving_merge(self, spec: TableSpec, table: DeltaTable, source) -> int:
        """A write that adds columns: delta-rs MERGE evolves the schema (rare, whole-table)."""
        (
            table.merge(
                source if isinstance(source, pa.Table) else source.reader(),
                predicate=f"t.{spec.key} = s.{spec.key}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,  # additive evolution: new nullable columns are added
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return table.version()

    def delete_keys(self, name: str, keys: list[str] | pa.Array) -> int | None:
        """Delete the rows whose key is in ``keys`` (no-op if the table or keys are absent),
        rewriting only the files that hold them."""
        if not len(keys) or not self.exists(name):
            return self.version(name)
        key = _spec(name).key

        def attempt_delete() -> int | None:
            files = upsert.TableFiles(self.table(name), self.path(name), key)
            committed = upsert.delete(files, keys)
            return files.table.version() if committed is None else committed

        return self._committed(name, attempt_delete)

    def delete_keys_in_files(self, name: str, uris: list[str]) -> int | None:
        """Delete the rows whose key appears in the staged files ``uris``."""
        if not uris or not self.exists(name):
            return self.version(name)
        key = _spec(name).key
        staged = StagedFiles(uris, pa.schema([pa.field(key, pa.string())]))
        return self.delete_keys(name, staged.keys(key))

    def read(
        self,
        name: str,
        version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
        keys: list[str] | None = None,
    ) -> pa.Table:
        """The table (latest, a version, or as of a timestamp) as Arrow. A requested column
        that version does not have yet (added since by additive evolution) reads as nulls; a
        column the table has never had is a ``BadTableRequest``, as are ``version`` with
        ``as_of`` and an ``as_of`` that is not a datetime."""
        columns = checked_request(name, version, as_of, columns)
        table = self.table(name, version=version)
        if as_of is not None:
            table.load_as_version(as_of)
        held = upsert.table_schema(table).names
        refuse_unknown_columns(name, columns, held)
        present = None if columns is None else [c for c in columns if c in held]
        if as_of is not None and predates(table, as_of):
            # delta-rs gives version 0 for any earlier time, so a point-in-time join would see
            # features written after its date: the table had no rows yet.
            empty = upsert.table_schema(table).empty_table()
            found = empty.select(present) if present is not None else empty
        elif keys is None:
            found = delta_to_arrow(table, present)
        else:
            files = upsert.TableFiles(table, self.path(name), _spec(name).key)
            found = upsert.read_keyed(files, list(keys), present)
            if found is None:
                empty = upsert.table_schema(table).empty_table()
                found = empty.select(present) if present is not None else empty
        return found if columns is None else _nulls_for_missing(found, name, columns)

    def batches(self, name: str, rows: int) -> Iterator[pa.RecordBatch]:
        """The latest version streamed in batches of at most ``rows`` rows: memory follows a
        batch, not the table."""
        table = self.table(name)
        files = active_files(table)
        if files:
            dataset = parquet_dataset(files, upsert.table_schema(table))
            yield from dataset.to_batches(batch_size=rows)

    def head(self, name: str, rows: int, columns: list[str] | None = None) -> list[dict]:
        """The first ``rows`` rows of the latest version, reading no more files than needed."""
        table = self.table(name)
        files = active_files(table)
        if not files:
            return []
        schema = pa.schema(table.schema().to_arrow())
        return parquet_dataset(files, schema).head(rows, columns=columns).to_pylist()

    def read_or_empty(self, name: str, **kwargs: Any) -> pa.Table:
        if not self.exists(name):
            schema = _spec(name).schema
            columns = kwargs.get("columns")
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return self.read(name, **kwargs)


def checked_request(name: str, version: object, as_of: object, columns: object) -> list[str] | None:
    """What every reader checks before it loads anything (``BadTableRequest``): a known table,
    one of ``version`` and ``as_of``, a whole version from 0, a datetime, a list of names.
    The columns, as a list."""
    schema = _spec(name).schema
    if version is not None and as_of is not None:
        raise BadTableRequest(
            f"version={echo(version)} and as_of={echo(as_of)} both pick a version of table "
            f"'{name}': give one of them"
        )
    if as_of is not None and not isinstance(as_of, datetime):
        raise BadTableRequest(
            f"as_of={echo(as_of)}: give a datetime, e.g. "
            "datetime(2026, 11, 1, tzinfo=timezone.utc) (a naive one is read as UTC)"
        )
    checked_version(version)
    return checked_columns(name, columns, schema)


def refuse_unknown_columns(name: str, columns: list[str] | None, held: list[str]) -> None:
    """``BadTableRequest`` naming the table's columns for a column it never had (one the
    schema added since the version read is not unknown: it reads as nulls)."""
    known = dict.fromkeys([*_spec(name).schema.names, *held])
    if unknown := [c for c in columns or () if c not in known]:
        raise BadTableRequest(
            f"table '{name}' has no column {', '.join(map(echo, unknown[:5]))}; its columns "
            f"are {', '.join(known)}"
        )


def checked_version(version: object) -> int | None:
    """``version`` as an int: a table version counts from 0, and a bool is not one."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, numbers.Integral):
        raise BadTableRequest(
            f"version={echo(version)}: a table version is a whole number (0, 1, 2, ...), "
            f"not a {type(version).__name__}; leave it out to read the latest"
        )
    if version < 0:
        raise BadTableRequest(
            f"version={version}: table versions count up from 0 (no negative indexing); "
            "leave it out to read the latest"
        )
    return int(version)


def checked_columns(name: str, columns: object, schema: pa.Schema) -> list[str] | None:
    """``columns`` as a list of names: a plain string would read as its letters."""
    if columns is None:
        return None
    if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
        raise BadTableRequest(
            f"columns={echo(columns)}: give a list of column names, e.g. "
            f"[{schema.names[0]!r}]; table '{name}' has {', '.join(schema.names)}"
        )
    return list(columns)


def _nulls_for_missing(found: pa.Table, name: str, columns: list[str]) -> pa.Table:
    """``found`` with ``columns`` in order; those it lacks as typed nulls."""
    schema = _spec(name).schema
    return pa.table(
        {
            c: found.column(c)
            if c in found.column_names
            else pa.nulls(found.num_rows, schema.field(c).type)
            for c in columns
        }
    )


def fixed_size_embeddings(table: pa.Table) -> pa.Table:
    """Present ``embedding`` as fixed_size_list<float32>[dim] when every row has the same dim
    (Delta has no fixed-size array type, so it is stored as a plain list)."""
    if "embedding" not in table.column_names or table.num_rows == 0:
        return table
    lengths = pc.unique(pc.list_value_length(table.column("embedding"))).to_pylist()
    if len(lengths) != 1 or lengths[0] is None:
        return table
    index = table.column_names.index("embedding")
    fixed = pa.list_(pa.float32(), lengths[0])
    return table.set_column(
        index, pa.field("embedding", fixed), table.column("embedding").cast(fixed)
    )


@positional_deprecated
def read_table(
    lake: str | Path,
    name: TableName,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Consumer API: read a feature table as Arrow (latest, ``version=N`` or ``as_of=datetime``);
    embeddings come back as fixed-size lists."""
    return fixed_size_embeddings(
        DeltaStore(lake).read(name, version=version, as_of=as_of, columns=columns)
    )


@positional_deprecated
def read_pandas(
    lake: str | Path,
    name: TableName,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    columns: list[str] | None = None,
):
    """Consumer API: ``read_table`` as a pandas DataFrame."""
    return read_table(lake, name, version=version, as_of=as_of, columns=columns).to_pandas()
