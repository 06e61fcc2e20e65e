"""A run's staging and context: task markers survive JSON, reconciliation refuses a task that
left no marker or a staged file that lost rows, each task is reconciled once, and a run looks
its pinned codebook up once."""

from collections import Counter

import numpy as np
import pytest

import pipelines.context
import pipelines.staging
from core.config import Config, load_config
from jobs.common import confine_to
from pipelines.commit import new_run_id
from pipelines.context import RunContext
from pipelines.driver import run_pipeline
from pipelines.failures import ReconciliationError
from pipelines.sids import fit_codebook_on
from pipelines.staging import StagedFile, Staging, TaskMarker
from schemas.rows import error_row, utc_now
from schemas.store import DeltaStore
from tests.cli_helpers import QUICK
from tests.fake_openai_server import FakeOpenAI
from tests.test_truthful_runs import clips, served
from transforms.encode import encoder_id
from transforms.stage import ERROR_KEY

ENRICH_MARKER = TaskMarker(
    wave="enrich",
    task_id="00003",
    items=5,
    files={"descriptions": StagedFile("file:///s/descriptions/p.parquet", 3)},
    attempt=1,
    enriched=3,
    failed=1,
    skipped=1,
    errors_by_code={"not_found": 1},
    stage_stats={"media": {"processed": 4, "failed": 1}},
    runtime={"wall_s": 1.5},
)


def test_task_markers_round_trip_through_json():
    assert TaskMarker.from_json(ENRICH_MARKER.to_json()) == ENRICH_MARKER
    assert ENRICH_MARKER.accounted == 5
    code = TaskMarker("code", "run-00000", 7, {"sid_codes": StagedFile("s/c.parquet", 7)})
    assert TaskMarker.from_json(code.to_json().encode()) == code
    assert code.accounted is None  # the SID waves do not account for skipped items


def stage_errors(staging: Staging, task_id: str, rows: int) -> TaskMarker:
    """A finished enrich task that staged ``rows`` error rows."""
    parts = staging.parts("enrich", task_id)
    failed = [
        {
            "item_id": f"{task_id}-{i}",
            ERROR_KEY: {"stage": "media", "code": "not_found", "message": ""},
        }
        for i in range(rows)
    ]
    parts.write("errors", [error_row(record, "run1", utc_now()) for record in failed])
    files = parts.close()
    marker = TaskMarker("enrich", task_id, rows, files, enriched=0, failed=rows, skipped=0)
    return staging.finish(marker)


def test_reconciliation_names_a_task_that_left_no_marker(tmp_path):
    staging = Staging(str(tmp_path / "staging" / "run1"))
    done = stage_errors(staging, "t0", 2)
    with pytest.raises(ReconciliationError) as failed:
        staging.finished("enrich", {"t0": 2, "t1": 3})
    message = str(failed.value)
    assert message.startswith("3 of 5 items are missing")
    assert "task t1 (3 items) left no marker" in message and staging.uri in message
    assert staging.finished("enrich", {"t0": 2}) == {"t0": done}


def test_reconciliation_catches_a_staged_file_with_the_wrong_row_count(tmp_path):
    staging = Staging(str(tmp_path / "staging" / "run1"))
    staged = stage_errors(staging, "t0", 2).files["errors"]
    claims_more = TaskMarker(
        "enrich", "t1", 3, {"errors": StagedFile(staged.uri, 3)}, enriched=0, failed=3, skipped=0
    )
    staging.finish(claims_more)
    with pytest.raises(ReconciliationError, match="should hold 3 errors rows but holds 2"):
        staging.finished("enrich", {"t1": 3})
    with pytest.raises(ReconciliationError, match="planned 4 items but accounted for 3 of 3"):
        staging.finished("enrich", {"t1": 4})


def test_a_reconciled_task_is_not_checked_again(tmp_path, monkeypatch):
    staging = Staging(str(tmp_path / "staging" / "run1"))
    checks = spy_on_task_checks(monkeypatch)
    stage_errors(staging, "t0", 2)
    assert list(staging.finished("enrich", {"t0": 2})) == ["t0"]
    stage_errors(staging, "t1", 1)
    assert list(staging.finished("enrich", {"t0": 2, "t1": 1})) == ["t0", "t1"]
    assert checks == Counter({("enrich", "t0"): 1, ("enrich", "t1"): 1})


def spy_on_task_checks(monkeypatch) -> Counter:
    """Counts each task's reconciliation check by (wave, task id); the real check runs."""
    checks: Counter = Counter()
    check = pipelines.staging.task_problems

    def counted(task_id, planned, marker):
        checks[(marker.wave if marker else None, task_id)] += 1
        return check(task_id, planned, marker)

    monkeypatch.setattr(pipelines.staging, "task_problems", counted)
    return checks


def spy_on_codebook_lookups(monkeypatch) -> list[str]:
    lookups: list[str] = []
    lookup = pipelines.context.pinned_codebook

    def counted(store, config, encoder):
        lookups.append(encoder)
        return lookup(store, config, encoder)

    monkeypatch.setattr(pipelines.context, "pinned_codebook", counted)
    return lookups


def lake_with_a_codebook(lake, config: Config) -> str:
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    config.semantic_ids.levels, config.semantic_ids.codebook_size = 2, 4
    codebook = fit_codebook_on(vectors, config.semantic_ids, encoder_id(config.encode))
    row = {**codebook.to_row(), "run_id": "fit", "updated_at": utc_now()}
    DeltaStore(lake).merge("codebooks", [row])
    return codebook.version


def test_a_run_context_looks_the_pinned_codebook_up_once(tmp_path, monkeypatch):
    config = Config()
    version = lake_with_a_codebook(tmp_path / "lake", config)
    lookups = spy_on_codebook_lookups(monkeypatch)
    context = RunContext(config, DeltaStore(tmp_path / "lake"))
    assert context.pinned.version == version
    assert context.sid_codebook().version == version  # the SID waves reuse it
    assert context.pinned is context.sid_codebook()
    assert lookups == [encoder_id(config.encode)]


def test_without_a_pinned_codebook_the_sid_waves_look_again(tmp_path, monkeypatch):
    """A concurrent first run may have fitted the lake's first codebook meanwhile."""
    config = Config()
    lookups = spy_on_codebook_lookups(monkeypatch)
    context = RunContext(config, DeltaStore(tmp_path / "lake"))
    assert context.pinned is None
    version = lake_with_a_codebook(tmp_path / "lake", context.config)
    assert context.sid_codebook().version == version
    assert len(lookups) == 2


@pytest.mark.slow
def test_the_local_engine_reconciles_each_task_once(tmp_path, monkeypatch):
    """Two one-item enrich tasks, reported as they end: each is checked when it is reported,
    not again when the wave ends; each SID task is checked once too."""
    folder = clips(tmp_path / "in", ["a.mp4", "b.mp4"])
    checks = spy_on_task_checks(monkeypatch)
    lookups = spy_on_codebook_lookups(monkeypatch)
    with FakeOpenAI() as server:
        settings = [*QUICK, *served(server.url)]
        config = load_config(None, [*settings, "run.items_per_task=1"])
        confine_to(config, str(folder))
        lake = str(tmp_path / "lake")
        summary = run_pipeline(
            config, str(folder), lake=lake, run_id=new_run_id(), input_label=str(folder)
        )
        assert summary.succeeded == 2 and summary.codebook_version
        # two enrich tasks; a code task (the codebook was fitted after the enrich wave) and a
        # dedup task: each checked once
        assert Counter(wave for wave, _ in checks) == {"enrich": 2, "code": 1, "dedup": 1}
        assert set(checks.values()) == {1}, checks
        assert len(lookups) == 2  # none pinned at the start: looked for again before the fit

        lookups.clear()
        again = run_pipeline(
            config, str(folder), lake=lake, run_id=new_run_id(), input_label=str(folder)
        )
    assert again.skipped == 2
    assert len(lookups) == 1  # pinned once, for the tasks and the SID waves alike
