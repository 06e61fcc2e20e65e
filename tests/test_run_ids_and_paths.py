"""Issue 43 item 1: a run id has one shape, checked before any path is built from it, and
every path built from user input stays under its root (``core.storage.join_under``).

Each join of a user-influenced name meets the same hostile names: ``..``, absolute paths,
URIs and drives, encoded and double-encoded dots and slashes, Unicode look-alikes, control
characters, an over-long name, and a symlink inside the root that points out of it. Then the
CLI: ``enrich run --resume <escaping id>`` exits 2 with one clear line, and every file around
the lake is unchanged, byte for byte, with no ``runs`` row written."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import storage
from core.errors import UsageError
from jobs.cli import main
from jobs.report import default_report_path
from pipelines.commit import check_run_id, new_run_id
from pipelines.disk_reserve import release_space, reserve_space
from pipelines.staging import Staging
from tests.cli_helpers import run_argv

GOOD_ID = "20261101T000000Z-1a2b3c4d"

# name -> a hostile path part; every one must be refused by every join below
HOSTILE = {
    "dotdot": "..",
    "dotdot_then_name": "../victim",
    "two_up": "../../victim",
    "inner_dotdot": "a/../../victim",
    "dot": ".",
    "absolute": "/etc/passwd",
    "home": "~/victim",
    "backslash": "..\\victim",
    "drive": "C:victim",
    "uri": "s3://other-bucket/victim",
    "file_uri": "file:///etc",
    "encoded_dotdot": "%2e%2e",
    "encoded_upper": "%2E%2E%2Fvictim",
    "double_encoded": "%252e%252e",
    "encoded_slash": "a%2f..%2f..",
    "fullwidth_dots": "\uff0e\uff0e",
    "two_dot_leader": "\u2025",
    "one_dot_leaders": "\u2024\u2024",
    "division_slash": "a\u2215..\u2215victim",
    "fullwidth_slash": "a\uff0f..",
    "nul": "a\x00b",
    "escape": "a\x1b[2Jb",
    "bidi": "a\u202eb",
    "empty": "",
    "doubled_slash": "a//b",
    "too_long": "a" * 300,
}


@pytest.mark.parametrize("part", HOSTILE.values(), ids=[f"item1-{k}" for k in HOSTILE])
def test_join_under_refuses_every_escaping_name(part, tmp_path):
    with pytest.raises(storage.PathEscape):
        storage.join_under(str(tmp_path), part)
    with pytest.raises(storage.PathEscape):
        storage.join_under("s3://bucket/lake/_staging", part)


def test_join_under_keeps_names_that_stay_under_the_root(tmp_path):
    assert (
        storage.join_under(str(tmp_path), "_reserve", GOOD_ID) == f"{tmp_path}/_reserve/{GOOD_ID}"
    )
    assert (
        storage.join_under("s3://b/lake/", "_staging", GOOD_ID) == f"s3://b/lake/_staging/{GOOD_ID}"
    )
    assert storage.join_under(f"file://{tmp_path}", "a b%20c") == f"{tmp_path}/a b%20c"


@pytest.mark.parametrize("inside", ["", "x"], ids=["item1-symlink", "item1-under-symlink"])
def test_join_under_refuses_a_link_out_of_the_root(inside, tmp_path):
    root, victim = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    victim.mkdir()
    (root / GOOD_ID).symlink_to(victim)
    with pytest.raises(storage.PathEscape, match="through a link"):
        storage.join_under(str(root), "/".join(filter(None, [GOOD_ID, inside])))
    (root / "inner").mkdir()
    (root / "ok").symlink_to(root / "inner")  # a link that stays inside is fine
    assert storage.join_under(str(root), "ok", "x") == f"{root}/ok/x"


# Every place that builds a path from a run id -> the root it must stay under.
JOINS = {
    "staging": (lambda lake, rid: Staging.for_run(lake, rid).uri, "_staging"),
    "staging_uri": (lambda lake, rid: Staging.for_run(lake, rid, f"{lake}/../st").uri, "../st"),
    "report": (default_report_path, "_reports"),
}


@pytest.mark.parametrize("join", JOINS.values(), ids=[f"item1-{k}" for k in JOINS])
@pytest.mark.parametrize("part", HOSTILE.values(), ids=list(HOSTILE))
def test_every_join_of_a_run_id_refuses_escapes(join, part, tmp_path):
    """Refused, or (``..`` + ``.html`` is the name ``...html``) a path inside the root."""
    make, under = join
    lake = tmp_path / "lake"
    lake.mkdir()
    root = (lake / under).resolve()
    try:
        path = Path(make(str(lake), part)).resolve()
    except storage.PathEscape:
        return
    assert path.parent == root and path.name == f"{part}.html", path


@pytest.mark.parametrize("part", HOSTILE.values(), ids=[f"item1-reserve-{k}" for k in HOSTILE])
def test_the_disk_reserve_writes_nothing_outside_the_lake(part, tmp_path):
    lake = tmp_path / "deep" / "lake"
    lake.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert reserve_space(str(lake), part) is None
    assert sorted(p for p in tmp_path.rglob("*")) == before
    reserve = reserve_space(str(lake), GOOD_ID)
    assert reserve == lake / "_reserve" / GOOD_ID and reserve.stat().st_size > 0
    release_space(reserve)
    assert not (lake / "_reserve").exists()


# Ids that are not the shape new_run_id makes, path or not.
NOT_RUN_IDS = {
    "path": "../../victim",
    "id_then_path": f"{GOOD_ID}/../../x",
    "absolute": f"/{GOOD_ID}",
    "upper_hex": "20261101T000000Z-1A2B3C4D",
    "short": "20261101T000000Z-1a2b3c4",
    "trailing_newline": f"{GOOD_ID}\n",
    "arabic_digits": "\u0662\u0660\u0662\u0666\u0661\u0661\u0660\u0661T000000Z-1a2b3c4d",
    "fullwidth_digit": "\uff12" + GOOD_ID[1:],
    "encoded": "%2e%2e",
    "empty": "",
    "not_a_string": 20261101,
}


@pytest.mark.parametrize("run_id", NOT_RUN_IDS.values(), ids=[f"item1-{k}" for k in NOT_RUN_IDS])
def test_a_run_id_has_the_one_shape_the_tool_makes(run_id):
    with pytest.raises(UsageError, match="is not a run id"):
        check_run_id(run_id, "--resume")


def test_generated_ids_pass_the_check():
    assert check_run_id(GOOD_ID) == GOOD_ID
    assert check_run_id(new_run_id())


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a folder, the target for a link."""
    return {
        str(p.relative_to(root)): (
            str(p.readlink()).encode() if p.is_symlink() else None if p.is_dir() else p.read_bytes()
        )
        for p in root.rglob("*")
    }


ESCAPING_RESUMES = {
    "dotdot": "../../victim",
    "encoded": "%2e%2e/%2e%2e/victim",
    "lookalike": "\uff0e\uff0e/\uff0e\uff0e/victim",
    "absolute": "VICTIM",  # replaced by the victim's absolute path
    "link": GOOD_ID,  # a well-shaped id whose staging folder is a link to the victim
}


@pytest.mark.parametrize("staging_uri", [True, False], ids=["staging_uri", "lake_staging"])
@pytest.mark.parametrize(
    "case", ESCAPING_RESUMES, ids=[f"item1-resume-{k}" for k in ESCAPING_RESUMES]
)
def test_resume_with_an_escaping_id_changes_no_file(case, staging_uri, tmp_path, capsys):
    victim, lake, stage_root = tmp_path / "victim", tmp_path / "lake", tmp_path / "stage"
    victim.mkdir()
    (victim / "precious.txt").write_bytes(b"keep me\n")
    (victim / "sub").mkdir()
    (victim / "sub" / "more.bin").write_bytes(bytes(range(256)))
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"item_id": "a", "title": "t", "text": "x"}\n')
    root = stage_root if staging_uri else lake / "_staging"
    root.mkdir(parents=True)
    (root / GOOD_ID).symlink_to(victim)
    run_id = str(victim) if case == "absolute" else ESCAPING_RESUMES[case]
    before = snapshot(tmp_path)
    settings = [f"run.staging_uri={stage_root}"] if staging_uri else []
    argv = run_argv(manifest, lake, *settings, extra=("--no-report", "--resume", run_id))

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert snapshot(tmp_path) == before  # byte for byte: the victim and the lake alike
    assert not (lake / "runs").exists()
    assert err.startswith("enrich: error: ") and len(err.splitlines()) == 1, err
    assert "is not a run id" in err or "cannot be used as a path" in err
    assert "Traceback" not in err
