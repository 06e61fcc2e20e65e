"""Issue 28, through the `enrich` CLI: one exit code per class of problem (2 for bad input or
usage, before anything is written; 1 for a run that failed), a stage timeout that never turns
into an abort at exit (134), and control characters in user data printed escaped."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs.cli import main
from pipelines.disk_reserve import RESERVE_BYTES
from schemas.rows import utc_now
from schemas.store import DeltaStore
from tests.cli_helpers import run_argv
from tests.test_config import BOMB
from tests.test_fault_tolerance import fill, small_disk  # noqa: F401 - small_disk: a fixture

REPO = Path(__file__).resolve().parents[1]
CHEAP = ("media.num_frames=2",)  # on top of tests.cli_helpers.QUICK
NO_REPORT = ("--no-report",)
EVIL_ID = "evil\x1b[2J\x1b]0;pwned\x07\x9b31m"  # clear screen, retitle the window, C1 CSI
EVIL_SHOWN = "evil\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m"


def text_manifest(tmp: Path) -> Path:
    path = tmp / "items.jsonl"
    path.write_text(json.dumps({"item_id": "a", "title": "a title", "text": "some text"}) + "\n")
    return path


def config_file(text: str | bytes):
    def argv(tmp: Path) -> list[str]:
        path = tmp / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return run_argv(
            text_manifest(tmp), tmp / "lake", *CHEAP, extra=(*NO_REPORT, "--config", str(path))
        )

    return argv


def override(setting: str):
    return lambda tmp: run_argv(text_manifest(tmp), tmp / "lake", *CHEAP, setting, extra=NO_REPORT)


def manifest_file(name: str, content: bytes):
    def argv(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content)
        return run_argv(path, tmp / "lake", *CHEAP, extra=NO_REPORT)

    return argv


def summary_at(relative: str):
    def argv(tmp: Path) -> list[str]:
        (tmp / "a_folder").mkdir(exist_ok=True)
        return run_argv(
            text_manifest(tmp),
            tmp / "lake",
            *CHEAP,
            extra=(*NO_REPORT, "--summary-json", str(tmp / relative)),
        )

    return argv


def run_of_missing_files(tmp: Path) -> list[str]:
    path = tmp / "gone.jsonl"
    path.write_text(json.dumps({"item_id": "gone", "uri": str(tmp / "gone.mp4")}) + "\n")
    return run_argv(path, tmp / "lake", *CHEAP, extra=NO_REPORT)


USAGE_CASES = {
    "non_utf8_config": (config_file("media:\n  sampling: caf\xe9\n".encode("latin-1")), "UTF-8"),
    "python_tag_in_set": (override("media.num_frames=!!python/object/apply:os.getpid []"), "YAML"),
    "python_tag_in_config": (config_file("media: !!python/object/apply:os.getpid []\n"), "YAML"),
    "yaml_alias_bomb": (config_file(BOMB), "aliases expand"),
    "duplicate_yaml_key": (config_file("media:\n  fps: 1\n  fps: 2\n"), "appears twice"),
    "count_given_true": (override("media.num_frames=true"), "media.num_frames"),
    "flag_given_1": (override("asr.enabled=1"), "asr.enabled"),
    "infinite_file_limit": (override("media.max_file_mb=.inf"), "finite"),
    "nan_timeout": (override("run.stage_timeout_s={describe: .nan}"), "finite"),
    "unknown_key": (override("media.num_framez=2"), "unknown key"),
    "missing_config": (
        lambda tmp: run_argv(
            text_manifest(tmp), tmp / "lake", *CHEAP, extra=(*NO_REPORT, "--config", "/no.yaml")
        ),
        "not found",
    ),
    "summary_json_in_missing_folder": (summary_at("nowhere/summary.json"), "--summary-json"),
    "summary_json_is_a_folder": (summary_at("a_folder"), "--summary-json"),
    "missing_input": (
        lambda tmp: run_argv(tmp / "nope.jsonl", tmp / "lake", *CHEAP, extra=NO_REPORT),
        "does not exist",
    ),
    "zero_byte_csv": (manifest_file("empty.csv", b""), "--input"),
    "not_parquet": (manifest_file("items.parquet", b"item_id,title\na,b\n"), "--input"),
    "unknown_resume_id": (
        lambda tmp: run_argv(
            text_manifest(tmp),
            tmp / "lake",
            *CHEAP,
            extra=(*NO_REPORT, "--resume", "20990101T000000Z-00000000"),
        ),
        "resume",
    ),
    "inspect_without_a_lake": (lambda tmp: ["inspect", "--lake", str(tmp / "lake")], "lake"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_bad_input_or_usage_exits_2_with_one_line_before_any_write(case, tmp_path, capsys):
    make_argv, fragment = USAGE_CASES[case]
    assert main(make_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("enrich: error: ") and fragment.lower() in err.lower(), err
    assert "Traceback" not in err
    assert not (tmp_path / "lake" / "runs").exists()


def test_a_fifo_manifest_exits_2_without_blocking(tmp_path):
    """Opening a FIFO with no writer blocks forever: in a child process, with a time limit."""
    fifo = tmp_path / "items.jsonl"
    os.mkfifo(fifo)
    argv = [
        sys.executable,
        "-m",
        "jobs.cli",
        *run_argv(fifo, tmp_path / "lake", *CHEAP, extra=NO_REPORT),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "not a regular file" in done.stderr


def test_a_run_whose_items_all_failed_exits_1_and_says_failed(tmp_path, capsys):
    assert main(run_of_missing_files(tmp_path)) == 1
    assert "the run failed" in capsys.readouterr().err
    [run] = DeltaStore(tmp_path / "lake").read("runs").to_pylist()
    assert run["status"] == "failed"


def test_a_fit_with_an_unwritable_summary_exits_2_before_fitting(tmp_path, capsys):
    lake = tmp_path / "lake"
    argv = ["fit-sids", "--lake", str(lake), "--summary-json", str(tmp_path / "no/s.json")]
    assert main(argv) == 2
    assert "--summary-json" in capsys.readouterr().err
    assert not (lake / "codebooks").exists()


# -- a stage timeout: the run's own exit code, every time ----------------------------------------
@pytest.mark.slow
def test_a_stage_timeout_ends_with_the_runs_exit_code_five_times_of_five(tmp_path, tiny_vlm_dir):
    """A describe call that runs past its limit is abandoned in a thread. Before the fix, that
    thread was still inside torch at interpreter exit and aborted the process (134) although
    the run succeeded. Here generate is slow (4000 tokens forced) and the limit 1 s."""
    source = text_manifest(tmp_path)
    settings = (
        "describe.backend=transformers",
        f"describe.model={tiny_vlm_dir}",
        "describe.gguf_file=null",
        "describe.max_new_tokens=4000",
        "describe.min_new_tokens=4000",
        "run.stage_timeout_s={describe: 1}",
        "run.item_retries=0",
        "run.max_error_rate=1.0",  # the timed-out item is an error row; the run succeeds
    )
    outcomes = []
    for attempt in range(5):
        lake = tmp_path / f"lake{attempt}"
        argv = [
            *run_argv(source, tmp_path / "lake", *CHEAP, *settings, extra=NO_REPORT),
            "--lake",
            str(lake),
        ]
        done = subprocess.run(
            [sys.executable, "-m", "jobs.cli", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        outcomes.append((done.returncode, "terminate called" in done.stderr))
        [error] = DeltaStore(lake).read("errors").to_pylist()
        assert error["code"] == "stage_timeout"
        assert DeltaStore(lake).read("runs").to_pylist()[0]["status"] == "succeeded"
    assert outcomes == [(0, False)] * 5


# -- control characters ------------------------------------------------------------------------
def test_run_prints_ids_and_messages_with_control_characters_escaped(tmp_path, capfd):
    path = tmp_path / "evil.jsonl"
    row = {"item_id": EVIL_ID, "uri": str(tmp_path / f"{EVIL_ID}.mp4"), "title": EVIL_ID}
    path.write_text(json.dumps(row) + "\n")
    assert (
        main(run_argv(path, tmp_path / "lake", *CHEAP, "run.max_error_rate=1.0", extra=NO_REPORT))
        == 0
    )
    out, err = capfd.readouterr()
    assert EVIL_SHOWN in out  # the errors row of the missing file names the item
    for stream in (out, err):
        assert "\x1b" not in stream and "\x9b" not in stream and "\x07" not in stream


def test_inspect_prints_table_values_with_control_characters_escaped(tmp_path, capsys):
    store = DeltaStore(tmp_path / "lake")
    store.merge(
        "descriptions",
        [
            {
                "item_id": EVIL_ID,
                "title": f"title {EVIL_ID}",
                "description": "line one\nline two",
                "run_id": "r1",
                "updated_at": utc_now(),
            }
        ],
    )
    assert main(["inspect", "--lake", str(tmp_path / "lake"), "--table", "descriptions"]) == 0
    out = capsys.readouterr().out
    assert EVIL_SHOWN in out and f"title {EVIL_SHOWN}" in out and "line one\\nline two" in out
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out


def test_log_lines_escape_control_characters(caplog):
    import logging

    from core.redact import RedactingFilter

    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "item %s\nfailed", (EVIL_ID,), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"item {EVIL_SHOWN}\nfailed"  # its own line break stays


# -- a full disk: the runs row still ends ---------------------------------------------------------
def test_a_disk_that_fills_during_the_run_still_gets_the_closing_runs_row(small_disk, capsys):  # noqa: F811
    """The disk fills while an item hangs, after the run recorded itself as running: the run
    fails (exit 1) and its runs row says so once space is back, instead of `running`."""
    lake = small_disk / "lake"
    source = small_disk / "items.jsonl"
    source.write_text(
        "".join(json.dumps({"item_id": i, "title": f"t {i}", "text": "x"}) + "\n" for i in "ab")
    )
    settings = (
        "describe.backend=openai",
        "describe.endpoint=http://127.0.0.1:9/v1",  # refused at once: error rows, no model
        "describe.max_retries=0",
        'run.faults={media: {hang_items: ["a"], hang_s: 8}}',
        "run.max_error_rate=1.0",
    )
    filler = threading.Thread(target=fill_once_reserved, args=(lake, small_disk), daemon=True)
    filler.start()
    code = main(
        [
            *run_argv(source, small_disk / "lake", *CHEAP, *settings, extra=NO_REPORT),
            "--lake",
            str(lake),
        ]
    )
    filler.join()
    assert code == 1
    assert "the disk is full" in capsys.readouterr().err
    (small_disk / "filler").unlink()
    [run] = DeltaStore(lake).read("runs").to_pylist()
    assert run["status"] == "failed"


def fill_once_reserved(lake: Path, disk: Path) -> None:
    """Fill the disk once the run holds its reserve (or after 5 s if it never takes one)."""
    deadline = time.monotonic() + 30
    while not (lake / "runs" / "_delta_log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    deadline = min(deadline, time.monotonic() + 5)
    while time.monotonic() < deadline and not any(
        f.stat().st_size >= RESERVE_BYTES for f in (lake / "_reserve").glob("*")
    ):
        time.sleep(0.05)
    fill(disk)
