"""Parity: the same corpus through the local loop, Beam (FnApiRunner) and Spark (local[2]),
and through the local loop with the media stage in threads instead of worker processes, gives
the same tables, apart from run ids, timestamps, latencies and codebook names."""

import json
import os

import numpy as np
import pytest

from core.config import load_config
from jobs.cli import main
from schemas import DeltaStore, read_table
from tests.parity import assert_same, comparable

pytestmark = pytest.mark.slow
# batch_size=1 for the describer and the encoder: padding in a batch is numerically close to,
# but not bitwise equal with, an unpadded input, and each engine batches differently (the
# stream batches items as they arrive).
SETTINGS = [
    "--set",
    "describe.max_new_tokens=16",
    "--set",
    "describe.batch_size=1",
    "--set",
    "encode.batch_size=1",
    "--set",
    "ocr.max_frames=1",
]
# PySpark sets OMP_NUM_THREADS to spark.task.cpus (1) in its Python workers unless told;
# CTranslate2's int8 Whisper gives a borderline clip (Big Buck Bunny's music) a different
# transcript on one OpenMP thread than on the machine's default that the local engine uses.
SAME_THREADS = [f"--engine-arg=spark.executorEnv.OMP_NUM_THREADS={os.cpu_count()}"]


@pytest.fixture(scope="module")
def lakes(demo_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("engines")
    for lake, engine, setting in RUNS:
        argv = [
            "run",
            "--input",
            str(demo_corpus / "manifest.jsonl"),
            "--lake",
            str(base / lake),
            "--config",
            "configs/demo.yaml",
            "--engine",
            engine,
            *(SAME_THREADS if engine == "spark" else []),
            *SETTINGS,
            "--set",
            setting,
        ]
        if engine == "spark":
            restart_spark()  # a session an earlier test started would ignore SAME_THREADS
        assert main(argv) == 0, lake
    return {lake: base / lake for lake, _, _ in RUNS}


RUNS = [  # (lake, engine, a setting)
    ("local", "local", "run.prep_processes=2"),
    ("threads", "local", "run.prep_processes=0"),
    ("beam", "beam", "run.prep_processes=2"),
    ("spark", "spark", "run.prep_processes=2"),
]
OTHERS = [lake for lake, _, _ in RUNS if lake != "local"]


@pytest.mark.parametrize("name", ["descriptions", "semantic_ids", "errors"])
def test_engines_write_identical_tables(lakes, name):
    local = comparable(lakes["local"], name)
    assert local, name
    for other in OTHERS:
        assert_same(comparable(lakes[other], name), local, f"{other}: {name}")


def test_engines_write_the_same_embeddings(lakes):
    local = comparable(lakes["local"], "embeddings")
    assert local
    for engine in OTHERS:
        other = comparable(lakes[engine], "embeddings")
        assert other.keys() == local.keys()
        for item, row in local.items():
            theirs = dict(other[item])
            assert np.allclose(row["embedding"], theirs.pop("embedding"), atol=1e-5)
            assert theirs == {k: v for k, v in row.items() if k != "embedding"}


def stage_counts(run: dict) -> dict:
    stats = json.loads(run["stage_stats_json"])
    return {name: (s["processed"], s["failed"], s["errors_by_code"]) for name, s in stats.items()}


def test_runs_record_the_engine_and_the_same_stage_counts(lakes):
    counts = {}
    engines = {lake: engine for lake, engine, _ in RUNS}
    for name, lake in lakes.items():
        [run] = read_table(lake, "runs").to_pylist()
        assert run["engine"] == engines[name] and run["succeeded"] == 6 and run["failed"] == 2
        assert json.loads(run["stage_stats_json"])["describe"]["seconds"] > 0, name
        counts[name] = stage_counts(run)
    assert counts["local"]["media"] == (6, 2, {"empty_file": 1, "not_found": 1})
    assert counts["local"]["encode"] == (6, 0, {})
    assert all(counts[other] == counts["local"] for other in OTHERS)


def test_tasks_come_in_whole_waves_of_the_cores():
    from transforms.manifest import task_bounds

    assert len(task_bounds(200, per_task=32, parallel=2)) == 8  # 7 by size, 4 full waves
    assert task_bounds(64, per_task=32, parallel=2) == [(0, 32), (32, 64)]
    assert len(task_bounds(3, per_task=32, parallel=8)) == 3  # never more tasks than items
    assert task_bounds(0, per_task=32, parallel=2) == []
    assert task_bounds(7, per_task=3, parallel=1) == [(0, 3), (3, 5), (5, 7)]


def test_a_lost_spark_worker_fails_the_run_or_is_retried_without_a_trace(
    lakes, demo_corpus, tmp_path, capsys
):
    """A worker that dies mid-task: on local[2] (no task retries) the run fails, is recorded
    as failed and still gets its report; on local[2,2] Spark reruns the task and the tables
    and the runs row's stage counts come out as if nothing had happened."""
    manifest = demo_corpus / "manifest.jsonl"
    first_item = json.loads(manifest.read_text().splitlines()[0])["item_id"]
    faults = {"media": {"crash_items": [first_item]}}
    lake, report = tmp_path / "lake", tmp_path / "failed.html"
    argv = ["run", "--input", str(manifest), "--lake", str(lake), "--config", "configs/demo.yaml"]
    argv += ["--engine", "spark", *SAME_THREADS, *SETTINGS]
    argv += ["--set", f"run.faults={json.dumps(faults)}"]

    restart_spark()
    assert main([*argv, "--engine-arg=master=local[2]", "--report", str(report)]) == 1
    assert "Python worker exited unexpectedly" in capsys.readouterr().err  # the cause, exit 1
    [failed] = read_table(lake, "runs").to_pylist()
    assert failed["status"] == "failed"
    assert not DeltaStore(lake).read_or_empty("descriptions").num_rows
    assert "failed" in report.read_text()

    restart_spark()
    assert main([*argv, "--engine-arg=master=local[2,2]"]) == 0
    assert failed_spark_tasks() == 1  # the injected crash happened, and Spark reran the task
    for name in ("descriptions", "errors"):
        assert_same(comparable(lake, name), comparable(lakes["local"], name), name)
    [retried] = [r for r in read_table(lake, "runs").to_pylist() if r["status"] == "succeeded"]
    [local] = read_table(lakes["local"], "runs").to_pylist()
    assert stage_counts(retried) == stage_counts(local)


def restart_spark() -> None:
    """The master (with its task retry count) applies to a new session only."""
    from pyspark.sql import SparkSession

    if active := SparkSession.getActiveSession():
        active.stop()


def failed_spark_tasks() -> int:
    from pyspark.sql import SparkSession

    tracker = SparkSession.getActiveSession().sparkContext.statusTracker()
    stages = [
        tracker.getStageInfo(stage)
        for job in tracker.getJobIdsForGroup()
        for stage in tracker.getJobInfo(job).stageIds
    ]
    return sum(stage.numFailedTasks for stage in stages if stage)


@pytest.mark.parametrize(
    ("settings", "local", "parallel"),
    [
        ([], 64, 4 * 8),  # the defaults: 64 locally; 4 batches of the largest stage batch
        (["run.items_per_task=512"], 512, 512),  # set: honoured by every engine
        (["run.batches_per_task=2"], 64, 2 * 8),
    ],
)
def test_every_engine_honours_items_per_task_and_sizes_from_named_settings(
    settings, local, parallel
):
    from pipelines.engines.beam import BeamEngine
    from pipelines.engines.local import LocalEngine
    from pipelines.engines.spark import SparkEngine

    config = load_config(None, ["describe.batch_size=8", "media.batch_size=4", *settings])
    assert LocalEngine([]).items_per_task(config) == local
    # the parallel engines' sizing needs no session or pipeline: called without one
    assert SparkEngine.items_per_task(None, config) == parallel
    assert BeamEngine.items_per_task(None, config) == parallel
