"""Fault tolerance: a run killed mid-describe commits nothing, and resumed by its id ends with
the same tables as an uninterrupted run, redoing only the tasks that had not finished;
injected describer faults become retries, then error rows, while every other item lands; a
full or read-only lake fails with a clear message and leaves every table readable at its
previous version."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from deltalake import DeltaTable

from core.config import FaultSpec
from jobs.cli import main
from schemas import DeltaStore, read_table
from schemas.rows import utc_now
from schemas.store import LakeWriteError
from tests.cli_helpers import run_argv
from tests.media_factory import run_ffmpeg
from transforms.faults import fault_chosen

pytestmark = pytest.mark.slow
CLIPS = 32
CHUNK = 4
SUBJECTS = ["a cat", "a chef", "a skater", "a violinist", "a robot toy", "a magician", "a dog"]
HANG_AT = 20  # the killed run hangs in describe on this clip; the kill lands there
FAST = (  # on top of tests.cli_helpers.QUICK
    "media.num_frames=2",
    "describe.batch_size=1",  # identical text whichever items share a batch
    # identical embeddings too: the streaming runtime batches as items arrive, and the tiny
    # VLM's near-identical texts make the codebook flip on 1e-7 differences of a padded batch
    "encode.batch_size=1",
    f"run.items_per_task={CHUNK}",
)
NO_REPORT = ("--no-report",)
VOLATILE = {"run_id", "updated_at", "describe_latency_ms", "codebook_version"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """32 short distinct clips, then one missing file, in a manifest with titles."""
    folder = tmp_path_factory.mktemp("ft-corpus")
    rows = []
    for i in range(CLIPS):
        clip = folder / f"clip{i:02d}.mp4"
        source = f"testsrc2=size=96x64:rate=10,hue=h={i * 11}"
        run_ffmpeg("-f", "lavfi", "-i", source, "-t", f"{1 + i / 20:.2f}", str(clip))
        rows.append(
            {"item_id": f"clip{i:02d}", "uri": clip.name, "title": f"{SUBJECTS[i % 7]} #{i}"}
        )
    rows.append({"item_id": "zz-missing", "uri": "missing.mp4", "title": "gone"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


# The kill-and-resume tests describe with the offline default: its texts are stated from each
# clip's evidence, so every clip's embedding and Semantic ID is its own. The tiny random VLM's
# near-identical gibberish collapsed the codebook, whose codes then flipped on 1e-7
# differences between the processes that embedded them.
EVIDENCE_DESCRIBER: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def tiny_vlm(tiny_vlm_dir):
    """The transformers backend with a tiny random LLaVA: real generate(), fast, greedy."""
    return (
        "describe.backend=transformers",
        f"describe.model={tiny_vlm_dir}",
        "describe.gguf_file=null",
        "describe.max_new_tokens=12",
        "describe.max_images=2",
    )


def comparable(lake, name):
    rows = read_table(lake, name).to_pylist()
    return {r["item_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


def rows_committed(lake) -> int:
    path = lake / "descriptions"
    return (
        DeltaStore(lake).read("descriptions").num_rows if DeltaTable.is_deltatable(str(path)) else 0
    )


def tasks_finished(lake) -> list[str]:
    """The enrich tasks whose completion marker a run staged (any run id)."""
    return sorted(p.name for p in lake.glob("_staging/*/_tasks/enrich/*.json"))


def kill_partway(argv, lake, after_tasks: int) -> None:
    """Start ``enrich run`` and SIGKILL it once ``after_tasks`` enrich tasks finished (and a
    moment later: the run is then hanging in describe)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while len(tasks_finished(lake)) < after_tasks:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run: what every interrupted-then-finished run must end as."""
    lake = tmp_path_factory.mktemp("reference") / "lake"
    assert main(run_argv(corpus, lake, *FAST, *EVIDENCE_DESCRIBER, extra=NO_REPORT)) == 0
    return lake


def assert_same_tables(lake, reference) -> None:
    for name in ("descriptions", "semantic_ids", "errors"):
        assert comparable(lake, name) == comparable(reference, name), name
    ours, theirs = comparable(lake, "embeddings"), comparable(reference, "embeddings")
    assert ours.keys() == theirs.keys() and len(ours) == CLIPS
    for item, row in theirs.items():
        assert np.allclose(ours[item].pop("embedding"), row.pop("embedding"), atol=1e-5)
        assert ours[item] == row
    for name in ("descriptions", "embeddings", "semantic_ids"):
        assert read_table(lake, name).num_rows == CLIPS, f"{name} has duplicates or gaps"
    assert comparable(lake, "errors").keys() == {"zz-missing"}


def test_a_killed_run_commits_nothing_and_resumes_to_the_same_tables(corpus, reference, tmp_path):
    """SIGKILL in the enrich wave: no table holds a row (a wave commits only once all its
    tasks are reconciled), the finished tasks stay staged, and ``--resume`` commits them
    without redoing them."""
    resumed, summary = tmp_path / "resumed", tmp_path / "summary.json"
    hang = json.dumps({"describe": {"hang_items": [f"clip{HANG_AT}"], "hang_s": 600}})
    killed_argv = run_argv(
        corpus, resumed, *FAST, *EVIDENCE_DESCRIBER, f"run.faults={hang}", extra=NO_REPORT
    )
    kill_partway(killed_argv, resumed, after_tasks=HANG_AT // CHUNK)
    assert rows_committed(resumed) == 0
    assert len(tasks_finished(resumed)) == HANG_AT // CHUNK  # 5 tasks, the 6th was in describe
    [killed] = read_table(resumed, "runs").to_pylist()
    assert killed["status"] == "running"  # never finished: it was killed outright

    resume = ["--resume", killed["run_id"], "--summary-json", str(summary), *NO_REPORT]
    assert main(run_argv(corpus, resumed, *FAST, *EVIDENCE_DESCRIBER, extra=resume)) == 0
    [rerun] = read_table(resumed, "runs").to_pylist()
    assert (rerun["run_id"], rerun["status"]) == (killed["run_id"], "succeeded")
    assert (rerun["succeeded"], rerun["failed"]) == (CLIPS, 1)  # and the missing file
    notes = json.loads(summary.read_text())["notes"]
    assert f"resumed: {HANG_AT // CHUNK} tasks an earlier attempt finished, not redone" in notes
    assert_same_tables(resumed, reference)


def test_a_crashed_run_resumed_by_its_id_commits_finished_tasks_without_redoing_them(
    corpus, reference, tmp_path
):
    """The driver process dies in task 4 (clip13); ``--resume RUN_ID`` plans the same tasks,
    finds the completion markers of the three that finished, redoes only the rest, and ends
    with the uninterrupted run's tables and one succeeded runs row."""
    lake, summary = tmp_path / "lake", tmp_path / "summary.json"
    crash = json.dumps({"media": {"crash_items": ["clip13"]}})
    argv = run_argv(
        corpus, lake, *FAST, *EVIDENCE_DESCRIBER, f"run.faults={crash}", extra=NO_REPORT
    )
    died = subprocess.run([sys.executable, "-m", "jobs.cli", *argv], capture_output=True)
    assert died.returncode != 0
    [crashed] = read_table(lake, "runs").to_pylist()
    assert crashed["status"] == "running"
    staging = lake / "_staging" / crashed["run_id"]
    assert sorted(p.name for p in (staging / "_tasks" / "enrich").iterdir()) == [
        "00000.json",
        "00001.json",
        "00002.json",
    ]

    resume = ["--resume", crashed["run_id"], "--summary-json", str(summary)]
    assert (
        main(run_argv(corpus, lake, *FAST, *EVIDENCE_DESCRIBER, extra=(*resume, *NO_REPORT))) == 0
    )
    [run] = read_table(lake, "runs").to_pylist()
    assert (run["run_id"], run["status"], run["items"]) == (crashed["run_id"], "succeeded", 33)
    notes = json.loads(summary.read_text())["notes"]
    assert "resumed: 3 tasks an earlier attempt finished, not redone" in notes
    assert not staging.exists()
    assert_same_tables(lake, reference)
    assert (
        main(
            run_argv(
                corpus,
                lake,
                *FAST,
                *EVIDENCE_DESCRIBER,
                extra=("--resume", "20990101T000000Z-00000000", *NO_REPORT),
            )
        )
        == 2
    )


def test_injected_describer_faults_retry_then_become_error_rows(corpus, tiny_vlm, tmp_path):
    items = [f"clip{i:02d}" for i in range(10)]
    subset = corpus.parent / "first10.jsonl"
    subset.write_text("".join(corpus.read_text().splitlines(keepends=True)[:10]))
    spec = FaultSpec(fail_fraction=0.2, seed=0, hang_items=["clip07"], hang_s=120)
    failing = {i for i in items if fault_chosen(spec, i)} - {"clip07"}
    assert failing, "seed 0 picks no item: choose another seed"
    faults = {"describe": {**spec.model_dump(), "fail_attempts": 0}}
    lake = tmp_path / "lake"
    argv = run_argv(
        subset, lake, *FAST, *tiny_vlm, f"run.faults={json.dumps(faults)}", extra=NO_REPORT
    )
    argv += ["--set", "run.stage_timeout_s={describe: 8}", "--set", "run.item_retries=2"]
    assert main(argv) == 0

    errors = {r["item_id"]: r for r in read_table(lake, "errors").to_pylist()}
    assert set(errors) == failing | {"clip07"}
    assert errors["clip07"]["code"] == "stage_timeout"
    for item in failing:
        assert errors[item]["code"] == "internal_error"
        assert "injected fault" in errors[item]["message"]
        assert "after 3 attempt(s)" in errors[item]["message"]
    landed = set(read_table(lake, "descriptions").column("item_id").to_pylist())
    assert landed == set(items) - failing - {"clip07"}

    # transient faults (each chosen item fails its first attempt only) are absorbed by retries
    transient = {"describe": {**spec.model_dump(), "hang_items": [], "fail_attempts": 1}}
    lake2 = tmp_path / "lake2"
    argv = run_argv(
        subset, lake2, *FAST, *tiny_vlm, f"run.faults={json.dumps(transient)}", extra=NO_REPORT
    )
    assert main(argv) == 0
    assert read_table(lake2, "descriptions").num_rows == 10
    assert not DeltaTable.is_deltatable(str(lake2 / "errors"))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: the lake's disk, which the test fills or makes read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"needs root to mount a small tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def error_rows(count: int, text: str):
    return [
        {
            "item_id": f"item{i}",
            "uri": f"/media/{i}.mp4",
            "stage": "media",
            "code": "not_found",
            "message": text * 40,
            "run_id": "r1",
            "updated_at": utc_now(),
        }
        for i in range(count)
    ]


def fill(disk):
    """Write zeros until the disk says it is full."""
    try:
        with open(disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    except OSError:
        pass


@pytest.mark.parametrize("failure", ["disk_full", "read_only"])
def test_a_failing_lake_write_commits_nothing_and_says_why(small_disk, failure):
    store = DeltaStore(small_disk / "lake")
    store.merge("errors", error_rows(5, "a"))
    before = store.read("errors")
    if failure == "disk_full":
        fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(LakeWriteError) as raised:
        store.merge("errors", error_rows(3000, "b"))
    hint = "the disk is full" if failure == "disk_full" else "read-only"
    assert hint in str(raised.value) and "'errors'" in str(raised.value)
    assert store.version("errors") == 0
    assert store.read("errors").equals(before)
    if failure == "disk_full":  # space back: the next write commits normally
        (small_disk / "filler").unlink()
        assert store.merge("errors", error_rows(50, "c")) == 1


def test_cli_on_a_full_lake_exits_with_a_clear_message(corpus, tiny_vlm, small_disk, capfd):
    lake = small_disk / "lake"
    manifest = corpus.parent / "one.jsonl"
    manifest.write_text(corpus.read_text().splitlines(keepends=True)[0])
    assert main(run_argv(manifest, lake, *FAST, *tiny_vlm, extra=NO_REPORT)) == 0
    versions = {n: DeltaStore(lake).version(n) for n in ("descriptions", "embeddings", "runs")}
    fill(small_disk)
    assert main([*run_argv(manifest, lake, *FAST, *tiny_vlm, extra=NO_REPORT), "--force"]) == 1
    message = capfd.readouterr().err
    assert "enrich: error: could not write" in message and "the disk is full" in message
    assert "rerun the same command" in message
    store = DeltaStore(lake)
    assert {n: store.version(n) for n in versions} == versions
    assert store.read("descriptions").num_rows == 1
