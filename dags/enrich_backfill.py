"""enrich_backfill: re-enrich a range of days, one spark-submit per day (manual trigger).

plan_days → backfill_day (mapped: one SparkSubmitOperator per day) → assign_sids

Trigger it with params ``start`` and ``end`` (YYYY-MM-DD, inclusive) and optionally
``force`` (reprocess unchanged items too). Each day runs jobs/backfill.py --partitions DAY,
which MERGEs into the lake and skips unchanged items, so rerunning a range (or retrying one
day) is safe. It passes ``--require-describer``: the config (Variable ``enrich_config``) must
name a describer, or each day fails (exit 2) rather than run the offline demo describer.
Days run one at a time unless ``ENRICH_BACKFILL_PARALLEL_DAYS`` says otherwise.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, task
from enrich_common import (
    BACKFILL_PARALLEL_DAYS,
    CLI,
    CONFIG,
    DEFAULT_ARGS,
    FILTERS,
    LAKE,
    MACROS,
    REQUIRE_DESCRIBER,
    SPARK_CONN_ID,
    setting,
    spark_env,
)

MAX_DAYS = 366


def days_between(start: str, end: str) -> list[str]:
    """Every day from ``start`` to ``end`` inclusive (at most MAX_DAYS)."""
    first, last = date.fromisoformat(start), date.fromisoformat(end or start)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"{count} days asked; split backfills longer than {MAX_DAYS} days")
    return [(first + timedelta(days=i)).isoformat() for i in range(count)]


@task
def plan_days(params: dict | None = None) -> list[list[str]]:
    """The backfill job's arguments for each day of the range."""
    params = params or {}
    common = ["--manifests", setting("manifests"), "--lake", setting("lake")]
    common += ["--config", setting("config")] + (["--force"] if params.get("force") else [])
    common.append(REQUIRE_DESCRIBER)  # the config must name the describer: never the demo one
    return [[*common, "--partitions", day] for day in days_between(params["start"], params["end"])]


with DAG(
    dag_id="enrich_backfill",
    description="Backfill a date range of manifest partitions with spark-submit, day by day",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(days=3),
    default_args=DEFAULT_ARGS,
    params={
        "start": Param(type="string", format="date", description="first day, YYYY-MM-DD"),
        "end": Param(type="string", format="date", description="last day (inclusive)"),
        "force": Param(False, type="boolean", description="reprocess unchanged items too"),
    },
    user_defined_macros=MACROS,
    user_defined_filters=FILTERS,
    tags=["video-enrich"],
) as dag:
    backfill_day = SparkSubmitOperator.partial(
        task_id="backfill_day",
        conn_id=SPARK_CONN_ID,
        application="{{ backfill_app() }}",
        name="enrich-backfill",
        properties_file="{{ setting('spark_properties_file') }}",
        env_vars=spark_env(),
        execution_timeout=timedelta(hours=6),
        max_active_tis_per_dagrun=BACKFILL_PARALLEL_DAYS,
    ).expand(application_args=plan_days())
    assign_sids = BashOperator(
        task_id="assign_sids", bash_command=f"{CLI} assign-sids {LAKE} {CONFIG}"
    )
    backfill_day >> assign_sids
