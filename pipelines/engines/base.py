"""What the engine modules share: the ``Engine`` protocol, the task function type, the
picklable task runner and the task sizing of parallel engines. Engine modules import this,
never the package (whose ``make_engine`` imports them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from schemas.store import DeltaStore

TaskFunction = Callable[[Any, Any, int], dict[str, Any]]


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
