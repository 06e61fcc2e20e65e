"""What the engine modules share: the ``Engine`` protocol, the task function type, the
picklable task runner, the task sizing of parallel engines and the resources a wave's tasks
ask for. Engine modules import this,
never the package (whose ``make_engine`` imports them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.staging import TaskMarker
from schemas.store import DeltaStore

TaskFunction = Callable[[Any, Any, int], TaskMarker]


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
        on_done: Callable[[TaskMarker], None] | None = None,
    ) -> None:
        """Run ``func(job, task, attempt)`` for every task; raise if any task failed."""

    def commit_store(self, lake: str) -> DeltaStore:
        """The store the driver commits staged files through."""


def batched_items_per_task(config: Any) -> int:
    """Items per task for engines that run tasks in parallel: ``run.items_per_task``, else
    ``run.batches_per_task`` batches of the largest stage batch, so every stage sees full
    batches and the waves stay short."""
    largest = max(config.describe.batch_size, config.media.batch_size)
    return config.run.items_per_task or largest * config.run.batches_per_task


class TaskRunner:
    """A picklable ``task → marker`` callable for engines that map over tasks."""

    def __init__(self, func: TaskFunction, job: Any, attempt: Callable[[], int] | None = None):
        self.func, self.job, self.attempt = func, job, attempt

    def __call__(self, task: Any) -> TaskMarker:
        return self.func(self.job, task, self.attempt() if self.attempt else 0)


@dataclass(frozen=True)
class WaveResources:
    """What each task of a wave asks its engine for (``wave_resources``)."""

    gpu_stages: tuple[str, ...] = ()  # stages that run a model on a GPU inside the task
    gpus: float = 0.0  # GPUs per task (run.gpus_per_task); 0: the tasks run on CPUs only
    accelerator: str | None = None  # Beam's accelerator hint (run.gpu_accelerator)
    min_ram_gb: float | None = None  # Beam's min_ram hint (run.min_ram_gb)


def runs_model_on_gpu(stage: Any) -> bool:
    """Whether ``stage`` loads a GPU model in the task's own process: it declares
    ``resources = "gpu"`` (a client of a served model declares "cpu"), is enabled and is not
    pinned to the CPU."""
    config = stage.config
    return (
        stage.resources == "gpu"
        and getattr(config, "enabled", True)
        and getattr(config, "device", "auto") != "cpu"
    )


def wave_resources(job: Any) -> WaveResources:
    """The resources of a wave's tasks, from the configured stages: a job that runs the stages
    (the enrich wave carries their config) asks ``run.gpus_per_task`` GPUs when one of them
    runs its model on a GPU in the task; the Semantic ID waves and a pipeline whose only
    GPU model is served elsewhere run on CPUs."""
    config_json = getattr(job, "config_json", None)
    if config_json is None:
        return WaveResources()
    from core.config import Config
    from transforms.pipeline import build_stages

    config = Config.model_validate_json(config_json)
    on_gpu = tuple(stage.name for stage in build_stages(config) if runs_model_on_gpu(stage))
    return WaveResources(
        gpu_stages=on_gpu,
        gpus=config.run.gpus_per_task if on_gpu else 0.0,
        accelerator=config.run.gpu_accelerator if on_gpu else None,
        min_ram_gb=config.run.min_ram_gb,
    )
