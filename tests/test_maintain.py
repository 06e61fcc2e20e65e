"""``enrich maintain`` on a simulated history: 60 daily MERGEs into ``embeddings``, aged so
commit k happened 60 - k days ago, with releases pinning older versions."""

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main
from schemas import DeltaStore
from schemas.tables import EMBEDDINGS, RUNS

pytestmark = pytest.mark.slow

DAYS = 60
ROWS_PER_DAY = 2000
UPDATE_DAYS = (15, 25, 35, 45, 55)  # these days also update 100 items of day 0: a rewrite
PINNED = 39  # the newest release pins embeddings v39 (21 days ago)
OLDER_PINNED = 19  # an older release
DAY_MS = 86_400_000


def typed(schema: pa.Schema, n: int, **columns) -> pa.Table:
    """``n`` rows of ``schema``: the given columns, nulls elsewhere."""
    return pa.table([columns.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def day_rows(day: int, rng: np.random.Generator) -> pa.Table:
    """The day's MERGE source: new items, plus updates of day 0's items on update days."""
    updates = 100 if day in UPDATE_DAYS else 0
    ids = [f"d{day:03d}/{i:05d}" for i in range(ROWS_PER_DAY - updates)]
    ids += [f"d000/{i:05d}" for i in range(updates)]
    vectors = rng.standard_normal((len(ids), 8), dtype=np.float32)
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day)
    return typed(
        EMBEDDINGS,
        len(ids),
        item_id=pa.array(ids),
        embedding=pa.array(list(vectors), pa.list_(pa.float32())),
        dim=pa.array([8] * len(ids), pa.int32()),
        run_id=pa.array([f"day{day}"] * len(ids)),
        updated_at=pa.array([stamp] * len(ids), pa.timestamp("us", tz="UTC")),
    )


def age_log(table_dir: Path, days: int) -> None:
    """Make commit k look ``days - k`` days old: the timestamps delta-rs reads (commitInfo,
    add modificationTime, remove deletionTimestamp, the commit file's mtime) move back."""
    now_ms = int(time.time() * 1000)
    for path in sorted((table_dir / "_delta_log").glob("*.json")):
        shift = (days - int(path.stem)) * DAY_MS
        actions = [json.loads(line) for line in path.read_text().splitlines() if line]
        for action in actions:
            for kind, stamp in (
                ("commitInfo", "timestamp"),
                ("add", "modificationTime"),
                ("remove", "deletionTimestamp"),
            ):
                if action.get(kind, {}).get(stamp) is not None:
                    action[kind][stamp] -= shift
        path.write_text("".join(json.dumps(a) + "\n" for a in actions))
        os.utime(path, ((now_ms - shift) / 1000,) * 2)


def release(label: str, versions: dict[str, int], updated_at: datetime) -> dict:
    return {
        "release_id": label,
        "table_versions_json": json.dumps(versions),
        "run_id": "r",
        "updated_at": updated_at,
    }


@pytest.fixture(scope="module")
def year_lake(tmp_path_factory) -> Path:
    """The simulated lake (built once; each test works on a copy)."""
    lake = tmp_path_factory.mktemp("year") / "lake"
    store = DeltaStore(lake)
    rng = np.random.default_rng(0)
    for day in range(DAYS):
        store.merge("embeddings", day_rows(day, rng))
    age_log(lake / "embeddings", DAYS)
    for attempt in range(3):  # the errors table: rewrites of the same keys, just now
        rows = [{"item_id": f"bad{i}", "code": f"c{attempt}", "run_id": "r"} for i in range(5)]
        store.merge("errors", [{**r, "updated_at": datetime.now(UTC)} for r in rows])
    now = datetime.now(UTC)
    store.merge(
        "releases",
        [
            release("old", {"embeddings": OLDER_PINNED}, now - timedelta(days=40)),
            release("new", {"embeddings": PINNED}, now - timedelta(days=20)),
        ],
    )
    return lake


@pytest.fixture
def lake_copy(year_lake, tmp_path) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(year_lake, copy)
    return copy


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """The same item ids, and the same embedding for each (a checksum of the content)."""
    a, b = a.sort_by("item_id"), b.sort_by("item_id")
    vectors = [np.asarray(t.column("embedding").combine_chunks().flatten()) for t in (a, b)]
    return a.column("item_id").equals(b.column("item_id")) and np.array_equal(*vectors)


def readable(store: DeltaStore, version: int) -> bool:
    """Whether every file of embeddings ``version`` is still on storage."""
    return all(Path(p).exists() for p in store.table("embeddings", version).file_uris())


def snapshot(lake: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in lake.rglob("*") if p.is_file()}


def test_a_year_of_merges_compacts_and_vacuums_but_the_newest_release_stays_readable(
    lake_copy, capsys
):
    store = DeltaStore(lake_copy)
    files_before = len(store.table("embeddings").file_uris())
    latest, pinned = store.read("embeddings"), store.read("embeddings", version=PINNED)
    recent = store.read("embeddings", version=DAYS - 4)  # 4 days ago: inside the retention
    two_days_ago = datetime.now(UTC) - timedelta(days=2, hours=1)
    as_of = store.read("embeddings", as_of=two_days_ago)
    assert files_before == DAYS  # a file a day; an update day replaces day 0's file with one
    assert readable(store, OLDER_PINNED) and readable(store, PINNED - 5)

    started = time.perf_counter()
    assert main(["maintain", "--lake", str(lake_copy)]) == 0
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    print(out, f"maintain took {elapsed:.1f}s")

    assert len(store.table("embeddings").file_uris()) <= files_before // 5
    assert same_rows(store.read("embeddings"), latest)
    for name in ("errors", "releases"):
        assert store.read(name).num_rows == {"errors": 5, "releases": 2}[name]
    # The newest release's version reads in full, and so does time travel inside 7 days.
    assert readable(store, PINNED)
    assert same_rows(store.read("embeddings", version=PINNED), pinned)
    assert same_rows(store.read("embeddings", version=DAYS - 4), recent)
    assert same_rows(store.read("embeddings", as_of=two_days_ago), as_of)
    # VACUUM did delete: versions before the pinned one, outside the retention, are gone,
    # and so is the older release (only the newest is protected).
    assert not readable(store, PINNED - 5) and not readable(store, OLDER_PINNED)
    assert "release new pins v39" in out and "extended from 168 h" in out
    assert "embeddings" in out and "checkpoint v" in out
    assert list((lake_copy / "embeddings" / "_delta_log").glob("*.checkpoint.parquet"))


def test_forced_zero_retention_vacuums_everything_but_the_newest_release(lake_copy, capsys):
    store = DeltaStore(lake_copy)
    assert main(["maintain", "--lake", str(lake_copy), "--retention-hours", "0", "--force"]) == 0
    out = capsys.readouterr().out
    errors_files = [p for p in (lake_copy / "errors").glob("*.parquet")]
    assert len(errors_files) == len(store.table("errors").file_uris())  # rewrites deleted
    assert readable(store, PINNED) and store.read("embeddings", version=PINNED).num_rows
    assert "extended from 0 h" in out


def test_a_retention_under_seven_days_is_refused_without_force(lake_copy, capsys):
    before = snapshot(lake_copy)
    assert main(["maintain", "--lake", str(lake_copy), "--retention-hours", "24"]) == 2
    err = capsys.readouterr().err
    assert "under 168 h" in err and "time-travel" in err and "--force" in err
    assert "releases older than that stop working" in err
    assert snapshot(lake_copy) == before


def stage(lake: Path, run_id: str, age_days: float = 0) -> Path:
    """A run's staging folder with a plan and a task marker, files ``age_days`` old."""
    folder = lake / "_staging" / run_id
    (folder / "_tasks" / "enrich").mkdir(parents=True)
    for path in (folder / "_plan.json", folder / "_tasks" / "enrich" / "t0.json"):
        path.write_text("{}")
        stamp = time.time() - age_days * 86400
        os.utime(path, (stamp, stamp))
    return folder


def test_dead_staging_is_deleted_and_staging_a_run_needs_is_kept(tmp_path, capsys):
    lake = tmp_path / "lake"
    now = datetime.now(UTC)
    runs = [
        ("ok", "succeeded", 0.5),
        ("live", "running", 30),  # killed or slow: never touched
        ("young", "failed", 1),  # enrich run --resume may still want it
        ("old", "failed", 10),
    ]
    rows = typed(
        RUNS,
        len(runs),
        run_id=pa.array([r[0] for r in runs]),
        status=pa.array([r[1] for r in runs]),
        started_at=pa.array(
            [now - timedelta(days=r[2]) for r in runs], RUNS.field("started_at").type
        ),
        finished_at=pa.array(
            [None if r[1] == "running" else now - timedelta(days=r[2]) for r in runs],
            RUNS.field("finished_at").type,
        ),
        updated_at=pa.array([now] * len(runs), RUNS.field("updated_at").type),
    )
    DeltaStore(lake).merge("runs", rows)
    folders = {r[0]: stage(lake, r[0]) for r in runs}
    folders["new"] = stage(lake, "new")  # staged its plan, not yet in runs
    folders["stray"] = stage(lake, "stray", age_days=12)  # never recorded, long dead

    assert main(["maintain", "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    kept = {name for name, folder in folders.items() if folder.exists()}
    assert kept == {"live", "young", "new"}
    assert list((folders["live"] / "_tasks" / "enrich").iterdir())  # untouched inside too
    assert "kept         live (running)" in out and "enrich run --resume young" in out


def test_dry_run_changes_nothing(lake_copy, capsys):
    stage(lake_copy, "stray", age_days=12)
    before = snapshot(lake_copy)
    argv = ["maintain", "--lake", str(lake_copy), "--dry-run", "--retention-hours", "0", "--force"]
    assert main([*argv, "--cleanup-logs"]) == 0
    out = capsys.readouterr().out
    assert snapshot(lake_copy) == before
    assert "would compact" in out and "would checkpoint" in out and "would delete" in out
    assert "files would be vacuumed" in out and " 0 files would be vacuumed" not in out
