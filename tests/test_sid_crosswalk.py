"""A refit re-codes items onto a new codebook: the crosswalk (old SID → new SID per item) and
its churn figures reach the lake, the promotion decision and the report."""

import pytest

from core.config import EncodeConfig
from jobs.cli import main
from jobs.report import render_report
from pipelines.crosswalk import churn_summary
from schemas import DeltaStore
from schemas.rows import utc_now
from tests.sid_lake import seed_lake
from transforms.encode import EncodeStage

pytestmark = pytest.mark.slow


def sids(store: DeltaStore) -> dict[str, dict]:
    return {r["item_id"]: r for r in store.read("semantic_ids").to_pylist()}


def test_a_promoted_refit_writes_its_crosswalk_and_churn_and_the_report_shows_it(tmp_path, capsys):
    lake = tmp_path / "lake"
    seed_lake(lake, EncodeStage(EncodeConfig()).encoder_id)
    store = DeltaStore(lake)
    base = ["--lake", str(lake), "--set", "semantic_ids.codebook_size=16"]
    assert main(["fit-sids", *base, "--assign"]) == 0
    before = sids(store)
    assert not store.exists("sid_crosswalk")  # a first assignment replaces nothing
    capsys.readouterr()

    refit = ["fit-sids", *base, "--set", "semantic_ids.seed=7", "--promote", "always"]
    assert main([*refit, "--assign"]) == 0
    out = capsys.readouterr().out
    assert "churn" in out and "level_1_prefix_changed" in out  # the decision names it

    after = sids(store)
    [new_version] = {r["codebook_version"] for r in after.values()}
    crosswalk = {r["item_id"]: r for r in store.read("sid_crosswalk").to_pylist()}
    assert set(crosswalk) == set(before)
    for item, row in crosswalk.items():
        assert (row["old_sid"], row["new_sid"]) == (before[item]["sid"], after[item]["sid"])
        assert row["new_codebook_version"] == new_version
        assert row["level_1_changed"] == (before[item]["codes"][0] != after[item]["codes"][0])
    summary = churn_summary(store, new_version)
    assert summary["items"] == len(before)
    # labels follow the old codebook: another seed regroups few items at level 1 (unaligned,
    # labels are arbitrary and nearly every item would read as moved)
    assert summary["level_1_prefix_changed"] < 0.2
    assert summary["level_1_prefix_changed"] <= summary["level_2_prefix_changed"]

    now = utc_now()
    run = {"run_id": "r1", "status": "succeeded", "codebook_version": new_version}
    store.merge("runs", [{**run, "started_at": now, "finished_at": now, "updated_at": now}])
    html = render_report(lake)
    assert 'id="sid-churn"' in html and f"{len(before)} items" in html
