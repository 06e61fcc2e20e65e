"""The one place a table row is built: one builder per table (and one for the staged
``sid_codes``), each checked against its Arrow schema in schemas/tables.py, so a row cannot
drift from its table. Every engine writes rows built here, so tables match.
tests/test_row_builders.py fails when a module outside schemas/ builds a row by hand.

An item's values are checked against their columns' Arrow types before Arrow sees them
(``value_problem``): a value that does not fit (an int past int32, an object where a string
belongs, text that is not Unicode) makes that item one ``unstorable_value`` error row, so no
single item can fail a task's staging write."""

from __future__ import annotations

import json
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from core.errors import EnrichError, checked_code
from schemas.tables import LINEAGE_COLUMNS, SID_CODES, TABLES
from transforms.stage import ERROR_KEY, Record, has_error, mark_error

# Stamped by the run on every row, never read from a record.
RUN_COLUMNS = ("run_id", "updated_at")
# What an error row takes from the record's error (transforms.stage.mark_error).
ERROR_DETAIL = ("stage", "code", "message")
PROMOTION_COLUMNS = ("promotion_status", "promoted_at", "promotion_note")
# An error that repeats with the same code on the same content is a known failure.
ERROR_IDENTITY = ("item_id", "code", "content_sha256")


class RowShapeError(EnrichError, ValueError):
    """A row's keys do not match its table's columns: a bug in the code that built it."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def table_schema(table: str) -> pa.Schema:
    return SID_CODES if table == "sid_codes" else TABLES[table].schema


def record_fields(table: str, *computed: str) -> tuple[str, ...]:
    """The columns of ``table`` a row reads from a pipeline record: all but lineage, the
    run's stamps and ``computed`` (derived by the builder)."""
    skip = {*LINEAGE_COLUMNS, *RUN_COLUMNS, *computed}
    return tuple(name for name in table_schema(table).names if name not in skip)


# The record fields each table's rows read (besides LINEAGE_COLUMNS); the stage-chain test
# checks that the stages produce every one of them.
DESCRIPTION_FIELDS = record_fields("descriptions")
EMBEDDING_FIELDS = record_fields("embeddings", "dim")
ERROR_FIELDS = tuple(
    n for n in table_schema("errors").names if n not in {*RUN_COLUMNS, *ERROR_DETAIL}
)


def checked_row(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` in column order, if its keys are exactly the columns of ``table`` and no
    required column is null; else a ``RowShapeError`` naming what is wrong."""
    schema = table_schema(table)
    unknown = sorted(set(row) - set(schema.names))
    missing = [name for name in schema.names if name not in row]
    null = [f.name for f in schema if not f.nullable and f.name in row and row[f.name] is None]
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (("unknown", unknown), ("missing", missing), ("null", null))
        if names
    ]
    if problems:
        raise RowShapeError(
            f"a '{table}' row does not match schemas/tables.py ({'; '.join(problems)}): "
            "build it with the table's builder in schemas/rows.py"
        )
    return {name: row[name] for name in schema.names}


def _lineage(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    return {**{k: record.get(k) for k in LINEAGE_COLUMNS}, "run_id": run_id, "updated_at": now}


def description_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    row = {f: record.get(f) for f in DESCRIPTION_FIELDS}
    lineage = _lineage(record, run_id, now)
    lineage.pop("encoder")
    return checked_row("descriptions", {**row, **lineage})


def embedding_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    vector = record["embedding"]
    row = {f: record.get(f) for f in EMBEDDING_FIELDS}
    row["embedding"] = [float(x) for x in vector]
    return checked_row("embeddings", {**row, "dim": len(vector), **_lineage(record, run_id, now)})


def error_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    """The ``errors`` row of a record marked with an error (``transforms.stage.mark_error``):
    the one way an errors row is made, so its code is always a documented one."""
    error = record[ERROR_KEY]
    detail = {key: error[key] for key in ERROR_DETAIL}
    detail["code"] = checked_code(detail["code"])
    fields = {f: record.get(f) for f in ERROR_FIELDS}
    return checked_row("errors", {**fields, **detail, "run_id": run_id, "updated_at": now})


def error_codes(rows: Iterable[Mapping[str, Any]]) -> Counter:
    """How many of the error rows carry each code."""
    return Counter(row["code"] for row in rows)


def error_identity(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """The row's ``ERROR_IDENTITY`` values."""
    return tuple(row[name] for name in ERROR_IDENTITY)  # type: ignore[return-value]


def table_rows(records: list[Record], run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The rows processed records add: descriptions and embeddings, or one error each (also
    for an item with a value that does not fit its column, ``unstorable_value``)."""
    now = utc_now()
    rows: dict[str, list[dict[str, Any]]] = {"descriptions": [], "embeddings": [], "errors": []}
    for record in records:
        if not has_error(record):
            built = {
                "descriptions": description_row(record, run_id, now),
                "embeddings": embedding_row(record, run_id, now),
            }
            problems = [p for table, row in built.items() for p in row_problems(table, row)]
            if not problems:
                for table, row in built.items():
                    rows[table].append(row)
                continue
            mark_error(record, "rows", "unstorable_value", "; ".join(problems[:3]))
        rows["errors"].append(storable_error_row(error_row(record, run_id, now)))
    return rows


# -- Values that fit their columns ---------------------------------------------------------
FLOAT32_MAX = float(np.finfo(np.float32).max)
STRING_BYTES_MAX = 2**31 - 1  # one value of an Arrow string (32-bit offsets)
SHOWN_VALUE_CHARS = 40


def row_problems(table: str, row: Mapping[str, Any]) -> list[str]:
    """Why values of ``row`` cannot be stored in ``table``'s columns: one line a column."""
    return [
        f"column '{field.name}' ({table}): {problem}"
        for field in table_schema(table)
        if (problem := value_problem(row.get(field.name), field.type)) is not None
    ]


def storable_error_row(row: dict[str, Any]) -> dict[str, Any]:
    """An error row whose every value fits: text that is not Unicode is escaped, any other
    misfit nulled, so the row that reports a bad item can always be written."""
    for field in table_schema("errors"):
        value = row[field.name]
        if value_problem(value, field.type) is None:
            continue
        if isinstance(value, str):
            row[field.name] = value.encode("utf-8", "backslashreplace").decode()
        else:
            row[field.name] = None if field.nullable else repr(value)[:SHOWN_VALUE_CHARS]
    return row


def value_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    """Why ``value`` cannot be stored as ``arrow_type``; None if it can. Arrow raises on some
    misfits (an int past int64, a dict for a string: the whole write fails) and silently
    changes others (3.5 into an int column is 3, 1e300 into float32 is inf): both are caught.
    Lists and structs are checked element by element."""
    if value is None:
        return None
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _list_problem(value, arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return _struct_problem(value, arrow_type)
    for is_type, check in _SCALAR_CHECKS:
        if is_type(arrow_type):
            return check(value, arrow_type)
    try:  # a type no check covers: Arrow's own conversion is the judge
        pa.array([value], type=arrow_type)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        return f"does not convert to {arrow_type} ({type(exc).__name__})"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else f"{text[:SHOWN_VALUE_CHARS]}..."


def _a(value: Any, arrow_type: pa.DataType) -> str:
    return f"a {type(value).__name__} where {arrow_type} belongs"


def _int_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return _a(value, arrow_type)
    if not isinstance(value, numbers.Integral):
        if not np.isfinite(value) or not float(value).is_integer():
            return f"{_shown(value)} is not a whole number ({arrow_type})"
        value = int(value)
    bits = arrow_type.bit_width
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not pa.types.is_signed_integer(arrow_type):
        low, high = 0, 2**bits - 1
    if not low <= int(value) <= high:
        return f"{_shown(value)} is out of {arrow_type}'s range"
    return None


def _float_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return _a(value, arrow_type)
    try:
        number = float(value)
    except OverflowError:
        return f"{_shown(value)} is out of {arrow_type}'s range"
    if arrow_type == pa.float32() and np.isfinite(number) and abs(number) > FLOAT32_MAX:
        return f"{_shown(value)} is out of float's range (it would be stored as infinity)"
    return None


def _string_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes that are not UTF-8 where a string belongs"
    if not isinstance(value, str):
        return _a(value, arrow_type)
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "text that is not valid Unicode (a lone surrogate)"
    if size > STRING_BYTES_MAX:
        return f"a string of {size:,} bytes, more than one Arrow string holds"
    return None


def _binary_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    return None if isinstance(value, bytes | bytearray | memoryview) else _a(value, arrow_type)


def _bool_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    return None if isinstance(value, bool | np.bool_) else _a(value, arrow_type)


def _timestamp_problem(value: Any, arrow_type: pa.DataType) -> str | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        return _int_problem(value, pa.int64())
    return _a(value, arrow_type)


_SCALAR_CHECKS = (
    (pa.types.is_integer, _int_problem),
    (pa.types.is_floating, _float_problem),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), _string_problem),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), _binary_problem),
    (pa.types.is_boolean, _bool_problem),
    (pa.types.is_timestamp, _timestamp_problem),
)


def _list_problem(value: Any, value_type: pa.DataType) -> str | None:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        return f"a {type(value).__name__} where a list of {value_type} belongs"
    for index, element in enumerate(value):
        if (problem := value_problem(element, value_type)) is not None:
            return f"item {index}: {problem}"
    return None


def _struct_problem(value: Any, arrow_type: pa.StructType) -> str | None:
    if not isinstance(value, Mapping):
        return f"a {type(value).__name__} where a struct belongs"
    for field in arrow_type:
        if (problem := value_problem(value.get(field.name), field.type)) is not None:
            return f"{field.name}: {problem}"
    return None


def sid_code_row(item: Mapping[str, Any], bucket: int) -> dict[str, Any]:
    """A staged ``sid_codes`` row: an item coded with the pinned codebook
    (``pipelines.sids.code_items``) and its dedup bucket."""
    row = {**item, "codes": list(item["codes"]), "choices": list(item["choices"])}
    return checked_row("sid_codes", {**row, "bucket": int(bucket)})


def semantic_id_row(
    item: Record, *, codes: list[int], dedup: int, sid: str, codebook_version: str,
    prefix_ngrams: list[str], prefix_hashes: list[int] | None, sid_pieces: list[str] | None,
    run_id: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """A ``semantic_ids`` row: an item's SID under a codebook, with the item's lineage."""
    row = {
        "item_id": item["item_id"],
        "codes": list(codes),
        "dedup": dedup,
        "sid": sid,
        "codebook_version": codebook_version,
        "prefix_ngrams": prefix_ngrams,
        "prefix_hashes": prefix_hashes,
        "sid_pieces": sid_pieces,
    }
    return checked_row("semantic_ids", {**row, **_lineage(item, run_id, now)})


def codebook_row(fields: Mapping[str, Any], *, now: datetime, **stamps: Any) -> dict[str, Any]:
    """A ``codebooks`` row from ``Codebook.to_row()`` (or a stored row) and ``stamps``:
    ``run_id`` and the promotion columns (null when not given)."""
    row = {**dict.fromkeys(PROMOTION_COLUMNS), **fields, **stamps, "updated_at": now}
    return checked_row("codebooks", row)


def run_row(
    summary: Any, *, config_fingerprint: str, config_json: str, tool_version: str, now: datetime
) -> dict[str, Any]:
    """The ``runs`` row of a run's summary (``pipelines.commit.RunSummary``): its counts are
    the summary's attributes of the same names."""
    counted = ("items", "succeeded", "skipped", "failed", "missing_input")
    row = {name: getattr(summary, name) for name in counted}
    row.update(
        run_id=summary.run_id,
        status=str(summary.status),
        engine=summary.engine,
        input=summary.input,
        started_at=summary.started_at,
        finished_at=summary.finished_at,
        config_fingerprint=config_fingerprint,
        config_json=config_json,
        stage_fingerprints_json=json.dumps(summary.stage_fingerprints, sort_keys=True),
        stage_stats_json=json.dumps(summary.stage_stats, sort_keys=True),
        table_versions_json=json.dumps(summary.table_versions, sort_keys=True),
        codebook_version=summary.codebook_version,
        tool_version=tool_version,
        updated_at=now,
    )
    return checked_row("runs", row)


def release_row(
    *, release_id: str, table_versions: Mapping[str, int | None],
    codebook_versions: Mapping[str, int], row_counts: Mapping[str, int], note: str,
    run_id: str, validation_id: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """A ``releases`` row: the table versions a validation checked, pinned under a label."""
    return checked_row(
        "releases",
        {
            "release_id": release_id,
            "table_versions_json": json.dumps(dict(table_versions), sort_keys=True),
            "codebook_versions_json": json.dumps(dict(codebook_versions), sort_keys=True),
            "row_counts_json": json.dumps(dict(row_counts), sort_keys=True),
            "note": note,
            "run_id": run_id,
            "validation_id": validation_id,
            "updated_at": now,
        },
    )


def validation_row(
    *, validation_id: str, run_id: str, passed: bool, table_versions: Mapping[str, int | None],
    checks_json: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """A ``validations`` row: the verdict on a run and the table versions it checked."""
    return checked_row(
        "validations",
        {
            "validation_id": validation_id,
            "run_id": run_id,
            "passed": passed,
            "table_versions_json": json.dumps(dict(table_versions), sort_keys=True),
            "checks_json": checks_json,
            "updated_at": now,
        },
    )


def evaluation_row(fields: Mapping[str, Any], *, run_id: str, now: datetime) -> dict[str, Any]:
    """An ``evaluations`` row: one (evaluation, model, representation, slice) score with the
    lineage of the features it used (``pipelines.evaluation.evaluation_rows`` names them)."""
    return checked_row("evaluations", {**fields, "run_id": run_id, "updated_at": now})


def crosswalk_row(fields: Mapping[str, Any], *, run_id: str, now: datetime) -> dict[str, Any]:
    """A ``sid_crosswalk`` row: one item's SID before and after a re-coding
    (``transforms.semantic_ids.churn.crosswalk_rows`` computes them)."""
    return checked_row("sid_crosswalk", {**fields, "run_id": run_id, "updated_at": now})
