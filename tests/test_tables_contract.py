"""The tables as a contract: idempotent MERGE with history, time travel, concurrent writers,
and reads by independent clients (polars, Spark)."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.cli import main
from schemas import DeltaStore, read_pandas, read_table
from schemas.upsert import KEYED_COMMIT, history_metrics
from tests.infra import local_spark

ROOT = Path(__file__).resolve().parents[1]


def description_rows(run_id, prompt_version, ids):
    now = datetime.now(UTC)
    return [
        {
            "item_id": i,
            "description": f"{prompt_version} text for {i}",
            "run_id": run_id,
            "prompt_version": prompt_version,
            "updated_at": now,
        }
        for i in ids
    ]


def test_same_input_twice_gives_same_rows_and_two_versions(lake, capsys):
    store = DeltaStore(lake)
    rows = description_rows("r1", "v1", ["a", "b", "c"])
    store.merge("descriptions", rows)
    store.merge("descriptions", rows)
    history = store.table("descriptions").history()
    assert [history_metrics(h)[0] for h in history] == ["UPSERT", "WRITE"]
    assert history[0][KEYED_COMMIT]["rows_updated"] == 3  # the rerun replaced, not added
    assert (
        read_table(lake, "descriptions", version=0).num_rows
        == read_table(lake, "descriptions").num_rows
        == 3
    )
    assert main(["inspect", "--lake", str(lake), "--table", "descriptions", "--history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "UPSERT" in lines[1] and "WRITE" in lines[2] and lines[1].split()[-1] == "3"


def test_time_travel_gives_the_descriptions_before_a_new_prompt(lake):
    store = DeltaStore(lake)
    store.merge("descriptions", description_rows("r1", "v1", ["a", "b"]))
    before = datetime.now(UTC)
    store.merge("descriptions", description_rows("r2", "v2", ["a", "b"]))
    assert set(read_table(lake, "descriptions")["prompt_version"].to_pylist()) == {"v2"}
    assert set(read_table(lake, "descriptions", version=0)["prompt_version"].to_pylist()) == {"v1"}
    old = read_pandas(lake, "descriptions", as_of=before)
    assert set(old["prompt_version"]) == {"v1"} and len(old) == 2


WRITER = """
import sys
from datetime import UTC, datetime
from schemas import DeltaStore
lake, start = sys.argv[1], int(sys.argv[2])
store = DeltaStore(lake)
for round_ in range(4):
    now = datetime.now(UTC)
    store.merge("errors", [{"item_id": f"item{i:04d}", "code": f"w{start}r{round_}", "run_id": "r",
                            "updated_at": now} for i in range(start, start + 200)])
"""


def test_two_processes_merging_overlapping_items_lose_nothing(lake):
    DeltaStore(lake).merge(
        "errors", [{"item_id": "seed", "run_id": "r", "updated_at": datetime.now(UTC)}]
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(lake), str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for start in (0, 100)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    ids = read_table(lake, "errors")["item_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 301  # item0000..item0299 plus the seed row


def test_polars_reads_the_same_rows(lake):
    polars = pytest.importorskip("polars")
    store = DeltaStore(lake)
    store.merge("descriptions", description_rows("r1", "v1", ["a", "b", "c"]))
    store.merge("descriptions", description_rows("r2", "v2", ["b", "d"]))
    frame = polars.read_delta(str(lake / "descriptions"))
    assert sorted(frame["item_id"].to_list()) == ["a", "b", "c", "d"]
    assert dict(zip(frame["item_id"], frame["prompt_version"], strict=True))["b"] == "v2"
    assert polars.read_delta(str(lake / "descriptions"), version=0).height == 3


@pytest.mark.slow
def test_spark_reads_versions_without_removed_files(lake):
    from schemas import read_spark

    store = DeltaStore(lake)
    store.merge("descriptions", description_rows("r1", "v1", ["a", "b", "c"]))
    store.merge("descriptions", description_rows("r2", "v2", ["a"]))
    store.delete_keys("descriptions", ["c"])
    with local_spark("contract") as spark:
        latest = {
            r.item_id: r.prompt_version for r in read_spark(spark, lake, "descriptions").collect()
        }
        assert latest == {"a": "v2", "b": "v1"}
        assert read_spark(spark, lake, "descriptions", version=0).count() == 3
        assert read_spark(spark, lake, "descriptions", columns=["item_id"]).columns == ["item_id"]


def test_embeddings_read_back_as_fixed_size_float32(lake):
    import numpy as np

    now = datetime.now(UTC)
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    DeltaStore(lake).merge(
        "embeddings",
        [
            {
                "item_id": f"i{k}",
                "embedding": v.tolist(),
                "dim": 8,
                "run_id": "r",
                "updated_at": now,
            }
            for k, v in enumerate(vectors)
        ],
    )
    column = read_table(lake, "embeddings").column("embedding")
    assert str(column.type) == "fixed_size_list<item: float>[8]"
    assert np.allclose(column.combine_chunks().values.to_numpy().reshape(3, 8), vectors)


def test_as_of_before_the_first_commit_reads_no_rows(lake):
    """delta-rs loads version 0 for any earlier time; a point-in-time join on a day before the
    first run must get no features, not ones written later."""
    before = datetime.now(UTC)
    store = DeltaStore(lake)
    store.merge("descriptions", description_rows("r1", "v1", ["a", "b"]))
    assert read_table(lake, "descriptions", as_of=before).num_rows == 0
    assert read_table(lake, "descriptions", as_of=datetime.now(UTC)).num_rows == 2
    columns = ["item_id", "prompt_version"]
    assert read_table(lake, "descriptions", as_of=before, columns=columns).column_names == columns
