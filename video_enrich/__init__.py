"""The public face of video-enrich: the consumer read API and the ``enrich`` entry point.

    from video_enrich import read_table, read_pandas, read_spark, release_versions
    read_table("lake", "semantic_ids", version=3)

The project's own packages keep the design card's folders (``core``, ``transforms``,
``schemas``, ``evaluation``, ``pipelines``, ``jobs``) and are installed as top-level names,
which another distribution on a shared Airflow or Spark worker may also use (``core`` and
``jobs`` are common). Import from ``video_enrich`` and those names stay internal; importing it
checks that each of them is this install's, and fails with the culprit named if one is not.
Nothing heavy is imported until a name is used (DAG files import this at parse time).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

INTERNAL_PACKAGES = ("core", "transforms", "schemas", "evaluation", "pipelines", "jobs")
# Public name → the internal module that defines it.
API = {
    "read_table": "schemas.store",
    "read_pandas": "schemas.store",
    "DeltaStore": "schemas.store",
    "BadTableRequest": "schemas.store",  # a read asked wrongly (a ValueError)
    "LakeError": "schemas.store",  # a table that cannot be read or written
    "read_spark": "schemas.spark",
    "spark_schema": "schemas.spark",
    "TABLES": "schemas.tables",
    "SCHEMA_VERSION": "schemas.tables",
    "release_versions": "schemas.releases",
    "load_config": "core.config",
    "Config": "core.config",
}
__all__ = [*API, "backfill_app", "check_install", "InstallClash"]


class InstallClash(ImportError):
    """A top-level package video-enrich installs comes from somewhere else."""


def check_install() -> None:
    """Raise InstallClash unless every internal package lives beside this one (the same
    site-packages or checkout): a same-named package of another distribution would
    otherwise be imported in its place, or be replaced by ours, without a word."""
    home = Path(__file__).resolve().parent.parent
    for name in INTERNAL_PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin is None or origin.parent.parent != home:
            raise InstallClash(
                f"the package '{name}' imported here is {origin or 'missing'}, not "
                f"video-enrich's (under {home}): another distribution on this worker installs "
                f"a top-level '{name}'; give video-enrich its own virtualenv (or PYSPARK_PYTHON)"
            )


def backfill_app() -> str:
    """The path of this install's Spark backfill job, for spark-submit."""
    return str(Path(__file__).resolve().parent.parent / "jobs" / "backfill.py")


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'video_enrich' has no attribute {name!r}")
    return getattr(importlib.import_module(API[name]), name)


check_install()
