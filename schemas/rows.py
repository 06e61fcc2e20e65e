"""The one place a table row is built: one builder per table (and one for the staged
``sid_codes``), each checked against its Arrow schema in schemas/tables.py, so a row cannot
drift from its table. Every engine writes rows built here, so tables match.
tests/test_row_builders.py fails when a module outside schemas/ builds a row by hand."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from core.errors import EnrichError, checked_code
from schemas.tables import LINEAGE_COLUMNS, SID_CODES, TABLES
from transforms.stage import ERROR_KEY, Record, has_error

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
    """The rows processed records add: descriptions and embeddings, or one error each."""
    now = utc_now()
    good = [r for r in records if not has_error(r)]
    return {
        "descriptions": [description_row(r, run_id, now) for r in good],
        "embeddings": [embedding_row(r, run_id, now) for r in good],
        "errors": [error_row(r, run_id, now) for r in records if has_error(r)],
    }


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
