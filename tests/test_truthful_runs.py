"""Issue 15, through the CLI: secrets stay out of every output, exit codes and statuses tell the
truth (failed runs, broken or mistyped lakes, vanished inputs), and racing first runs share
one codebook. The describer is the openai backend against a real local HTTP server, so each
run costs the decode and the real sentence encoder, not an LLM."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobs.cli import main
from schemas.rows import utc_now
from schemas.store import DeltaStore
from schemas.tables import TABLES
from tests.cli_helpers import run_argv
from tests.fake_openai_server import FakeOpenAI
from tests.media_factory import synth_video

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def served(endpoint: str) -> tuple[str, ...]:
    """The settings (on top of ``tests.cli_helpers.QUICK``) that describe through the fake
    OpenAI server at ``endpoint``, failing fast."""
    return (
        "describe.backend=openai",
        f"describe.endpoint={endpoint}",
        "describe.model=served/vlm",
        "describe.max_retries=0",
        "describe.timeout_s=10",
        "media.num_frames=2",
    )


def clips(folder: Path, names: list[str], seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        synth_video(folder / name, seconds=seconds + 0.5 * i)
    return folder


def manifest(path: Path, folder: Path) -> Path:
    """Distinct titles: the fake server's description quotes the title."""
    rows = [
        {"item_id": clip.stem, "uri": str(clip), "title": f"{clip.stem} {n} cooking pasta"}
        for n, clip in enumerate(sorted(folder.glob("*.mp4")))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table_text(lake: Path) -> str:
    """Every row of every table, as text."""
    store = DeltaStore(lake)
    return "\n".join(repr(store.read(name).to_pylist()) for name in TABLES if store.exists(name))


def file_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_a_planted_key_reaches_no_output_table_log_or_report(tmp_path, monkeypatch, capsys, caplog):
    key = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("PLANTED_VLM_KEY", key)
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    listing = manifest(tmp_path / "m.jsonl", folder)
    with FakeOpenAI(api_key=key) as server:
        pasted = ["--set", f"describe.api_key_env={key}"]  # the key where its name belongs
        assert main([*run_argv(listing, lake, *served(server.url)), *pasted]) == 2
        refused = capsys.readouterr()
        assert "describe.api_key_env" in refused.err and "NAME of the environment" in refused.err
        assert not lake.exists(), "a refused config must not start a run"

        server.script = ["echo_auth"]  # a gateway that repeats the credential in its error
        summary = tmp_path / "summary.json"
        argv = run_argv(
            listing,
            lake,
            *served(server.url),
            "describe.api_key_env=PLANTED_VLM_KEY",
            "describe.concurrency=1",
        )
        code = main([*argv, "--summary-json", str(summary)])
        assert code == 0
        assert server.requests[0]["auth"] == f"Bearer {key}"  # the key was really in play
        assert main(["inspect", "--lake", str(lake), "--table", "errors"]) == 0
        assert main(["report", "--lake", str(lake), "--out", str(tmp_path / "report.html")]) == 0
    out = capsys.readouterr()
    errors = DeltaStore(lake).read("errors").to_pylist()
    assert [e["code"] for e in errors] == ["describe_failed"]
    assert "credential Bearer ***" in errors[0]["message"]  # echoed, then masked
    config = json.loads(DeltaStore(lake).read("runs").column("config_json")[0].as_py())
    assert config["describe"]["api_key_env"] == "PLANTED_VLM_KEY"
    for where, text in {
        "stdout": out.out,
        "stderr": refused.err + out.err,
        "logs": caplog.text,
        "tables": table_text(lake),
        "summary json": summary.read_text(),
    }.items():
        assert key not in text, f"the planted key is in the {where}"
    for root in (lake, tmp_path / "report.html"):  # the Delta logs, Parquet, HTML reports
        files = file_bytes(root) if root.is_dir() else root.read_bytes()
        assert key.encode() not in files, f"the planted key is in a file under {root}"
    assert list((lake / "_reports").glob("*.html")), "the run report was written"


def test_a_run_whose_items_all_failed_exits_1_with_status_failed(tmp_path, capsys):
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4"])
    down = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: the endpoint is down
    assert main(run_argv(folder, lake, *served(down))) == 1
    captured = capsys.readouterr()
    assert "error rate 1.00 > run.max_error_rate 0.5" in captured.err
    assert "describer_unavailable 2" in captured.err
    assert " failed: 2 items" in captured.out  # the summary still prints
    [run] = DeltaStore(lake).read("runs").to_pylist()
    assert run["status"] == "failed" and run["failed"] == 2
    # Still down on the rerun: an endpoint error is never a "known" failure of the input.
    assert main(run_argv(folder, lake, *served(down))) == 1
    assert "error rate 1.00" in capsys.readouterr().err
    accepted = run_argv(folder, lake, *served(down), "run.max_error_rate=1.0")
    assert main(accepted) == 0  # the documented way to accept it


def test_known_bad_inputs_failing_again_do_not_fail_a_rerun(tmp_path, capsys):
    """A zero-byte file fails as empty_file on every run; when every good item is unchanged,
    the rerun's only failures are known ones and the run succeeds."""
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4"])
    (folder / "empty.mp4").write_bytes(b"")
    with FakeOpenAI() as server:
        for _ in range(2):
            assert main(run_argv(folder, lake, *served(server.url))) == 0
    out = capsys.readouterr().out
    assert "1 of the errors repeat an earlier run's" in out
    runs = sorted(DeltaStore(lake).read("runs").to_pylist(), key=lambda r: r["started_at"])
    assert [(r["status"], r["skipped"], r["failed"]) for r in runs] == [
        ("succeeded", 0, 1),
        ("succeeded", 1, 1),
    ]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("enrich: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_lake_problems_give_one_line_errors(tmp_path, capsys):
    """A mistyped --lake is a usage error (2); a corrupt table a storage error (1)."""
    folder = clips(tmp_path / "in", ["a.mp4"])
    a_file = tmp_path / "lake.txt"
    a_file.write_text("not a lake")
    assert main(["run", "--input", str(folder), "--lake", str(a_file)]) == 2
    assert "is a file, not a directory" in one_line_error(capsys)

    lake = tmp_path / "lake"
    DeltaStore(lake).merge("runs", [{"run_id": "r0", "updated_at": utc_now()}])
    (lake / "runs" / "_delta_log" / "00000000000000000000.json").write_text("{garbage")
    assert main(["run", "--input", str(folder), "--lake", str(lake)]) == 1
    message = one_line_error(capsys)
    assert f"table 'runs' under {lake} cannot be read" in message and "Json error" in message
    assert main(["inspect", "--lake", str(lake)]) == 1
    assert "cannot be read" in one_line_error(capsys)

    assert main(["inspect", "--lake", str(tmp_path / "lakee")]) == 2  # mistyped
    assert "is not a lake" in one_line_error(capsys)


def test_a_vanished_clip_is_reported_then_retired(tmp_path, capsys):
    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    gone = folder / "c.mp4"
    kept = gone.read_bytes()
    store = DeltaStore(lake)

    def run(*settings: str) -> None:
        assert main(run_argv(folder, lake, *served(server.url), *settings)) == 0

    def ids(name: str) -> set[str]:
        return set(store.read(name, columns=["item_id"]).column("item_id").to_pylist())

    with FakeOpenAI() as server:
        run()
        gone.unlink()
        run()
        latest = max(store.read("runs").to_pylist(), key=lambda r: r["started_at"])
        assert latest["missing_input"] == 1
        [error] = store.read("errors").to_pylist()
        assert (error["item_id"], error["code"]) == ("c.mp4", "missing_input")
        assert "still served" in error["message"] and "c.mp4" in ids("descriptions")
        capsys.readouterr()
        assert main(["validate", "--lake", str(lake)]) == 1
        assert "FAIL stale features (input vanished)" in capsys.readouterr().out

        run("run.on_missing_input=delete")
        for name in ("descriptions", "embeddings", "semantic_ids"):
            assert ids(name) == {"a.mp4", "b.mp4"}, name
        assert "deleted" in store.read("errors").column("message")[0].as_py()
        assert main(["validate", "--lake", str(lake)]) == 0

        gone.write_bytes(kept)  # the file comes back: enriched again, its report resolved
        run()
    assert "c.mp4" in ids("descriptions") and store.read("errors").num_rows == 0


def codebook_rows(lake: Path) -> list[dict]:
    columns = ["codebook_version", "promotion_status", "run_id"]
    return DeltaStore(lake).read("codebooks", columns=columns).to_pylist()


def test_the_loser_of_a_first_fit_race_adopts_the_winners_codebook(tmp_path):
    """Deterministic: a run that found no codebook fits and commits after another run's fit
    landed (the window the race opens); it must adopt the earlier one."""
    from core.config import load_config
    from pipelines.sids import first_codebook, pinned_codebook, record_fitted, settle_first_fit
    from transforms.encode import encoder_id
    from transforms.semantic_ids import Codebook

    lake, folder = tmp_path / "lake", clips(tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    with FakeOpenAI() as server:
        listing = manifest(tmp_path / "m.jsonl", folder)
        assert main(run_argv(listing, lake, *served(server.url))) == 0
    [winner] = codebook_rows(lake)
    config = load_config()
    store = DeltaStore(lake)
    adopted = first_codebook(store, config.semantic_ids, encoder_id(config.encode), "late-run")
    assert adopted.version == winner["codebook_version"]
    statuses = {r["run_id"]: r["promotion_status"] for r in codebook_rows(lake)}
    assert statuses == {winner["run_id"]: None, "late-run": "superseded"}
    pinned = pinned_codebook(store, config.semantic_ids, encoder_id(config.encode))
    assert pinned.version == winner["codebook_version"]

    # Two runs that fit the same sample in the same second commit the same version (one row):
    # the later commit shares it and must not supersede it.
    same = Codebook.from_row(pinned_row(store, winner["codebook_version"]))
    committed = record_fitted(store, same, "same-second-run")
    shared = settle_first_fit(store, config.semantic_ids, same, committed, "same-second-run")
    assert shared.version == winner["codebook_version"]
    statuses = {r["run_id"]: r["promotion_status"] for r in codebook_rows(lake)}
    assert statuses == {"same-second-run": None, "late-run": "superseded"}


def pinned_row(store: DeltaStore, version: str) -> dict:
    [row] = [r for r in store.read("codebooks").to_pylist() if r["codebook_version"] == version]
    return row


def test_two_first_runs_at_once_share_one_codebook(tmp_path):
    """Two `enrich run` processes on one empty lake, started together; a slow fit (RQ-VAE)
    widens the window in which both find no codebook."""
    lake = tmp_path / "lake"
    with FakeOpenAI() as server:
        commands = []
        for half in ("x", "y"):
            folder = clips(tmp_path / half, [f"{half}1.mp4", f"{half}2.mp4", f"{half}3.mp4"])
            listing = manifest(tmp_path / f"{half}.jsonl", folder)
            commands.append(
                [
                    *(sys.executable, "-m", "jobs.cli"),
                    *run_argv(
                        listing,
                        lake,
                        *served(server.url),
                        "semantic_ids.method=rq_vae",
                        "semantic_ids.vae_epochs=15",
                    ),
                    "--no-report",
                ]
            )
        logs = [tmp_path / f"run{i}.log" for i in range(len(commands))]
        processes = [
            subprocess.Popen(c, cwd=REPO, stderr=log.open("w"))
            for c, log in zip(commands, logs, strict=True)
        ]
        codes = [p.wait(timeout=300) for p in processes]
    failed_logs = "\n\n".join(log.read_text()[-4000:] for log in logs)
    assert codes == [0, 0], failed_logs
    store = DeltaStore(lake)
    in_use = [r for r in codebook_rows(lake) if r["promotion_status"] is None]
    assert len(in_use) == 1, codebook_rows(lake)
    runs = store.read("runs").to_pylist()
    assert {r["codebook_version"] for r in runs} == {in_use[0]["codebook_version"]}
    sids = store.read("semantic_ids", columns=["item_id", "codebook_version"]).to_pylist()
    assert len(sids) == 6
    assert {r["codebook_version"] for r in sids} == {in_use[0]["codebook_version"]}
