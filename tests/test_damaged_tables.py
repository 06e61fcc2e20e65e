"""Issue 43 item 7: a table whose ``_delta_log`` references a data file that is gone stops a
run before anything is written (no ``runs`` row, no staging, no commit), with a message that
names the table and the files and points to restoring them or ``enrich maintain --repair``.
A commit that meets such a file fails the same way; the run summary never crashes on one
after the run's outcome is recorded; and ``maintain --repair`` makes the table usable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main, print_summary
from pipelines.commit import RunSummary
from schemas.store import DamagedTable, DeltaStore, read_table
from schemas.tables import DESCRIPTIONS, EMBEDDINGS, ERRORS, RUNS, SEMANTIC_IDS
from tests.cli_helpers import run_argv
from tests.test_maintain import typed
from tests.test_run_ids_and_paths import snapshot

NOW = datetime.now(UTC)
SCHEMAS = {
    "descriptions": DESCRIPTIONS,
    "embeddings": EMBEDDINGS,
    "errors": ERRORS,
    "semantic_ids": SEMANTIC_IDS,
    "runs": RUNS,
}


def rows(name: str, ids: list[str]) -> pa.Table:
    schema = SCHEMAS[name]
    key = "run_id" if name == "runs" else "item_id"
    columns = {
        key: pa.array(ids),
        "updated_at": pa.array([NOW] * len(ids), schema.field("updated_at").type),
    }
    if "run_id" in schema.names and key != "run_id":
        columns["run_id"] = pa.array(["20261101T000000Z-1a2b3c4d"] * len(ids))
    if name == "embeddings":
        columns["embedding"] = pa.array([np.ones(4, np.float32)] * len(ids), pa.list_(pa.float32()))
    if name == "runs":
        columns["status"] = pa.array(["succeeded"] * len(ids))
    return typed(schema, len(ids), **columns)


@pytest.fixture
def two_commit_lake(tmp_path) -> Path:
    """Every table above, written in two commits (two data files each)."""
    lake = tmp_path / "lake"
    store = DeltaStore(lake)
    for name in SCHEMAS:
        store.merge(name, rows(name, ["a", "b"]))
        store.merge(name, rows(name, ["c"]))
    return lake


def delete_first_file(lake: Path, name: str) -> str:
    """Delete the data file that holds item (or run) 'a' and 'b'; its name."""
    files = DeltaStore(lake).table(name).file_uris()
    [victim] = [uri for uri in files if pq.read_metadata(uri).num_rows == 2]
    Path(victim).unlink()
    return Path(victim).name


@pytest.mark.parametrize("name", SCHEMAS, ids=[f"item7-{n}" for n in SCHEMAS])
def test_a_run_on_a_damaged_table_stops_before_any_write(name, two_commit_lake, tmp_path, capsys):
    gone = delete_first_file(two_commit_lake, name)
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"item_id": "new", "title": "t", "text": "x"}\n')
    before = snapshot(tmp_path)

    assert main(run_argv(manifest, two_commit_lake, extra=("--no-report",))) == 1
    captured = capsys.readouterr()
    assert snapshot(tmp_path) == before  # no runs row, no staging, no reserve, no commit
    err = captured.err
    assert f"table '{name}' under {two_commit_lake} is damaged" in err and gone in err
    assert "enrich maintain --lake" in err and "--repair" in err and "Restore" in err
    assert len(err.splitlines()) <= 2 and "Traceback" not in err  # the line, and the -v hint
    assert "succeeded" not in captured.out


def test_a_commit_that_meets_a_missing_file_names_the_damage(two_commit_lake):
    delete_first_file(two_commit_lake, "descriptions")
    store = DeltaStore(two_commit_lake)
    version = store.version("descriptions")
    with pytest.raises(DamagedTable, match="'descriptions' .* is damaged"):
        store.merge("descriptions", rows("descriptions", ["a"]))  # 'a' lives in the lost file
    assert store.version("descriptions") == version  # nothing committed


def test_the_summary_of_a_recorded_run_never_crashes_on_a_damaged_table(two_commit_lake, capsys):
    delete_first_file(two_commit_lake, "descriptions")
    delete_first_file(two_commit_lake, "errors")
    summary = RunSummary("20261101T000000Z-1a2b3c4d", "local", "in", NOW, status="succeeded")
    print_summary(summary, str(two_commit_lake), 1.0)
    out = capsys.readouterr().out
    assert "descriptions could not be read for this summary" in out
    assert "errors could not be read for this summary" in out


def test_maintain_stops_on_the_damage_and_repair_drops_the_lost_files(two_commit_lake, capsys):
    gone = delete_first_file(two_commit_lake, "embeddings")
    assert main(["maintain", "--lake", str(two_commit_lake)]) == 1
    err = capsys.readouterr().err
    assert "'embeddings'" in err and gone in err and "--repair" in err

    before = snapshot(two_commit_lake)
    assert main(["maintain", "--lake", str(two_commit_lake), "--repair", "--dry-run"]) == 0
    assert "repair: would drop 1 missing data file(s)" in capsys.readouterr().out
    assert snapshot(two_commit_lake) == before

    assert main(["maintain", "--lake", str(two_commit_lake), "--repair"]) == 0
    assert "repair: dropped 1 missing data file(s)" in capsys.readouterr().out
    DeltaStore(two_commit_lake).require_intact()
    assert read_table(two_commit_lake, "embeddings").column("item_id").to_pylist() == ["c"]
