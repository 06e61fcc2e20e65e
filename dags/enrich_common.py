"""Settings shared by the video-enrich DAGs (enrich_daily, enrich_backfill, sid_refit).

Run-time settings are Airflow Variables named ``enrich_<name>``; ``DEFAULTS`` documents each
default. They are read when a task renders its templates (``{{ setting('lake') }}``), never at
parse time. The few settings that shape a DAG are environment variables read at parse time.
This module imports nothing heavy: no pyspark, torch, transformers or pipeline code.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import timedelta

# Airflow Variables ``enrich_<name>`` and their defaults.
DEFAULTS: dict[str, str] = {
    "lake": "/data/enrich/lake",  # Delta lake: a directory or object-store URI
    "manifests": "/data/enrich/manifests",  # root of dt=YYYY-MM-DD manifest partitions
    "manifest_name": "manifest.jsonl",  # the file the daily sensor waits for in a partition
    # YAML config for every job; "" = the documented defaults, with which the run tasks stop
    # (exit 2): a DAG enriches only with a describer that the config names (describe.backend,
    # describe.model), never the offline demo one by default
    "config": "",
    "cli": "enrich",  # the enrich executable on the worker (a venv path or a wrapper)
    "backfill_app": "",  # jobs/backfill.py for spark-submit; "" = the installed package's
    "pyspark_python": "",  # Python of the Spark driver and executors; "" = the worker's
    "spark_properties_file": "",  # spark-submit --properties-file; "" = none
    "beam_options": "--runner=FnApiRunner",  # daily engine beam: Beam pipeline options
    "max_error_rate": "0.1",  # validate: failed / (succeeded + failed)
    "min_rows": "1",  # validate: items of the day with rows
    "min_unique_fraction": "0.05",  # validate: SID codes unique before dedup
    "retention_hours": "168",  # maintain: VACUUM retention (under 168 is refused)
}

# Parse-time settings (environment variables of the DAG processor and workers).
DAILY_ENGINE = os.environ.get("ENRICH_DAILY_ENGINE", "spark")  # spark | local | beam
SPARK_CONN_ID = os.environ.get("ENRICH_SPARK_CONN_ID", "spark_default")
FS_CONN_ID = os.environ.get("ENRICH_FS_CONN_ID", "fs_default")
RETRIES = int(os.environ.get("ENRICH_TASK_RETRIES", "2"))
BACKFILL_PARALLEL_DAYS = int(os.environ.get("ENRICH_BACKFILL_PARALLEL_DAYS", "1"))

DEFAULT_ARGS = {
    "owner": "video-enrich",
    "retries": RETRIES,
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=2),
}


def setting(name: str) -> str:
    """Variable ``enrich_<name>``, else its documented default (call at run time only)."""
    from airflow.sdk import Variable

    if name not in DEFAULTS:
        raise KeyError(f"unknown enrich setting {name!r}; known: {sorted(DEFAULTS)}")
    return Variable.get(f"enrich_{name}", default=DEFAULTS[name])


def backfill_app() -> str:
    """The spark-submit application: the Variable, else jobs/backfill.py of this install.
    Found through ``video_enrich``, which checks that the worker's ``jobs`` package is ours
    (another distribution's top-level ``jobs`` would otherwise be submitted)."""
    configured = setting("backfill_app")
    if configured:
        return configured
    try:
        from video_enrich import backfill_app as installed_backfill_app
    except ImportError as exc:  # not installed, or InstallClash naming the culprit
        raise RuntimeError(f"{exc}; or set Variable enrich_backfill_app") from exc
    return installed_backfill_app()


def pyspark_python() -> str:
    return setting("pyspark_python") or sys.executable


def overrides(values: list[str] | None) -> str:
    """``--set`` arguments, shell-quoted, from a list of ``key=value`` strings."""
    return " ".join(f"--set {shlex.quote(str(v))}" for v in values or [])


def spark_env() -> dict[str, str]:
    """Environment for spark-submit (templated; Spark's Python must have video-enrich)."""
    return {
        "PYSPARK_PYTHON": "{{ pyspark_python() }}",
        "PYSPARK_DRIVER_PYTHON": "{{ pyspark_python() }}",
    }


MACROS = {
    "setting": setting,
    "backfill_app": backfill_app,
    "pyspark_python": pyspark_python,
    "overrides": overrides,
}
FILTERS = {"sh": shlex.quote}

# Templated command pieces every DAG uses.
CLI = "{{ setting('cli') }}"
LAKE = "--lake {{ setting('lake') | sh }}"
CONFIG = "--config {{ setting('config') | sh }}"
# Every task that enriches refuses the demo describer unless the config names a describer.
REQUIRE_DESCRIBER = "--require-describer"
