"""The Spark engine: tasks as partitions of an RDD, one task per partition.

The driver parallelizes small task descriptions; each Python worker runs its task (reading
its input and writing its typed staging through the storage layer, so the same code works
with or without Hadoop's S3 connector), loads the stages once per worker process, and
returns nothing. Spark reruns a failed task (``spark.task.maxFailures``); a rerun task sees
its attempt number (fault injection uses it) and overwrites its own staging files.
Commits go through delta-spark when the session has the Delta jars and SQL extension
(``commit_store``), otherwise delta-rs.
"""

from __future__ import annotations

import logging
import os
import sys

from pipelines.engines.base import TaskRunner, batched_items_per_task
from schemas.spark import SparkDeltaStore, delta_spark_ready
from schemas.store import DeltaStore
from transforms.errors import UsageError

logger = logging.getLogger(__name__)
# Storage settings that executors need to reach the same object store as the driver. Keys
# are forwarded only when the driver has them in its environment (prefer instance roles on a
# real cluster); Spark redacts them in its UI and logs (spark.redaction.regex below).
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_CONDITIONAL_PUT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
REDACTION = r"(?i)secret|password|token|access[._]key"


def spark_session(engine_args: list[str]):
    """A Spark session: the given master (else spark-submit's, else local[2]) and
    ``key=value`` confs."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("enrich").config("spark.ui.enabled", "false")
    builder = builder.config("spark.redaction.regex", REDACTION)
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    # Under spark-submit the JVM gateway exists already and the master is its own.
    master = None if os.environ.get("PYSPARK_GATEWAY_PORT") else "local[2]"
    for arg in engine_args:
        key, _, value = arg.lstrip("-").partition("=")
        if not value:
            raise UsageError(f"--engine-arg {arg!r}: Spark takes master=URL or key=value confs")
        if key == "master":
            master = value
        else:
            builder = builder.config(key, value)
    return (builder.master(master) if master else builder).getOrCreate()


def task_attempt() -> int:
    from pyspark import TaskContext

    return TaskContext.get().attemptNumber()


class SparkEngine:
    name = "spark"
    commits_as_tasks_finish = False

    def __init__(self, engine_args: list[str]):
        self.session = spark_session(engine_args)

    def slots(self) -> int:
        return max(1, self.session.sparkContext.defaultParallelism)

    def items_per_task(self, config) -> int:
        return batched_items_per_task(config)

    def run(self, func, job, tasks, on_done=None) -> None:
        if not tasks:
            return
        context = self.session.sparkContext
        context.setJobDescription(f"enrich: {len(tasks)} tasks of {func.__name__}")
        context.parallelize(tasks, len(tasks)).foreach(TaskRunner(func, job, task_attempt))

    def commit_store(self, lake: str) -> DeltaStore:
        """delta-spark when the session has the Delta jars and SQL extension, else delta-rs.
        Logged at start."""
        ready, why = delta_spark_ready(self.session)
        logger.info("spark: %s: commits go through %s", why, "delta-spark" if ready else "delta-rs")
        return SparkDeltaStore(lake, self.session) if ready else DeltaStore(lake)
