"""Commit granularity (issues 16, 40): a wave's finished tasks are committed together once the
wave reconciles, in MERGEs of about ``run.commit_items`` items, never one MERGE per task."""

import pytest

from jobs.cli import main
from schemas.store import DeltaStore
from tests.cli_helpers import run_argv
from tests.fake_openai_server import FakeOpenAI
from tests.test_truthful_runs import clips, served

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("settings", "merges"),
    [
        ([], 1),  # four 1-item tasks, one MERGE
        (["run.commit_items=2"], 2),  # every 2 items
        (["run.commit_items=1"], 4),
        (["run.commit_interval_s=0"], 1),  # deprecated and ignored: no commit per task
    ],
)
def test_finished_tasks_are_committed_by_size_or_time(tmp_path, settings, merges):
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    with FakeOpenAI() as server:
        assert (
            main(run_argv(folder, lake, *served(server.url), "run.items_per_task=1", *settings))
            == 0
        )
    history = DeltaStore(lake).table("descriptions").history()
    assert len(history) == merges  # one table version per commit
    assert DeltaStore(lake).read("descriptions").num_rows == 4
