"""Issue 43 item 9: SIGTERM and SIGINT stop a run cleanly. A real ``enrich run`` process gets
a real signal in its enrich wave: it exits 143 (SIGTERM) or 130 (SIGINT) with one line and no
traceback, its worker processes are gone, its staging is kept, its ``runs`` row says
``interrupted``, and the line's own command (``... --resume RUN_ID``) finishes the run, even
after a second interruption. ``enrich maintain`` lets the staging of runs interrupted (or left
``running``) long ago go."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import Interrupted
from jobs.cli import interrupted_line, main
from pipelines.interrupts import Stops
from schemas.store import DeltaStore, read_table
from schemas.tables import RUNS
from tests.cli_helpers import run_argv
from tests.test_maintain import stage, typed

REPO = Path(__file__).resolve().parents[1]
ITEMS = 12
# Two items per task, six tasks; describe hangs 3 s on i07 (task 4): a window in which a
# signal finds the run in its enrich wave with three tasks staged.
FAULTS = json.dumps({"describe": {"hang_items": ["i07"], "hang_s": 3}})


def markers(lake: Path) -> int:
    return len(list(lake.glob("_staging/*/_tasks/enrich/*.json")))


def recorded(lake: Path) -> bool:
    """The run wrote its opening ``runs`` row."""
    return (lake / "runs" / "_delta_log" / f"{0:020d}.json").exists()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (its media workers, the resource tracker)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def interrupt(argv: list[str], lake: Path, after: int, signum: int) -> subprocess.CompletedProcess:
    """Run ``enrich`` (argv[0] is the command name) and send ``signum`` to it, alone, once
    ``after`` enrich tasks are staged; the finished process, with its workers checked gone."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv[1:]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while markers(lake) < after or not recorded(lake):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers = children(process.pid)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert workers or not after  # the media workers run once a task has run
    deadline = time.monotonic() + 20  # the resource tracker ends once its parent is gone
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]  # closed, none left behind
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def resume_command(err: str) -> list[str]:
    """The command the interruption line says finishes the run."""
    [line] = [line for line in err.splitlines() if line.startswith("enrich: interrupted: ")]
    command = shlex.split(line.split("Finish it with: ", 1)[1])
    assert command[0] == "enrich" and command[-2] == "--resume"
    return command


# step -> (signal, the exit code, enrich tasks staged before it is sent)
STEPS = {
    "item9-sigterm-as-the-models-load": (signal.SIGTERM, 143, 0),
    "item9-sigint-in-the-enrich-wave-of-the-resume": (signal.SIGINT, 130, 3),
}


@pytest.mark.slow
def test_signals_stop_the_run_cleanly_and_its_resume_command_finishes_it(tmp_path, capsys):
    manifest, lake = tmp_path / "items.jsonl", tmp_path / "lake"
    manifest.write_text(
        "".join(
            json.dumps({"item_id": f"i{i:02d}", "title": f"t{i}", "text": f"text {i}"}) + "\n"
            for i in range(ITEMS)
        )
    )
    command = [
        "enrich",
        *run_argv(manifest, lake, "run.items_per_task=2", f"run.faults={FAULTS}"),
        "--no-report",
    ]
    run_id = None
    for step, (signum, code, after) in STEPS.items():
        done = interrupt(command, lake, after, signum)
        assert done.returncode == code, (step, done.stderr[-3000:])
        assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, step
        command = resume_command(done.stderr)
        run_id = run_id or command[-1]
        assert command[-1] == run_id  # the same run, resumed again
        [row] = read_table(lake, "runs").to_pylist()
        assert (row["run_id"], row["status"]) == (run_id, "interrupted"), step
        assert markers(lake) >= after and not (lake / "descriptions").exists()  # kept, staged
    assert main(command[1:]) == 0
    assert (
        "note: resumed: 3 tasks an earlier attempt finished, not redone" in capsys.readouterr().out
    )
    [row] = read_table(lake, "runs").to_pylist()
    assert (row["run_id"], row["status"], row["succeeded"]) == (run_id, "succeeded", ITEMS)
    assert read_table(lake, "descriptions").num_rows == ITEMS
    assert not list(lake.glob("_staging/*"))


# -- the pieces, without a process ---------------------------------------------------------------


def test_a_signal_while_held_is_raised_on_release_and_at_once_otherwise():
    stops = Stops()
    stops.hold()
    stops.handle(signal.SIGTERM, None)  # the opening row is being written: held
    stops.handle(signal.SIGINT, None)  # the first one wins
    with pytest.raises(Interrupted) as raised:
        stops.release()
    assert raised.value.exit_code == 143
    stops.release()  # nothing pending any more
    with pytest.raises(Interrupted, match="SIGINT"):
        stops.handle(signal.SIGINT, None)


LINES = {
    "item9-recorded": (
        Interrupted(signal.SIGTERM, run_id="20261101T000000Z-1a2b3c4d"),
        ["enrich", "run", "--input", "my items.jsonl", "--resume", "old", "--lake", "l"],
        "Finish it with: enrich run --input 'my items.jsonl' --lake l --resume "
        "20261101T000000Z-1a2b3c4d",
    ),
    "item9-resume-equals": (
        Interrupted(signal.SIGINT, run_id="20261101T000000Z-1a2b3c4d"),
        ["enrich", "run", "--resume=old", "--lake", "l"],
        "Finish it with: enrich run --lake l --resume 20261101T000000Z-1a2b3c4d",
    ),
    "item9-not-recorded": (
        KeyboardInterrupt(),
        ["enrich", "run", "--lake", "l"],
        "SIGINT: stopped (no interrupted run to resume)",
    ),
}


@pytest.mark.parametrize("case", LINES, ids=list(LINES))
def test_the_line_says_how_to_resume(case):
    exc, command, said = LINES[case]
    assert said in interrupted_line(exc, command)


def test_maintain_lets_go_of_staging_interrupted_or_left_running_long_ago(tmp_path, capsys):
    lake, outside = tmp_path / "lake", tmp_path / "outside"
    now = datetime.now(UTC)
    runs = {  # run id: status, days since it started, days since it last staged a file
        "20261101T000000Z-00000001": ("interrupted", 10, 10),
        "20261101T000000Z-00000002": ("interrupted", 1, 1),
        "20261101T000000Z-00000003": ("running", 30, 30),  # killed outright, long ago
        "20261101T000000Z-00000004": ("running", 30, 0),  # still staging: alive
        "20261101T000000Z-00000005": ("running", 1, 1),
    }
    rows = typed(
        RUNS,
        len(runs),
        run_id=pa.array(list(runs)),
        status=pa.array([s for s, _, _ in runs.values()]),
        started_at=pa.array(
            [now - timedelta(days=d) for _, d, _ in runs.values()], RUNS.field("started_at").type
        ),
        finished_at=pa.array(
            [now - timedelta(days=d) if s != "running" else None for s, d, _ in runs.values()],
            RUNS.field("finished_at").type,
        ),
        updated_at=pa.array([now] * len(runs), RUNS.field("updated_at").type),
    )
    DeltaStore(lake).merge("runs", rows)
    folders = {
        run_id: stage(lake, run_id, age_days=staged) for run_id, (_, _, staged) in runs.items()
    }
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (lake / "_staging" / "20261101T000000Z-00000006").symlink_to(outside)

    assert main(["maintain", "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    kept = {run_id[-1] for run_id, folder in folders.items() if folder.exists()}
    assert kept == {"2", "4", "5"}
    assert (outside / "precious.txt").read_text() == "keep"  # a link out is never followed
    assert "quiet for 30.0 days (killed outright?)" in out and "through a link" in out
