"""Commit granularity (issue 16): the local engine commits finished tasks together, by size
(``run.commit_items``) or time (``run.commit_interval_s``), not one MERGE per task."""

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
        (["run.commit_interval_s=0"], 4),  # each 1-item task at once
        (["run.commit_interval_s=3600"], 1),  # all at the end of the run
        (["run.commit_interval_s=3600", "run.commit_items=2"], 2),  # every 2 items
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
