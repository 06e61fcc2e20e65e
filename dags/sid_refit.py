"""sid_refit: fit a candidate Semantic-ID codebook, promote it only if it is no worse.

fit_candidate → promote_if_no_worse → recode_items

- fit_candidate: ``enrich fit-sids`` records a new codebook version as a candidate (runs do not
  use it). The ``fit_set`` param adds ``--set`` overrides for this fit only, e.g.
  ``semantic_ids.fit_sample=50000`` or ``semantic_ids.seed=3``.
- promote_if_no_worse: ``enrich promote-sids --promote if-no-worse`` scores the candidate and the
  current codebook on the same embeddings (unique fraction before dedup, reconstruction MSE,
  code entropy) and promotes it only when it is no worse, with the configured settings. Either
  way the decision and its figures go into the candidate's ``codebooks`` row. A refusal marks
  the task skipped (exit 3), and recode_items is skipped with it. When the config sets
  ``evaluate.interactions``, a healthy candidate must also pass the evaluation gate: small
  recommenders trained on those interactions with its SID tokens may score no worse than with
  the current codebook's (``evaluate.gate_metric`` within ``evaluate.gate_tolerance``).
- recode_items: ``enrich assign-sids`` re-codes every item onto the newly promoted codebook.

Weekly by default; trigger it by hand for an ad-hoc refit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param
from enrich_common import CLI, CONFIG, DEFAULT_ARGS, FILTERS, LAKE, MACROS

REFUSED_EXIT = 3  # enrich promote-sids: the candidate was refused

with DAG(
    dag_id="sid_refit",
    description="Fit a candidate SID codebook and promote it only when it is no worse",
    doc_md=__doc__,
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args=DEFAULT_ARGS,
    params={
        "fit_set": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^semantic_ids\.[a-z_]+=.+$"},
            description="--set overrides for the candidate fit only",
        )
    },
    user_defined_macros=MACROS,
    user_defined_filters=FILTERS,
    tags=["video-enrich"],
) as dag:
    fit_candidate = BashOperator(
        task_id="fit_candidate",
        bash_command=f"{CLI} fit-sids {LAKE} {CONFIG} {{{{ overrides(params.fit_set) }}}}"
        " --promote never",
        execution_timeout=timedelta(hours=6),
    )  # its last stdout line, the new version, is the XCom
    promote_if_no_worse = BashOperator(
        task_id="promote_if_no_worse",
        bash_command=f"{CLI} promote-sids {LAKE} {CONFIG} --promote if-no-worse"
        " --codebook {{ ti.xcom_pull(task_ids='fit_candidate') | sh }}"
        " --note 'sid_refit {{ run_id }}'",
        skip_on_exit_code=REFUSED_EXIT,
        retries=0,
    )
    recode_items = BashOperator(
        task_id="recode_items",
        bash_command=f"{CLI} assign-sids {LAKE} {CONFIG}",
        execution_timeout=timedelta(hours=6),
    )
    fit_candidate >> promote_if_no_worse >> recode_items
