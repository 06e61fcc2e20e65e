from datetime import UTC, datetime

import pytest

from schemas import TABLES, DeltaStore, read_table
from schemas.rows import table_rows
from schemas.store import SchemaMismatch
from transforms.stage import mark_error


def error_rows(run_id, codes):
    now = datetime.now(UTC)
    return [
        {
            "item_id": item,
            "stage": "media",
            "code": code,
            "message": "m",
            "run_id": run_id,
            "updated_at": now,
        }
        for item, code in codes.items()
    ]


def test_merge_is_idempotent_and_advances_the_version(lake):
    store = DeltaStore(lake)
    assert store.merge("errors", error_rows("r1", {"a": "x", "b": "y"})) == 0
    assert store.merge("errors", error_rows("r2", {"a": "z", "b": "y"})) == 1
    table = store.read("errors")
    assert table.num_rows == 2
    assert dict(zip(table["item_id"].to_pylist(), table["code"].to_pylist(), strict=True)) == {
        "a": "z",
        "b": "y",
    }
    assert store.read("errors", version=0)["code"].to_pylist().count("x") == 1


def test_duplicate_keys_in_one_batch_keep_the_last(lake):
    store = DeltaStore(lake)
    rows = error_rows("r1", {"a": "x"}) + error_rows("r1", {"a": "y"})
    store.merge("errors", rows)
    assert store.read("errors")["code"].to_pylist() == ["y"]


def test_tables_use_the_portable_protocol(lake):
    store = DeltaStore(lake)
    store.merge("errors", error_rows("r1", {"a": "x"}))
    protocol = store.table("errors").protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert not protocol.reader_features and not protocol.writer_features
    assert "schema_version=1" in store.table("errors").metadata().description


def test_delete_keys_and_time_travel(lake):
    store = DeltaStore(lake)
    store.merge("errors", error_rows("r1", {"a": "x", "b": "y"}))
    store.delete_keys("errors", ["a", "not-there"])
    assert read_table(lake, "errors")["item_id"].to_pylist() == ["b"]
    assert read_table(lake, "errors", version=0).num_rows == 2


def test_unknown_table_is_refused(lake):
    with pytest.raises(ValueError, match="unknown table"):
        DeltaStore(lake).merge("nope", [])


def test_every_table_has_a_key_run_id_and_updated_at():
    for spec in TABLES.values():
        assert spec.key in spec.schema.names
        assert {"run_id", "updated_at"} <= set(spec.schema.names)


def test_new_columns_are_added_and_old_rows_read_them_as_null(lake):
    import pyarrow as pa
    from deltalake import write_deltalake

    now = datetime.now(UTC)
    old = pa.table(
        {
            "item_id": ["a"],
            "uri": ["u"],
            "run_id": ["r0"],
            "updated_at": pa.array([now], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(lake / "errors"), old)  # an older, narrower errors table
    store = DeltaStore(lake)
    store.merge("errors", error_rows("r1", {"b": "x"}))
    rows = {r["item_id"]: r for r in store.read("errors").to_pylist()}
    assert rows["a"]["code"] is None and rows["b"]["code"] == "x"
    protocol = store.table("errors").protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)


def test_a_type_change_fails_clearly(lake):
    import pyarrow as pa
    from deltalake import write_deltalake

    from schemas.store import SchemaMismatch

    now = datetime.now(UTC)
    old = pa.table(
        {
            "item_id": ["a"],
            "code": pa.array([7], pa.int64()),
            "run_id": ["r0"],
            "updated_at": pa.array([now], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(lake / "errors"), old)  # 'code' was an integer here
    with pytest.raises(SchemaMismatch, match=r"code: table has PrimitiveType\(\"long\"\)"):
        DeltaStore(lake).merge("errors", error_rows("r1", {"b": "x"}))
    assert DeltaStore(lake).read("errors").num_rows == 1  # nothing was written


def test_a_row_with_a_key_its_table_lacks_is_refused_naming_the_key(lake):
    store = DeltaStore(lake)
    with pytest.raises(SchemaMismatch, match="carry bogus, which it has no column"):
        store.merge("errors", [{**error_rows("r1", {"a": "x"})[0], "bogus": 1}])
    assert not store.exists("errors")


def test_row_builders_fill_only_columns_their_tables_have():
    good = {"item_id": "a", "embedding": [0.0, 1.0], "pipeline_fingerprint": "p"}
    bad = {"item_id": "b", "pipeline_fingerprint": "p"}
    mark_error(bad, "media", "not_found", "gone")
    rows = table_rows([good, bad], "r1")
    for name, built in rows.items():
        assert built and set(built[0]) <= set(TABLES[name].schema.names), name
    assert rows["errors"][0]["pipeline_fingerprint"] == "p"  # reaches its column now
