"""The Beam engine: tasks as elements, FnApiRunner locally, any runner by options.

``Create(tasks) → Reshuffle → Map(run task)``: each element is one task (an input task or
a bucket of codes); it reads its own input and writes its own staging through the storage
layer, so the pipeline carries only task descriptions, never items. Stages and models load
once per DoFn instance, which Beam keeps for the worker's life (``RunTask.setup``).
``--direct_num_workers=N --direct_running_mode=multi_processing`` runs N worker processes;
Dataflow and Flink options pass through unchanged. A wave whose stages run a model on a GPU
in the task carries resource hints (``task_step``): ``run.gpu_accelerator`` and
``run.min_ram_gb``; runners that do not support them (FnApiRunner) ignore them.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipelines.engines.base import WaveResources, batched_items_per_task, wave_resources
from pipelines.worker import Worker
from schemas.store import DeltaStore

logger = logging.getLogger(__name__)


def pipeline_options(engine_args: list[str]) -> PipelineOptions:
    """FnApiRunner unless the caller names a runner (DataflowRunner, FlinkRunner, ...)."""
    args = list(engine_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)


def resource_hints(needs: WaveResources) -> dict[str, str]:
    """Beam resource hints for a wave: the accelerator only when a stage runs its model on a
    GPU in the task (a served describer needs none), min_ram whenever it is set."""
    hints = {}
    if needs.gpus and needs.accelerator:
        hints["accelerator"] = needs.accelerator
    if needs.min_ram_gb:
        hints["min_ram"] = f"{needs.min_ram_gb:g}GB"
    return hints


class RunTask(beam.DoFn):
    """Runs each task with the ``Worker`` this DoFn instance keeps: made in ``setup``, which
    Beam calls once per instance, and closed in ``teardown``."""

    def __init__(self, func, job):
        self.func, self.job = func, job
        self.worker: Worker | None = None

    def setup(self) -> None:
        self.worker = Worker()

    def process(self, task):
        yield self.func(self.job, task, 0, self.worker)

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()


def task_step(func, job) -> beam.PTransform:
    """The step that runs each task, with the wave's resource hints."""
    step = beam.ParDo(RunTask(func, job))
    hints = resource_hints(wave_resources(job))
    return step.with_resource_hints(**hints) if hints else step


class BeamEngine:
    name = "beam"

    def __init__(self, engine_args: list[str]):
        self.options = pipeline_options(engine_args)

    def parallel_tasks(self) -> int:
        return max(1, self.options.view_as(DirectOptions).direct_num_workers or 1)

    def items_per_task(self, config) -> int:
        return batched_items_per_task(config)

    def run(self, func, job, tasks) -> None:
        logger.info(
            "beam: %d tasks, options %s",
            len(tasks),
            self.options.get_all_options(drop_default=True),
        )
        with beam.Pipeline(options=self.options) as pipeline:
            (
                pipeline
                | "Tasks" >> beam.Create(tasks)
                | "Spread" >> beam.Reshuffle()
                | "Run" >> task_step(func, job)
            )

    def commit_store(self, lake: str) -> DeltaStore:
        return DeltaStore(lake)

    def close(self) -> None:
        """Nothing: Beam tears its DoFns (and their workers) down."""
