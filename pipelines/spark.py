"""The Spark engine: the same stages inside ``mapInPandas``, one Stage set per Python worker.

The manifest becomes a DataFrame, repartitioned so each task gets about ``batch_size × k``
items. Each Python worker builds the stages lazily from the config JSON (no model in a
closure or a broadcast) and reuses them across batches and tasks. Results are written as
Parquet envelopes that the driver MERGEs with delta-rs; with the Delta jars on the classpath
the same staging path is used (logged), so the commit logic exists once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from pipelines.commit import envelopes
from transforms.config import Config
from transforms.stage import Record

logger = logging.getLogger(__name__)
ITEMS_PER_TASK_FACTOR = 4
ENVELOPE_DDL = "table string, item_id string, payload binary"
INPUT_FIELDS = (
    "item_id",
    "uri",
    "title",
    "tags",
    "published_at",
    "content_sha256",
    "pipeline_fingerprint",
)
INPUT_DDL = (
    "item_id string, uri string, title string, tags array<string>, published_at string, "
    "content_sha256 string, pipeline_fingerprint string"
)
_WORKER_STAGES: dict[str, list] = {}  # per Python worker process, keyed by the config JSON


def worker_stages(config_json: str) -> list:
    """The stages for this worker, built once (models load on first use)."""
    if config_json not in _WORKER_STAGES:
        from transforms.pipeline import build_stages

        _WORKER_STAGES[config_json] = build_stages(Config.model_validate_json(config_json))
    return _WORKER_STAGES[config_json]


def partition_fn(config_json: str, run_id: str):
    """The function mapInPandas runs: stages over each pandas batch, envelopes out."""

    def enrich_batches(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        stages = worker_stages(config_json)
        for frame in frames:
            records = [_record(row) for row in frame.to_dict("records")]
            for stage in stages:
                for start in range(0, len(records), stage.batch_size):
                    stage.process_batch(records[start : start + stage.batch_size])
            yield pd.DataFrame(envelopes(records, run_id), columns=["table", "item_id", "payload"])

    return enrich_batches


def _record(row: dict[str, Any]) -> Record:
    tags = row.get("tags")
    return {**row, "tags": list(tags) if tags is not None else []}


def spark_session(engine_args: list[str]):
    """A Spark session: the given master (default local[2]) and ``key=value`` confs."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("enrich").config("spark.ui.enabled", "false")
    master = "local[2]"
    for arg in engine_args:
        key, _, value = arg.lstrip("-").partition("=")
        if key == "master":
            master = value
        elif key:
            builder = builder.config(key, value)
    return builder.master(master).getOrCreate()


def has_delta_jars(spark) -> bool:
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:  # noqa: BLE001 - py4j raises a generic error for a missing class
        return False


def process_spark(
    config: Config, records: list[Record], staging: str, run_id: str, engine_args: list[str]
) -> None:
    """Run the stages on Spark, leaving Parquet envelopes under ``staging``."""
    spark = spark_session(engine_args)
    path = (
        "delta-spark jars found; committing through the delta-rs staging path"
        if has_delta_jars(spark)
        else "no Delta jars on the classpath: Parquet staging + delta-rs"
    )
    logger.info("spark: %s", path)
    rows = [tuple(r.get(k) for k in INPUT_FIELDS) for r in records]
    frame = spark.createDataFrame(rows, schema=INPUT_DDL)
    per_task = max(config.describe.batch_size, config.media.batch_size) * ITEMS_PER_TASK_FACTOR
    partitions = max(1, -(-len(records) // per_task))
    enriched = frame.repartition(partitions).mapInPandas(
        partition_fn(config.model_dump_json(), run_id), schema=ENVELOPE_DDL
    )
    enriched.write.mode("overwrite").parquet(f"{staging}/spark")
