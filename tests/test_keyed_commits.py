"""Keyed commits touch only the files that hold the keys (schemas/upsert.py): upserts,
deletes and keyed reads; a commit at a stale version fails and leaves no files behind; every
Delta reader sees the same rows."""

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from schemas import DeltaStore, read_table
from schemas.tables import TABLES
from schemas.upsert import KEYED_COMMIT, TableFiles, upsert

FILES = 5
ROWS_PER_FILE = 40


def error_rows(keys: list[str], code: str) -> list[dict]:
    now = datetime.now(UTC)
    return [{"item_id": k, "code": code, "run_id": "r", "updated_at": now} for k in keys]


def keys_of_file(index: int) -> list[str]:
    return [f"f{index}-{i:03d}" for i in range(ROWS_PER_FILE)]


@pytest.fixture
def five_files(lake) -> DeltaStore:
    """An errors table of five files with disjoint key ranges (one commit each)."""
    store = DeltaStore(lake)
    for index in range(FILES):
        store.merge("errors", error_rows(keys_of_file(index), "old"))
    assert len(store.table("errors").file_uris()) == FILES
    return store


def last_commit(store: DeltaStore) -> dict:
    return store.table("errors").history(1)[0][KEYED_COMMIT]


def codes(store: DeltaStore) -> dict[str, str]:
    table = store.read("errors", columns=["item_id", "code"])
    return dict(zip(table["item_id"].to_pylist(), table["code"].to_pylist(), strict=True))


def test_an_upsert_rewrites_only_the_file_holding_an_updated_key(five_files):
    store = five_files
    before = set(store.table("errors").file_uris())
    store.merge("errors", error_rows(["f2-007", "new-1", "new-2"], "new"))
    after = set(store.table("errors").file_uris())
    (removed,) = before - after  # one file left the table: the one holding f2's keys
    assert read_file_keys(removed) == keys_of_file(2)
    commit = last_commit(store)
    assert (commit["files_removed"], commit["rows_updated"], commit["rows_inserted"]) == (1, 1, 2)
    assert commit["rows_copied"] == ROWS_PER_FILE - 1
    assert commit["files_scanned"] == 1  # the other files' key ranges exclude every key
    rows = codes(store)
    assert len(rows) == FILES * ROWS_PER_FILE + 2
    assert rows["f2-007"] == rows["new-1"] == "new" and rows["f2-008"] == "old"


def test_a_delete_rewrites_only_the_holding_file_and_a_miss_commits_nothing(five_files):
    store = five_files
    version = store.version("errors")
    assert store.delete_keys("errors", ["absent-key"]) == version
    store.delete_keys("errors", ["f4-001", "f4-002"])
    commit = last_commit(store)
    assert (commit["files_removed"], commit["rows_deleted"]) == (1, 2)
    assert len(codes(store)) == FILES * ROWS_PER_FILE - 2
    assert store.read("errors", version=version).num_rows == FILES * ROWS_PER_FILE


def test_keyed_reads_open_only_files_whose_key_range_can_hold_the_key(five_files):
    store = five_files
    holder = [u for u in store.table("errors").file_uris() if "f1-" in str(read_file_keys(u))]
    others = [u for u in store.table("errors").file_uris() if u not in holder]
    for uri in others:  # a read that opened them would fail
        Path(uri).write_bytes(b"not parquet")
    found = store.read("errors", keys=["f1-003", "f1-999"], columns=["item_id", "code"])
    assert found.to_pylist() == [{"item_id": "f1-003", "code": "old"}]
    with pytest.raises(Exception):  # noqa: B017 - the whole-table read does open them
        store.read("errors")


def read_file_keys(uri: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(uri, columns=["item_id"]).column(0).to_pylist()


def test_a_commit_at_a_stale_version_fails_and_leaves_no_files(five_files):
    store = five_files
    stale = TableFiles(store.table("errors"), store.path("errors"), "item_id")
    store.merge("errors", error_rows(["f0-000"], "winner"))
    on_disk = set(Path(store.path("errors")).glob("*.parquet"))
    source = pa.Table.from_pylist(error_rows(["f0-000"], "loser"), schema=stale_schema(store))
    with pytest.raises(CommitFailedError):
        upsert(stale, ["f0-000"], source.to_batches())
    assert set(Path(store.path("errors")).glob("*.parquet")) == on_disk
    assert codes(store)["f0-000"] == "winner"


def stale_schema(store: DeltaStore) -> pa.Schema:
    return pa.schema(store.table("errors").schema().to_arrow())


def test_every_reader_sees_the_upserted_rows_and_the_file_statistics(five_files, lake):
    store = five_files
    store.merge("errors", error_rows(["f3-010", "n-1"], "new"))
    ours = read_table(lake, "errors").sort_by("item_id").select(["item_id", "code"])
    polars = pl.read_delta(str(lake / "errors")).sort("item_id").select(["item_id", "code"])
    assert polars.to_arrow().cast(ours.schema).equals(ours)
    actions = pa.table(DeltaTable(str(lake / "errors")).get_add_actions(flatten=True))
    for action in actions.to_pylist():  # the log's statistics are the files' own
        keys = read_file_keys(str(lake / "errors" / action["path"]))
        assert action["num_records"] == len(keys)
        assert (action["min.item_id"], action["max.item_id"]) == (min(keys), max(keys))
    assert sum(actions.column("num_records").to_pylist()) == ours.num_rows


def test_staged_files_merge_into_a_table_another_writer_created_after_our_check(
    lake, tmp_path, monkeypatch
):
    """Two first runs: both find no table, one creates it, the other's create fails and must
    upsert its staged files instead (a first run lost every row of this write before)."""
    store = DeltaStore(lake)
    store.merge("errors", error_rows(["a", "b"], "theirs"))
    staged = tmp_path / "staged.parquet"
    pq.write_table(
        pa.Table.from_pylist(error_rows(["b", "c"], "ours"), TABLES["errors"].schema), staged
    )
    real_exists, checked = DeltaStore.exists, []

    def exists_after_our_check(self, name):  # our check ran before the other writer's create
        checked.append(name)
        return len(checked) > 1 and real_exists(self, name)

    monkeypatch.setattr(DeltaStore, "exists", exists_after_our_check)
    store.merge_files("errors", [str(staged)])
    assert codes(store) == {"a": "theirs", "b": "ours", "c": "ours"}


def merge_at(lake: str, tag: str, start: float) -> int | None:
    while time.time() < start:  # both writers find no table, then create it together
        pass
    return DeltaStore(lake).merge("errors", error_rows([tag], tag))


def test_two_writers_creating_one_table_get_the_versions_they_committed(tmp_path):
    """delta-rs retries a lost create as an append at version 1; a writer told "0" would take
    itself for the table's first (two racing first runs both kept their own codebook)."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for attempt in range(8):
            lake = str(tmp_path / f"lake{attempt}")
            start = time.time() + 0.5
            versions = pool.starmap(merge_at, [(lake, "a", start), (lake, "b", start)])
            assert sorted(versions) == [0, 1], versions
            assert codes(DeltaStore(lake)) == {"a": "a", "b": "b"}


def test_float_vectors_are_written_plain_and_scalars_compressed_with_statistics(lake):
    """Embeddings never repeat and snappy does not shrink them: no dictionary, statistics or
    codec is spent on them; the key and other scalars keep all three."""
    store = DeltaStore(lake)
    now = datetime.now(UTC)
    rows = [
        {
            "item_id": f"i{k}",
            "embedding": [float(k), 0.5],
            "dim": 2,
            "run_id": "r",
            "updated_at": now,
        }
        for k in range(3)
    ]
    store.merge("embeddings", rows)
    store.merge("embeddings", [{**rows[0], "embedding": [9.0, 9.0]}])  # a keyed commit
    newest = max((lake / "embeddings").glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    group = pq.ParquetFile(newest).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    vector = columns["embedding.list.element"]
    assert (vector.compression, vector.statistics) == ("UNCOMPRESSED", None)
    assert "PLAIN_DICTIONARY" not in vector.encodings and "RLE_DICTIONARY" not in vector.encodings
    key = columns["item_id"]
    assert key.compression == "SNAPPY" and key.statistics.has_min_max


def test_a_column_a_table_version_lacks_reads_as_nulls(lake):
    """A table written before an additive column (here ``message``) reads it as nulls, by key
    and whole, so a reader of an old version needs no schema check of its own."""
    from deltalake import write_deltalake

    old = pa.table({"item_id": ["a", "b"], "code": ["x", "y"]})
    write_deltalake(str(lake / "errors"), old)
    store = DeltaStore(lake)
    for keys in (None, ["b"]):
        read = store.read("errors", columns=["item_id", "message", "code"], keys=keys)
        assert read.column_names == ["item_id", "message", "code"]
        assert read.schema.field("message").type == TABLES["errors"].schema.field("message").type
        assert set(read["message"].to_pylist()) == {None}
