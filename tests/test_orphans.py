"""Kill -9 of a run leaves no process behind: the media stage's spawned worker processes hold
only their own end of a pipe to the run, and exit when its end closes (a process pool's
workers waited on a task queue whose write end they held themselves, about 250 MB each,
until killed by hand)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import run_argv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def spawned_children(pid: int) -> list[int]:
    """The multiprocessing workers a process spawned (its direct children running spawn_main)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_killing_a_run_leaves_no_media_worker_behind(demo_corpus, tmp_path):
    rows = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines()]
    clips = [r for r in rows if not r["item_id"].startswith("bad/")]
    manifest = demo_corpus / "orphans.jsonl"  # enough clips that the run is still decoding
    manifest.write_text(
        "".join(json.dumps({**clips[n % len(clips)], "item_id": f"c{n}"}) + "\n" for n in range(60))
    )
    argv = run_argv(manifest, tmp_path / "lake", "run.prep_processes=2")
    run = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := spawned_children(run.pid)) < 2 and time.monotonic() < deadline:
            assert run.poll() is None, "the run ended before its media workers started"
            time.sleep(0.2)
        assert len(workers) >= 2, "no media worker processes appeared"
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 15
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"media workers {left} outlived their killed run"
