"""One small protocol for every engine: run these tasks, on workers, with this function.

A task function is ``func(job, task, attempt) -> marker`` from ``pipelines.tasks``: it reads
its own input, writes typed staging on the lake's storage and a completion marker. An engine
only decides where and how many run at once; it returns nothing the driver must hold (the
driver reads the markers). Batching, stage counters and retries of items live in the stages
and the tasks, once, for every engine. Adding an engine is one module here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from schemas.store import DeltaStore
from transforms.errors import UsageError

TaskFunction = Callable[[Any, Any, int], dict[str, Any]]
ENGINES = ("local", "beam", "spark")


class Engine(Protocol):
    name: str
    commits_as_tasks_finish: bool  # True: on_done sees each marker as its task ends

    def slots(self) -> int:
        """How many tasks run at once (tasks are planned in whole waves of it)."""

    def items_per_task(self, config: Any) -> int:
        """Input items one task takes."""

    def run(
        self,
        func: TaskFunction,
        job: Any,
        tasks: list[Any],
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Run ``func(job, task, attempt)`` for every task; raise if any task failed."""

    def commit_store(self, lake: str) -> DeltaStore:
        """The store the driver commits staged files through."""


def make_engine(name: str, engine_args: list[str] | None = None, progress: str = "off") -> Engine:
    """The engine called ``name`` (local, beam or spark), configured by ``engine_args``."""
    if name not in ENGINES:
        raise UsageError(f"--engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "beam":
        from pipelines.engines.beam import BeamEngine

        return BeamEngine(engine_args or [])
    if name == "spark":
        from pipelines.engines.spark import SparkEngine

        return SparkEngine(engine_args or [])
    from pipelines.engines.local import LocalEngine

    return LocalEngine(engine_args or [], progress)


ITEMS_PER_TASK_FACTOR = 4


def batched_items_per_task(config: Any) -> int:
    """Items per task for engines that run tasks in parallel: a few batches of the largest
    stage batch, so every stage sees full batches and the waves stay short."""
    return max(config.describe.batch_size, config.media.batch_size) * ITEMS_PER_TASK_FACTOR


class TaskRunner:
    """A picklable ``task → marker`` callable for engines that map over tasks."""

    def __init__(self, func: TaskFunction, job: Any, attempt: Callable[[], int] | None = None):
        self.func, self.job, self.attempt = func, job, attempt

    def __call__(self, task: Any) -> dict[str, Any]:
        return self.func(self.job, task, self.attempt() if self.attempt else 0)
