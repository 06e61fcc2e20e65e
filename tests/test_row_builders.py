"""schemas/ owns every row: one builder per table checked against its Arrow schema, every
errors row through ``error_row`` (a documented code only), no module outside schemas/ that
builds a row by hand, and no column named in a string literal by the run's driver, tasks or
commit."""

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import ERROR_CODES, checked_code
from pipelines.commit import RunSummary
from pipelines.missing import handle_missing_inputs
from schemas import rows
from schemas.rows import RowShapeError, checked_row, description_row, error_row
from schemas.store import DeltaStore
from schemas.tables import SID_CODES, TABLES
from transforms.manifest import TaskInput
from transforms.stage import mark_error

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 3, tzinfo=UTC)
STAMPS = frozenset({"run_id", "updated_at"})
TABLE_COLUMNS = {name: frozenset(spec.schema.names) for name, spec in TABLES.items()}
ALL_COLUMNS = frozenset().union(*TABLE_COLUMNS.values(), SID_CODES.names)
SCANNED = ("core", "transforms", "evaluation", "pipelines", "jobs", "dags")
# Dicts that look like rows and are not: each with the reason.
NOT_ROWS = {
    "jobs/validate.py": "the verdict JSON validate --json writes for schedulers; no table",
}
# Literals in driver/tasks/commit that name a column but mean something else, with the reason.
NOT_COLUMNS = {
    ("pipelines/commit.py", "items"): "a stage's item count in the stream report "
    "(pipelines.stream.StageLoad.as_dict), summed across tasks; not runs.items",
}


def dict_keys(node: ast.AST) -> tuple[set[str], bool] | None:
    """The string keys of a dict literal or ``dict(...)`` call, and whether it spreads
    another mapping in (``**row``); None for any other node."""
    if isinstance(node, ast.Dict):
        keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
        return {k for k in keys if isinstance(k, str)}, None in node.keys
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {k.arg for k in node.keywords if k.arg}, any(k.arg is None for k in node.keywords)
    return None


def hand_built_rows(source: str) -> list[str]:
    """Dicts in ``source`` that build a table row: stamped with ``run_id`` or ``updated_at``
    and carrying 3 or more columns of one table, or stamping a mapping spread into it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        shape = dict_keys(node)
        if shape is None or not shape[0] & STAMPS:
            continue
        keys, spreads = shape
        tables = [name for name, columns in TABLE_COLUMNS.items() if len(keys & columns) >= 3]
        if tables or spreads:
            found.append((node.lineno, "/".join(tables) or "a stamped mapping"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def column_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal in ``source`` that names a table column."""
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if node.value in ALL_COLUMNS
    )


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


# -- (a) every errors row carries a documented code -------------------------------------------
def test_rows_of_vanished_inputs_carry_a_documented_code(tmp_path):
    folder = tmp_path / "videos"
    store = DeltaStore(tmp_path / "lake")
    kept = {"item_id": "a.mp4", "uri": f"{folder}/a.mp4"}
    gone = {"item_id": "b.mp4", "uri": f"{folder}/b.mp4"}
    store.merge("descriptions", [description_row(r, "r1", NOW) for r in (kept, gone)])
    task = TaskInput("t0", str(folder), "media", 0, 1, names=(kept["uri"],))
    summary = RunSummary("r2", "local", str(folder), NOW)

    handle_missing_inputs(store, [task], summary, "report")

    errors = store.read("errors").to_pylist()
    assert [(r["item_id"], r["code"]) for r in errors] == [("b.mp4", "missing_input")]
    assert summary.missing_input == 1
    assert errors[0]["code"] in ERROR_CODES and checked_code(errors[0]["code"])


def test_error_row_refuses_a_code_that_is_not_documented():
    record = {"item_id": "a", "error": {"stage": "input", "code": "gone_away", "message": "m"}}
    with pytest.raises(ValueError, match="unknown error code 'gone_away'"):
        error_row(record, "r1", NOW)


# -- (b) no module outside schemas/ builds a row by hand ---------------------------------------
def test_the_scanner_finds_rows_built_by_hand():
    source = """
rows = [{"item_id": i, "stage": "input", "code": c, "run_id": run_id} for i, c in pairs]
stamped = {**codebook.to_row(), "run_id": run_id, "updated_at": now}
made = dict(release_id=label, note=note, validation_id=v, updated_at=now)
not_a_row = {"item_id": i, "run_id": run_id}
plain = {"item_id": i, "uri": u, "title": t}
"""
    assert hand_built_rows(source) == [
        "line 2: errors",
        "line 3: a stamped mapping",
        "line 4: releases",
    ]


def test_no_module_outside_schemas_builds_a_table_row_by_hand():
    files = python_files(*SCANNED)
    assert len(files) > 50
    found = {
        str(path.relative_to(ROOT)): rows_found
        for path in files
        if (rows_found := hand_built_rows(path.read_text()))
    }
    assert set(NOT_ROWS) <= set(found), "an exception that no longer applies: drop it"
    assert {path: where for path, where in found.items() if path not in NOT_ROWS} == {}


# -- (c) the run's driver, tasks and commit name no column ------------------------------------
def test_the_literal_scan_finds_a_column_name():
    assert column_literals('x = row["item_id"]; y = "run_id"; z = "not a column"') == [
        (1, "item_id"),
        (1, "run_id"),
    ]


@pytest.mark.parametrize(
    "path", ["pipelines/driver.py", "pipelines/tasks.py", "pipelines/commit.py"]
)
def test_the_run_modules_name_no_table_column_in_a_string(path):
    found = column_literals((ROOT / path).read_text())
    allowed = {text for (where, text) in NOT_COLUMNS if where == path}
    assert [(line, text) for line, text in found if text not in allowed] == []
    assert allowed <= {text for _, text in found}, "an exception that no longer applies"


# -- (d) builders refuse a row that does not match its table ----------------------------------
def test_a_row_missing_a_required_column_is_refused_naming_it():
    row = error_row(mark_error({"item_id": "a"}, "media", "not_found", "m"), "r1", NOW)
    del row["run_id"]
    with pytest.raises(RowShapeError, match=r"'errors' row .*missing: run_id"):
        checked_row("errors", row)


def test_a_null_required_column_is_refused():
    with pytest.raises(RowShapeError, match=r"null: item_id"):
        error_row(mark_error({"item_id": None}, "media", "not_found", "m"), "r1", NOW)


def test_a_row_with_an_unknown_key_is_refused_naming_it():
    with pytest.raises(RowShapeError, match=r"'codebooks' row .*unknown: bogus"):
        rows.codebook_row({"bogus": 1}, now=NOW, run_id="r1")
    with pytest.raises(RowShapeError, match=r"'sid_crosswalk' row .*unknown: sid\b"):
        rows.crosswalk_row({"sid": "1-2"}, run_id="r1", now=NOW)


def test_field_lists_come_from_the_schemas():
    assert set(rows.DESCRIPTION_FIELDS) >= {"audio_events", "describe_frames", "item_id"}
    assert "run_id" not in rows.DESCRIPTION_FIELDS and "encoder" not in rows.DESCRIPTION_FIELDS
    assert rows.EMBEDDING_FIELDS == ("item_id", "embedding", "encoded_text_sha")
    assert rows.ERROR_FIELDS == ("item_id", "uri", "content_sha256", "pipeline_fingerprint")


def test_a_description_row_has_every_column_of_its_table():
    row = description_row({"item_id": "a"}, "r1", NOW)
    assert list(row) == TABLES["descriptions"].schema.names
    assert (row["item_id"], row["run_id"], row["updated_at"], row["title"]) == (
        "a",
        "r1",
        NOW,
        None,
    )
