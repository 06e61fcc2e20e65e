"""enrich_daily: enrich the day's manifest partition, gate it, and publish it.

wait_for_partition → run_pipeline → assign_sids → validate → publish → maintain

- wait_for_partition: FileSensor on ``<manifests>/dt=<day>/<manifest_name>`` (reschedule mode).
- run_pipeline: the engine is ``ENRICH_DAILY_ENGINE`` (parse time): ``spark`` (default) runs
  jobs/backfill.py for the day through SparkSubmitOperator on connection ``spark_default``;
  ``local`` runs ``enrich run`` in a BashOperator; ``beam`` runs ``enrich run --engine beam``
  with the Variable ``enrich_beam_options`` (e.g. Dataflow runner options). It passes
  ``--require-describer``: unless the config (Variable ``enrich_config``) names a describer,
  the task fails (exit 2) instead of running the offline demo describer.
- assign_sids: codes any embedded item the run left without a SID from the current codebook.
- validate: ``enrich validate`` (error rate, row counts, SID coverage and unique fraction);
  it fails the DAG run, never retried, and publish does not happen. It records the table
  versions it checked (``validations`` table).
- publish: ``enrich publish`` records those validated versions as release ``<day>``.
- maintain: ``enrich maintain`` compacts the day's small files, VACUUMs with the Variable
  ``enrich_retention_hours`` (the release just published stays readable), checkpoints the logs
  and deletes staging no run needs.

The day is the run's logical date, or the ``partition`` param of a manual run. Every step is
idempotent (MERGE by key), so a rerun of a day is safe.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG, Param
from enrich_common import (
    CLI,
    CONFIG,
    DAILY_ENGINE,
    DEFAULT_ARGS,
    FILTERS,
    FS_CONN_ID,
    LAKE,
    MACROS,
    REQUIRE_DESCRIBER,
    SPARK_CONN_ID,
    spark_env,
)

DAY_EXPR = "(params.partition or ds)"
DAY = "{{ " + DAY_EXPR + " }}"
MANIFEST_EXPR = f"setting('manifests') ~ '/dt=' ~ {DAY_EXPR} ~ '/' ~ setting('manifest_name')"
MANIFEST = "{{ " + MANIFEST_EXPR + " }}"
ENGINES = ("spark", "local", "beam")


def run_pipeline_task():
    """The operator that enriches the partition, per ``ENRICH_DAILY_ENGINE``."""
    timeout = timedelta(hours=6)
    if DAILY_ENGINE == "spark":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        return SparkSubmitOperator(
            task_id="run_pipeline",
            conn_id=SPARK_CONN_ID,
            application="{{ backfill_app() }}",
            application_args=[
                "--manifests",
                "{{ setting('manifests') }}",
                "--lake",
                "{{ setting('lake') }}",
                "--config",
                "{{ setting('config') }}",
                "--partitions",
                DAY,
                REQUIRE_DESCRIBER,
            ],
            name="enrich-daily-" + DAY,
            properties_file="{{ setting('spark_properties_file') }}",
            env_vars=spark_env(),
            execution_timeout=timeout,
        )
    if DAILY_ENGINE not in ENGINES:
        raise ValueError(f"ENRICH_DAILY_ENGINE={DAILY_ENGINE!r}: choose one of {ENGINES}")
    engine_args = (
        " {% for o in setting('beam_options').split() %}--engine-arg={{ o | sh }} {% endfor %}"
        if DAILY_ENGINE == "beam"
        else ""
    )
    return BashOperator(
        task_id="run_pipeline",
        bash_command=f"{CLI} run --input {{{{ ({MANIFEST_EXPR}) | sh }}}} {LAKE} {CONFIG} "
        f"--engine {DAILY_ENGINE} {REQUIRE_DESCRIBER}{engine_args}",
        execution_timeout=timeout,
    )


with DAG(
    dag_id="enrich_daily",
    description="Enrich the day's new videos into the Delta lake, validate, publish",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args=DEFAULT_ARGS,
    params={
        "partition": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="day to process (YYYY-MM-DD); empty = the run's logical date",
        )
    },
    user_defined_macros=MACROS,
    user_defined_filters=FILTERS,
    tags=["video-enrich"],
) as dag:
    wait_for_partition = FileSensor(
        task_id="wait_for_partition",
        fs_conn_id=FS_CONN_ID,
        filepath=MANIFEST,
        poke_interval=300,
        timeout=int(timedelta(hours=6).total_seconds()),
        mode="reschedule",
    )
    run_pipeline = run_pipeline_task()
    assign_sids = BashOperator(
        task_id="assign_sids", bash_command=f"{CLI} assign-sids {LAKE} {CONFIG}"
    )
    validate = BashOperator(
        task_id="validate",
        retries=0,  # a failed check is a finding, not a flake
        bash_command=f"{CLI} validate {LAKE} --for-input dt={DAY}"
        " --max-error-rate {{ setting('max_error_rate') }}"
        " --min-rows {{ setting('min_rows') }}"
        " --min-unique-fraction {{ setting('min_unique_fraction') }}",
    )
    publish = BashOperator(
        task_id="publish",
        bash_command=f"{CLI} publish {LAKE} --label {DAY} --for-input dt={DAY}"
        " --note 'enrich_daily {{ run_id }}'",
    )
    maintain = BashOperator(
        task_id="maintain",
        bash_command=f"{CLI} maintain {LAKE}"
        " --retention-hours {{ setting('retention_hours') }}",
    )
    wait_for_partition >> run_pipeline >> assign_sids >> validate >> publish >> maintain
