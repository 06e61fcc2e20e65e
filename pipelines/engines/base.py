"""What the engine modules share: the ``Engine`` protocol, the task function type, the task
sizing of parallel engines and the resources a wave's tasks ask for. Engine modules import
this, never the package (whose ``make_engine`` imports them).

Every engine runs a wave the same way: each task on some worker, with that worker's
``pipelines.worker.Worker`` (made once per worker and closed by the engine); the driver then
reconciles the wave's markers and commits (``pipelines.driver``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.config import Config
from pipelines.staging import TaskMarker
from pipelines.worker import Worker
from schemas.store import DeltaStore
from transforms.pipeline import stage_classes
from transforms.stage import Stage

TaskFunction = Callable[[Any, Any, int, Worker], TaskMarker]


class Engine(Protocol):
    name: str

    def parallel_tasks(self) -> int:
        """How many tasks run at once (tasks are planned in whole waves of it)."""

    def items_per_task(self, config: Any) -> int:
        """Input items one task takes."""

    def run(self, func: TaskFunction, job: Any, tasks: list[Any]) -> None:
        """Run ``func(job, task, attempt, worker)`` for every task; raise if any task failed."""

    def commit_store(self, lake: str) -> DeltaStore:
        """The store the driver commits staged files through."""

    def close(self) -> None:
        """Close the workers this engine keeps in the driver's process (if any)."""


def batched_items_per_task(config: Any) -> int:
    """Items per task for engines that run tasks in parallel: ``run.items_per_task``, else
    ``run.batches_per_task`` batches of the largest stage batch, so every stage sees full
    batches and the waves stay short."""
    largest = max(config.describe.batch_size, config.media.batch_size)
    return config.run.items_per_task or largest * config.run.batches_per_task


@dataclass(frozen=True)
class WaveResources:
    """What each task of a wave asks its engine for (``wave_resources``)."""

    gpu_stages: tuple[str, ...] = ()  # stages that run a model on a GPU inside the task
    gpus: float = 0.0  # GPUs per task (run.gpus_per_task); 0: the tasks run on CPUs only
    accelerator: str | None = None  # Beam's accelerator hint (run.gpu_accelerator)
    min_ram_gb: float | None = None  # Beam's min_ram hint (run.min_ram_gb)


def runs_model_on_gpu(stage: type[Stage], section: Any) -> bool:
    """Whether a stage loads a GPU model in the task's own process: its class declares
    ``resources = "gpu"`` (a client of a served model declares "cpu"), and its settings
    (``section``) enable it and do not pin it to the CPU."""
    return (
        stage.resources == "gpu"
        and getattr(section, "enabled", True)
        and getattr(section, "device", "auto") != "cpu"
    )


def wave_resources(job: Any) -> WaveResources:
    """The resources of a wave's tasks, from the stages' declared resources: a job that runs
    the stages (the enrich wave carries their config) asks ``run.gpus_per_task`` GPUs when one
    of them runs its model on a GPU in the task; the Semantic ID waves and a pipeline whose
    only GPU model is served elsewhere run on CPUs. No stage is built to answer."""
    config_json = getattr(job, "config_json", None)
    if config_json is None:
        return WaveResources()
    config = Config.model_validate_json(config_json)
    on_gpu = tuple(
        cls.name
        for cls in stage_classes(config)
        if runs_model_on_gpu(cls, getattr(config, cls.name))
    )
    return WaveResources(
        gpu_stages=on_gpu,
        gpus=config.run.gpus_per_task if on_gpu else 0.0,
        accelerator=config.run.gpu_accelerator if on_gpu else None,
        min_ram_gb=config.run.min_ram_gb,
    )
