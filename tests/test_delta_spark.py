"""The Spark engine's commit path: delta-spark when the session has the Delta jars and SQL
extension, delta-rs otherwise. The jars come from Maven, which this machine cannot reach, so
the delta-spark run needs DELTA_SPARK_JARS (comma-separated jar paths) and skips without it."""

import logging
import os

import pytest
from deltalake import DeltaTable

from jobs.cli import main
from pipelines.engines.spark import SparkEngine, spark_session
from schemas import DeltaStore, read_table
from schemas.spark import SparkDeltaStore, delta_spark_ready

pytestmark = pytest.mark.slow
DELTA_JARS = os.environ.get("DELTA_SPARK_JARS", "")
DELTA_CONF = [
    f"spark.jars={DELTA_JARS}",
    "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
]


@pytest.mark.skipif(bool(DELTA_JARS), reason="this session has the Delta jars")
def test_without_the_jars_commits_go_through_delta_rs(tmp_path, caplog):
    ready, why = delta_spark_ready(spark_session([]))
    assert not ready and "no Delta jars" in why
    with caplog.at_level(logging.INFO, logger="pipelines.engines.spark"):
        store = SparkEngine([]).commit_store(str(tmp_path))
    assert type(store) is DeltaStore
    assert "commits go through delta-rs" in caplog.text


@pytest.mark.skipif(
    not DELTA_JARS,
    reason="Delta jars (io.delta:delta-spark_2.13:4.4.1 and delta-storage) cannot be fetched "
    "offline; set DELTA_SPARK_JARS=/path/delta-spark.jar,/path/delta-storage.jar to run",
)
def test_with_the_jars_the_spark_engine_merges_through_delta_spark(demo_corpus, tmp_path):
    lake = tmp_path / "lake"
    argv = [
        "run",
        "--input",
        str(demo_corpus / "manifest.jsonl"),
        "--lake",
        str(lake),
        "--config",
        "configs/demo.yaml",
        "--engine",
        "spark",
        "--set",
        "describe.max_new_tokens=16",
        *(f"--engine-arg={conf}" for conf in DELTA_CONF),
    ]
    assert isinstance(SparkEngine(DELTA_CONF).commit_store(str(lake)), SparkDeltaStore)
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0  # the tables exist now: MERGE runs on delta-spark
    for name in ("descriptions", "embeddings", "semantic_ids", "errors"):
        table = DeltaTable(str(lake / name))
        assert table.history(1)[0].get("engineInfo", "").startswith("Apache-Spark"), name
        protocol = table.protocol()
        assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2), name
    assert read_table(lake, "descriptions").num_rows == 6
    assert read_table(lake, "errors").num_rows == 2
    assert DeltaStore(lake).read("runs").num_rows == 2
