"""One small protocol for every engine: run these tasks, on workers, with this function.

A task function is ``func(job, task, attempt) -> marker`` from ``pipelines.tasks``: it reads
its own input, writes typed staging on the lake's storage and a completion marker. An engine
only decides where and how many run at once; it returns nothing the driver must hold (the
driver reads the markers). Batching, stage counters and retries of items live in the stages
and the tasks, once, for every engine. Adding an engine is one module here.
"""

from __future__ import annotations

from core.errors import UsageError
from pipelines.engines.base import Engine

ENGINES = ("local", "beam", "spark")


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


__all__ = ["ENGINES", "Engine", "make_engine"]
