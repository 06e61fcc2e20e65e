"""The Spark engine: the same stages inside ``mapInPandas``, one Stage set per Python worker.

The manifest becomes a DataFrame, repartitioned so each task gets about ``batch_size × k``
items. Each Python worker builds the stages lazily from the config JSON (no model in a
closure or a broadcast) and reuses them across batches and tasks. Results are written as
Parquet envelopes that the driver commits with the one commit step (pipelines.commit): its
MERGEs run on delta-spark when the session has the Delta jars and SQL extension
(``commit_store``), otherwise on delta-rs. Semantic IDs are coded by a mapInPandas with the
pinned codebook and deduplicated by a group-by on codes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from pipelines.commit import STAGE_STATS, envelopes, staged_envelope
from pipelines.sids import SidJob
from schemas.spark import SparkDeltaStore, delta_spark_ready
from schemas.store import DeltaStore
from schemas.tables import LINEAGE_COLUMNS
from transforms.config import Config
from transforms.stage import Record, stats_delta

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

        _log_to_executor_stderr()

        _WORKER_STAGES[config_json] = build_stages(Config.model_validate_json(config_json))
    return _WORKER_STAGES[config_json]


def partition_fn(config_json: str, run_id: str):
    """The function mapInPandas runs: stages over each pandas batch, envelopes out, and last
    one envelope of what the stages did in this task. Staged with the rows, the stats count
    only task attempts whose output Spark committed (an accumulator would count retries)."""

    def enrich_batches(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd
        from pyspark import TaskContext

        task = TaskContext.get()
        stages = worker_stages(config_json)
        for stage in stages:
            stage.task_attempt = task.attemptNumber()
        before = {stage.name: stage.stats.as_dict() for stage in stages}
        for frame in frames:
            records = [_record(row) for row in frame.to_dict("records")]
            for stage in stages:
                for start in range(0, len(records), stage.batch_size):
                    stage.process_batch(records[start : start + stage.batch_size])
            yield pd.DataFrame(envelopes(records, run_id), columns=["table", "item_id", "payload"])
        task_stats = {s.name: stats_delta(s.stats.as_dict(), before[s.name]) for s in stages}
        task_key = f"task-{task.partitionId()}-{task.attemptNumber()}"
        envelope = staged_envelope(STAGE_STATS, {"item_id": task_key, **task_stats})
        yield pd.DataFrame([envelope], columns=["table", "item_id", "payload"])

    return enrich_batches


def _log_to_executor_stderr() -> None:
    """Python workers start with no logging set up; show the stages' progress lines (items/s
    every 30 s) in the executor's stderr log."""
    stage_logger = logging.getLogger("transforms")
    if not stage_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        stage_logger.addHandler(handler)
        stage_logger.setLevel(logging.INFO)


def task_count(items: int, per_task: int, slots: int) -> int:
    """About ``per_task`` items a task, rounded up to whole waves of ``slots`` tasks so the
    last wave does not leave cores idle (never more tasks than items)."""
    tasks = max(1, -(-items // per_task))
    return max(1, min(items, -(-tasks // slots) * slots))


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


def commit_store(lake: str, engine_args: list[str]) -> DeltaStore:
    """Where the run commits: delta-spark when the session has the Delta jars and SQL
    extension, otherwise Parquet staging committed by delta-rs. Logged at start."""
    spark = spark_session(engine_args)
    ready, why = delta_spark_ready(spark)
    logger.info("spark: %s: commits go through %s", why, "delta-spark" if ready else "delta-rs")
    return SparkDeltaStore(lake, spark) if ready else DeltaStore(lake)


def process_spark(
    config: Config, records: list[Record], staging: str, run_id: str, engine_args: list[str]
) -> None:
    """Run the stages on Spark, leaving Parquet envelopes under ``staging``, each task's stage
    stats among them (``commit_staged`` sums them)."""
    spark = spark_session(engine_args)
    rows = [tuple(r.get(k) for k in INPUT_FIELDS) for r in records]
    frame = spark.createDataFrame(rows, schema=INPUT_DDL)
    per_task = max(config.describe.batch_size, config.media.batch_size) * ITEMS_PER_TASK_FACTOR
    partitions = task_count(len(records), per_task, spark.sparkContext.defaultParallelism)
    enriched = frame.repartition(partitions).mapInPandas(
        partition_fn(config.model_dump_json(), run_id), schema=ENVELOPE_DDL
    )
    enriched.write.mode("overwrite").parquet(f"{staging}/spark")


# -- Semantic IDs: a distributed map with the pinned codebook, then a global group-by on codes --

SID_ITEM_DDL = "item_id string, embedding array<float>, " + ", ".join(
    f"{c} string" for c in LINEAGE_COLUMNS
)
CODED_DDL = SID_ITEM_DDL.replace("embedding array<float>", "codes array<int>")


def code_partition(job: SidJob):
    """mapInPandas: embeddings → codes, with the codebook loaded once per Python worker."""

    def code(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from pipelines.sids import code_items

        codebook = job.codebook()
        for frame in frames:
            coded = code_items(codebook, frame.to_dict("records"))
            yield pd.DataFrame([{**i, "codes": list(i["codes"])} for i in coded])

    return code


def dedup_codes_group(job: SidJob):
    """applyInPandas: one codes group (joined with what items held) → SID row envelopes."""

    def dedup(frame: Any) -> Any:
        import pandas as pd

        from pipelines.sids import group_sid_rows
        from transforms.semantic_ids.dedup import dedup_entry

        group = []
        for row in frame.to_dict("records"):
            coded = row["codes"] is not None
            held = None if pd.isna(row["held_dedup"]) else (row["held_codes"], row["held_dedup"])
            _, entry = dedup_entry(row["item_id"], row["codes"] if coded else None, held)
            item = {k: row[k] for k in ("item_id", "codes", *LINEAGE_COLUMNS)} if coded else None
            group.append((item, entry))
        rows = group_sid_rows(job.codebook(), group, job.run_id, job.hash_buckets)
        return pd.DataFrame(
            [staged_envelope("semantic_ids", r) for r in rows],
            columns=["table", "item_id", "payload"],
        )

    return dedup


def assign_sids_spark(
    items: list[dict], held_files: list[str], job: SidJob, staging: str, engine_args: list[str]
) -> None:
    """Stage ``semantic_ids`` envelopes for ``items`` (item_id, embedding, lineage) under
    ``staging``; ``held_files`` are the Parquet files of the current semantic_ids table."""
    from pyspark.sql import functions as F

    spark = spark_session(engine_args)
    rows = [
        (i["item_id"], [float(x) for x in i["embedding"]], *(i.get(c) for c in LINEAGE_COLUMNS))
        for i in items
    ]
    coded = spark.createDataFrame(rows, schema=SID_ITEM_DDL).mapInPandas(
        code_partition(job), schema=CODED_DDL
    )
    held_ddl = "item_id string, held_codes array<int>, held_dedup int"
    if held_files:
        held = (
            spark.read.parquet(*held_files)
            .where(F.col("codebook_version") == job.version)
            .select(
                "item_id", F.col("codes").alias("held_codes"), F.col("dedup").alias("held_dedup")
            )
        )
    else:
        held = spark.createDataFrame([], schema=held_ddl)
    joined = coded.join(held, "item_id", "full_outer")
    (
        joined.groupBy(F.coalesce("codes", "held_codes").alias("group_codes"))
        .applyInPandas(dedup_codes_group(job), schema=ENVELOPE_DDL)
        .write.mode("overwrite")
        .parquet(f"{staging}/sids")
    )
