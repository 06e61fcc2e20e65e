"""Issue 43 item 3: every value is checked against its column's Arrow type before Arrow sees
it, so one item's misfit (10**30 as a count, an object as a name, a lone surrogate) is that
item's ``unstorable_value`` error row and never fails the task's staging write."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from core.errors import ERROR_CODES
from schemas.rows import table_rows, value_problem
from schemas.store import rows_to_table
from schemas.tables import SID_CODES, TABLES

GOOD = {"item_id": "good", "description": "A clip about pasta.", "embedding": [0.5, -0.5]}

# column, value that does not fit it, words of the reason: each kind of misfit Arrow raises
# on (and would fail the whole write) or silently changes
MISFITS = [
    ("prompt_tokens", 10**30, "out of int32's range"),
    ("description_tokens", -(2**31) - 1, "out of int32's range"),
    ("file_size", 2**63, "out of int64's range"),
    ("width", 2.5, "is not a whole number"),
    ("frames_sampled", math.nan, "is not a whole number"),
    ("height", True, "a bool where int32 belongs"),
    ("frame_count", "12", "a str where int64 belongs"),
    ("served_model", {"name": "x"}, "a dict where string belongs"),
    ("served_model", ["a"], "a list where string belongs"),
    ("title", "x\ud800y", "not valid Unicode"),
    ("uri", b"\xff\xfe", "bytes that are not UTF-8"),
    ("describe_latency_ms", 1e300, "out of float's range"),
    ("duration_s", 10**400, "out of double's range"),
    ("grounding", "high", "a str where float belongs"),
    ("has_audio", 1, "a int where bool belongs"),
    ("tags", "a,b", "a str where a list of string belongs"),
    ("tags", ["a", 7], "item 1: a int where string belongs"),
    ("frame_timestamps_s", [0.0, 1e39], "item 1: 1e+39 is out of float's range"),
    ("transcript_segments", [{"start": "zero"}], "item 0: start: a str where float belongs"),
    ("visual_tags", ["cat"], "item 0: a str where a struct belongs"),
    ("embedding", [0.1, 1e300], "item 1: 1e+300 is out of float's range"),
]


@pytest.mark.parametrize("column, value, reason", MISFITS, ids=[f"{c}-{r}" for c, _, r in MISFITS])
def test_item_3_a_misfit_is_its_items_error_row_and_the_others_are_written(column, value, reason):
    bad = {**GOOD, "item_id": "bad", column: value}
    rows = table_rows([dict(GOOD), bad], "run-1")
    assert [r["item_id"] for r in rows["descriptions"]] == ["good"]
    assert [r["item_id"] for r in rows["embeddings"]] == ["good"]
    [error] = rows["errors"]
    assert (error["item_id"], error["stage"], error["code"]) == ("bad", "rows", "unstorable_value")
    assert f"column '{column}'" in error["message"] and reason in error["message"]
    assert "unstorable_value" in ERROR_CODES
    for table, table_rows_ in rows.items():  # Arrow takes every row that is left
        assert rows_to_table(table, TABLES[table].schema, table_rows_).num_rows == len(table_rows_)


def test_item_3_the_values_that_fit_pass_as_arrow_would_store_them():
    fits = {
        **GOOD,
        "prompt_tokens": np.int64(2**31 - 1),
        "width": 640.0,
        "describe_latency_ms": math.inf,
        "loudness_lufs": -math.inf,
        "grounding": np.float32(0.5),
        "title": "café ☕",
        "tags": ("a", "b"),
        "frame_timestamps_s": np.array([0.0, 0.5], np.float32),
        "has_audio": np.bool_(True),
        "transcript_segments": [{"start": 0, "end": 1.5, "text": "hi", "extra": object()}],
    }
    rows = table_rows([fits], "run-1")
    assert not rows["errors"] and len(rows["descriptions"]) == 1
    rows_to_table("descriptions", TABLES["descriptions"].schema, rows["descriptions"])


def test_item_3_an_error_row_itself_always_fits():
    """The row that reports a bad item is written whatever its text holds."""
    marked = {"item_id": "e", "uri": "a\ud800.mp4", "content_sha256": 5}
    marked["error"] = {"stage": "media", "code": "not_found", "message": "gone \udcff"}
    [row] = table_rows([marked], "run-1")["errors"]
    assert row["uri"] == "a\\ud800.mp4" and row["content_sha256"] is None
    rows_to_table("errors", TABLES["errors"].schema, [row])


SAMPLES = {
    pa.types.is_integer: (1, 2**64),
    pa.types.is_floating: (0.5, "0.5"),
    pa.types.is_string: ("text", "\ud800"),
    pa.types.is_binary: (b"\x00", "text"),
    pa.types.is_boolean: (False, 0),
    pa.types.is_timestamp: (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01"),
    pa.types.is_list: ([], {}),
    pa.types.is_struct: ({}, []),
}


@pytest.mark.parametrize("table", [*TABLES, "sid_codes"])
def test_item_3_every_column_of_every_table_is_checked(table):
    """General, not two fields: every column's type has a check, which takes a value Arrow
    stores and refuses one it cannot (or would change)."""
    schema = SID_CODES if table == "sid_codes" else TABLES[table].schema
    assert len(schema) > 0
    for field in schema:
        kind = next(k for k in SAMPLES if k(field.type))  # no column of a type left unchecked
        fits, misfit = SAMPLES[kind]
        assert value_problem(fits, field.type) is None, field.name
        assert value_problem(misfit, field.type), field.name
        assert value_problem(object(), field.type), field.name
        pa.array([fits], type=field.type)  # and Arrow agrees that the fitting one fits
