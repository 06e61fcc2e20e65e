"""The sid_refit DAG under real Airflow with interactions configured: a refit that is as
healthy as the current codebook but serves the recommender worse is refused by the
evaluation gate, and nothing is re-coded."""

import pytest
import yaml

from core.config import EncodeConfig
from jobs.cli import main
from schemas import DeltaStore
from tests.sid_lake import codebook_rows
from tests.test_dags import ROOT, airflow_env, dag_test  # noqa: F401 (a fixture)
from tests.test_evaluation_gate import gate_settings, log_following_first_codes, seed_isotropic
from transforms.encode import EncodeStage

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.long]  # make test-long


def test_sid_refit_dag_refuses_a_refit_the_evaluation_gate_rejects(airflow_env, tmp_path):  # noqa: F811
    lake, config = tmp_path / "lake", tmp_path / "gate.yaml"
    seed_isotropic(lake, EncodeStage(EncodeConfig()).encoder_id)
    settings = gate_settings()
    config.write_text(yaml.safe_dump(settings))
    assert main(["fit-sids", "--lake", str(lake), "--config", str(config), "--assign"]) == 0
    [first] = codebook_rows(lake)
    log_following_first_codes(lake, tmp_path / "log.parquet")
    settings["evaluate"]["interactions"] = str(tmp_path / "log.parquet")
    config.write_text(yaml.safe_dump(settings))

    refused = dag_test(
        airflow_env,
        "sid_refit",
        "2026-11-01",
        {"fit_set": ["semantic_ids.seed=1"]},
        AIRFLOW_VAR_ENRICH_LAKE=str(lake),
        AIRFLOW_VAR_ENRICH_CONFIG=str(config),
        PYTHONPATH=str(ROOT),  # the tasks' enrich CLI runs this checkout's code
    )
    assert refused["state"] == "success", refused["output"][-3000:]
    assert refused["tasks"] == {
        "fit_candidate": "success",
        "promote_if_no_worse": "skipped",
        "recode_items": "skipped",
    }
    [refit] = set(codebook_rows(lake)) - {first}
    row = codebook_rows(lake)[refit]
    assert row["promotion_status"] == "refused" and "evaluation two_tower" in row["promotion_note"]
    assert set(DeltaStore(lake).read("semantic_ids")["codebook_version"].to_pylist()) == {first}
