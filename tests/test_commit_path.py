"""One commit path for every engine: a wave's tasks run, every marker is reconciled with the
plan, and only then are their rows committed. Shown on the local engine (test_scale_out shows
Spark): a staged file lost before the commit fails the run with nothing committed, and the
next run redoes the items."""

import json

from core import storage
from jobs.cli import main
from pipelines.engines.local import LocalEngine
from schemas import read_table
from tests.cli_helpers import run_argv

ITEMS = [
    {"item_id": f"note-{n}", "title": f"Note {n}", "text": f"A short note, number {n}."}
    for n in range(8)
]


def test_a_wave_that_fails_reconciliation_commits_nothing(tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "notes.jsonl"
    manifest.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    lake = tmp_path / "lake"
    argv = run_argv(manifest, lake, "run.items_per_task=2", extra=["--no-report"])
    original = LocalEngine.run

    def run_then_lose_a_file(self, func, job, tasks):
        original(self, func, job, tasks)
        staged = storage.list_files(storage.join(job.staging, "descriptions"))
        if func.__name__ == "enrich_task":
            assert len(staged) == 4  # every task finished and staged its rows
            storage.delete_file(staged[-1])

    monkeypatch.setattr(LocalEngine, "run", run_then_lose_a_file)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 of 8 items are missing" in err and "descriptions rows but is missing" in err
    [failed] = read_table(lake, "runs").to_pylist()
    assert failed["status"] == "failed"
    for table in ("descriptions", "embeddings", "errors", "semantic_ids"):
        assert not (lake / table).exists(), f"{table} was committed before reconciliation"

    monkeypatch.setattr(LocalEngine, "run", original)
    assert main(argv) == 0
    runs = {r["status"]: r for r in read_table(lake, "runs").to_pylist()}
    assert (runs["succeeded"]["succeeded"], runs["succeeded"]["skipped"]) == (8, 0)
    assert read_table(lake, "descriptions").num_rows == 8
