"""The Spark engine: tasks as partitions of an RDD, one task per partition.

The driver parallelizes small task descriptions; each Python worker runs its task (reading
its input and writing its typed staging through the storage layer, so the same code works
with or without Hadoop's S3 connector) with its Python worker's ``Worker`` (stages load once
per worker process, ``executor_worker``), and returns where it ran. Spark reruns a failed
task (``spark.task.maxFailures``); a rerun task sees its attempt number (fault injection uses
it) and overwrites its own staging files.
Commits go through delta-spark when the session has the Delta jars and SQL extension
(``commit_store``), otherwise delta-rs.

GPUs: when a configured stage runs its model on a GPU inside the task (``wave_resources``) and
the executors have GPUs, that wave's tasks ask for ``run.gpus_per_task`` of them through
stage-level scheduling (``gpu_profile``); the other waves keep the default, CPU-only profile.
Each task shows its Python worker only the GPU Spark assigned it (``pin_gpus``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from typing import Any

from core.errors import UsageError
from pipelines.engines.base import WaveResources, batched_items_per_task, wave_resources
from pipelines.worker import Worker
from schemas.spark import SparkDeltaStore, delta_spark_ready
from schemas.store import DeltaStore

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


GPU = "gpu"  # the resource name of Spark's GPU discovery scripts and configs
VISIBLE_GPUS = "CUDA_VISIBLE_DEVICES"


def gpu_profile(conf: dict[str, str], needs: WaveResources) -> tuple[Any, str]:
    """A ResourceProfile whose tasks get ``needs.gpus`` GPUs each, or None, and why. Without
    dynamic allocation, executors started with GPUs (``spark.executor.resource.gpu.amount``)
    take a task-only profile (standalone, YARN, Kubernetes); with dynamic allocation and the
    executors' GPU discovery script, the wave gets GPU executors of its own, while executors
    of the default profile stay CPU-only."""
    stages = ", ".join(needs.gpu_stages)
    if conf.get("spark.master", "").startswith("local"):
        return None, (
            f"{stages} may use a GPU; a local master has no stage-level scheduling, so its "
            "tasks use whatever device the stages pick"
        )
    executor_gpus = conf.get(f"spark.executor.resource.{GPU}.amount")
    script = conf.get(f"spark.executor.resource.{GPU}.discoveryScript")
    dynamic = conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true"
    if not executor_gpus and not (dynamic and script):
        return None, (
            f"{stages} may use a GPU, but the executors have none: set "
            f"spark.executor.resource.{GPU}.amount (and its discoveryScript on YARN or "
            "Kubernetes) to give each task a GPU"
        )
    from pyspark.resource import (
        ExecutorResourceRequests,
        ResourceProfileBuilder,
        TaskResourceRequests,
    )

    task = TaskResourceRequests().cpus(int(conf.get("spark.task.cpus", "1")))
    builder = ResourceProfileBuilder().require(task.resource(GPU, needs.gpus))
    if dynamic:
        executor = ExecutorResourceRequests().resource(GPU, int(executor_gpus or 1), script or "")
        if cores := conf.get("spark.executor.cores"):
            executor = executor.cores(int(cores))
        builder = builder.require(executor)
    kind = "GPU executors of their own" if dynamic else "the executors' GPUs"
    return builder.build, f"{stages} run on GPUs: {needs.gpus:g} per task, on {kind}"


def assigned_gpus() -> list[str]:
    """The GPU addresses Spark assigned the running task (empty on a CPU-only profile)."""
    from pyspark import TaskContext

    found = TaskContext.get().resources().get(GPU)
    return list(found.addresses) if found is not None else []


# Spark has no per-worker setup hook (a task's function is unpickled for every task), so this
# Python worker's ``Worker`` lives in the one process-wide slot the engines keep; the test
# that scans for module-level worker state allows exactly this one.
_EXECUTOR_WORKER: dict[int, Worker] = {}


def executor_worker() -> Worker:
    """This Python worker's ``Worker``, made by its first task (keyed by process id: a forked
    worker makes its own)."""
    return _EXECUTOR_WORKER.setdefault(os.getpid(), Worker())


def pin_gpus(worker: Worker, addresses: list[str]) -> str | None:
    """Show this Python worker only the GPUs its task was assigned, before any stage loads a
    model, so the stages' ``cuda`` is that GPU; returns what the worker sees. A reused worker
    keeps its models on the GPUs of its first GPU task (CUDA cannot move them), so give each
    executor one GPU (``spark.executor.resource.gpu.amount=1``) to keep the two equal."""
    if addresses:
        wanted = ",".join(addresses)
        worker.gpus = worker.gpus or wanted
        if worker.gpus == wanted:
            os.environ[VISIBLE_GPUS] = wanted
        else:
            logger.warning(
                "task assigned GPU %s runs in a Python worker whose models are on GPU %s: give "
                "each executor one GPU (spark.executor.resource.gpu.amount=1)",
                wanted,
                worker.gpus,
            )
    return os.environ.get(VISIBLE_GPUS)


class SparkTask:
    """A task on an executor: pin its GPUs, run it with the Python worker's ``Worker``, and
    report where it ran (``placement``); the rows and the marker stay on the lake's storage."""

    def __init__(self, func, job):
        self.func, self.job, self.wave = func, job, func.__name__

    def __call__(self, task: Any) -> dict[str, Any]:
        worker = executor_worker()
        gpus = assigned_gpus()
        visible = pin_gpus(worker, gpus)
        started = time.time()
        self.func(self.job, task, task_attempt(), worker)
        return {
            "wave": self.wave,
            "task_id": getattr(task, "task_id", str(task)),
            "gpus": gpus,
            "visible_gpus": visible if gpus else None,
            "started": started,
            "ended": time.time(),
        }


class SparkEngine:
    name = "spark"

    def __init__(self, engine_args: list[str]):
        self.session = spark_session(engine_args)
        self.placements: list[dict[str, Any]] = []  # where the last wave's tasks ran

    def parallel_tasks(self) -> int:
        return max(1, self.session.sparkContext.defaultParallelism)

    def items_per_task(self, config) -> int:
        return batched_items_per_task(config)

    def run(self, func, job, tasks) -> None:
        if not tasks:
            return
        context = self.session.sparkContext
        context.setJobDescription(f"enrich: {len(tasks)} tasks of {func.__name__}")
        rdd = context.parallelize(tasks, len(tasks))
        needs = wave_resources(job)
        if needs.gpus:
            profile, why = gpu_profile(dict(context.getConf().getAll()), needs)
            logger.info("spark: %s: %s", func.__name__, why)
            rdd = rdd.withResources(profile) if profile is not None else rdd
        self.placements = rdd.map(SparkTask(func, job)).collect()
        if needs.gpus:
            by_gpu = Counter(",".join(p["gpus"]) or "none" for p in self.placements)
            logger.info("spark: %s: tasks by GPU address: %s", func.__name__, dict(by_gpu))
        logger.debug("spark placements of %s: %s", func.__name__, self.placements)

    def commit_store(self, lake: str) -> DeltaStore:
        """delta-spark when the session has the Delta jars and SQL extension, else delta-rs.
        Logged at start."""
        ready, why = delta_spark_ready(self.session)
        logger.info("spark: %s: commits go through %s", why, "delta-spark" if ready else "delta-rs")
        return SparkDeltaStore(lake, self.session) if ready else DeltaStore(lake)

    def close(self) -> None:
        """Nothing: each executor's Python workers end with their executor."""
