"""The test infrastructure gives what it claims: isolated Spark workers and a real S3 server."""

from __future__ import annotations

import operator
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.cluster  # started once per session; run by `make test-cluster`


@pytest.mark.slow
def test_spark_workers_are_separate_machines(spark_cluster):
    """Two tasks land on two executors in two workers, each with its own /tmp: neither sees
    the driver's /tmp nor the other's, and the driver does not see theirs. A shuffle between
    the two executors works with the cluster's confs."""
    token = uuid.uuid4().hex
    driver_file = Path(f"/tmp/infra-probe-driver-{token}")
    marker_dir = f"/tmp/infra-probe-{token}"
    driver_file.write_text("driver only")

    def probe(index, _rows):
        os.makedirs(marker_dir, exist_ok=True)
        Path(marker_dir, str(index)).write_text("executor")
        yield {
            "index": index,
            "sees_driver_file": os.path.exists(driver_file),
            "markers": sorted(os.listdir(marker_dir)),
            "namespace": os.readlink("/proc/self/ns/mnt"),
            "executor_dir": os.getcwd(),  # <work-dir>/<app id>/<executor id>
        }

    spark = spark_cluster.session("infra-probe")
    try:
        rows = spark.sparkContext.parallelize(range(2), 2).mapPartitionsWithIndex(probe).collect()
        pairs = spark.sparkContext.parallelize(range(100), 2).map(lambda x: (x % 4, 1))
        counts = dict(pairs.reduceByKey(operator.add, 2).collect())
    finally:
        spark.stop()
        driver_file.unlink()
    assert counts == {0: 25, 1: 25, 2: 25, 3: 25}
    assert sorted(r["index"] for r in rows) == [0, 1]
    assert [r["sees_driver_file"] for r in rows] == [False, False]
    assert [r["markers"] for r in sorted(rows, key=lambda r: r["index"])] == [["0"], ["1"]]
    assert not Path(marker_dir).exists()
    namespaces = {r["namespace"] for r in rows}
    assert namespaces == set(spark_cluster.worker_namespaces)
    assert os.readlink("/proc/self/ns/mnt") not in namespaces
    executor_dirs = {r["executor_dir"] for r in rows}
    assert len(executor_dirs) == 2
    assert all(d.startswith("/tmp/spark-work/app-") for d in executor_dirs)


@pytest.mark.slow
def test_s3_server_round_trips_parquet_and_delta_merge(moto_s3):
    """Parquet through pyarrow.fs (configured from the environment alone) and a Delta MERGE
    through delta-rs, both landing as objects on the server."""
    from deltalake import DeltaTable, write_deltalake

    prefix = f"infra-{uuid.uuid4().hex}"
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})

    fs, path = pafs.FileSystem.from_uri(moto_s3.uri(prefix, "data.parquet"))
    assert isinstance(fs, pafs.S3FileSystem)
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=moto_s3.filesystem()).equals(table)
    assert moto_s3.keys(prefix) == [f"{prefix}/data.parquet"]

    uri = moto_s3.uri(prefix, "delta")
    write_deltalake(uri, table, storage_options=moto_s3.storage_options)
    update = pa.table({"id": [3, 4], "name": ["C", "d"]})
    metrics = (
        DeltaTable(uri, storage_options=moto_s3.storage_options)
        .merge(update, "t.id = s.id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    assert (metrics["num_target_rows_updated"], metrics["num_target_rows_inserted"]) == (1, 1)
    merged = DeltaTable(uri, storage_options=moto_s3.storage_options)
    assert merged.version() == 1
    # Read the active files with pyarrow: deltalake's to_pyarrow_table can abort at exit.
    paths = [u.removeprefix("s3://") for u in merged.file_uris()]
    rows = ds.dataset(paths, format="parquet", filesystem=fs).to_table().to_pylist()
    assert sorted(rows, key=lambda row: row["id"]) == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 3, "name": "C"},
        {"id": 4, "name": "d"},
    ]
    assert f"{prefix}/delta/_delta_log/00000000000000000001.json" in moto_s3.keys(prefix)
