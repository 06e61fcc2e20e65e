"""``enrich maintain``: keep a lake fast to read and small on storage, without breaking readers.

For every table present:

0. a table whose log references data files that are gone stops maintenance with a clear
   message, unless ``--repair`` drops those files from the table (delta-rs FSCK: their rows
   are lost; restoring the files instead keeps them);
1. compact: small Parquet files are rewritten into files of about ``--target-file-mb``
   (delta-rs ``optimize.compact``; the rows do not change, a new version is committed);
2. VACUUM: files that no version inside the retention needs are deleted. The retention
   (``--retention-hours``, default 168 = 7 days) is extended per table so the table versions
   pinned by the newest release stay readable; under 168 h it needs ``--allow-unsafe-retention``;
3. checkpoint: a Parquet checkpoint of the log, so readers need not replay every JSON commit
   (after VACUUM: a checkpoint leaves out tombstones older than the table's retention, and
   VACUUM only deletes files it still knows as tombstones); ``--cleanup-logs`` also deletes
   expired log files, unless the newest release pins a version whose log they hold.

Then staging folders (``<lake>/_staging/<run_id>/``) that no run needs are deleted: those of
succeeded runs, and those of failed, interrupted (or unrecorded) runs older than
``--staging-days``. A ``running`` run's staging is kept while it is younger than that, or
was written to within it; older, the run was killed outright (kill -9, a lost machine) and
its staging goes too. A folder that is a link out of the staging root is never followed.
``--dry-run`` changes nothing and says what it would do.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import UsageError

logger = logging.getLogger(__name__)

SAFE_RETENTION_HOURS = 168  # Delta's default deletedFileRetentionDuration: 7 days
MARGIN_HOURS = 1  # a remove's deletionTimestamp can precede its commit's timestamp
DEFAULT_LOG_RETENTION = timedelta(days=30)  # Delta's default delta.logRetentionDuration
MB = 1 << 20


@dataclass
class TableReport:
    """What maintenance did (or would do) to one table."""

    name: str
    files_before: int = 0
    files_after: int = 0
    stored_before: int = 0
    stored_after: int = 0
    retention_hours: int | None = None
    retention_why: str = ""
    repaired: int = 0
    vacuumed: int = 0
    checkpoint: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StagingFolder:
    """A run's staging folder and what maintenance does with it."""

    uri: str
    run_id: str
    status: str
    delete: bool
    why: str


def add_parser(commands) -> None:
    """Register ``enrich maintain``."""
    parser = commands.add_parser(
        "maintain", help="compact, checkpoint and VACUUM every table; delete dead staging"
    )
    from jobs.common import add_config_args, add_lake_arg, add_renamed

    add_lake_arg(parser)
    add_config_args(parser, reads="run.staging_uri: where the runs stage")
    parser.add_argument(
        "--target-file-mb", type=int, default=128, help="compaction target file size"
    )
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=SAFE_RETENTION_HOURS,
        help="VACUUM keeps what versions of the last N hours need (168 = 7 days); "
        "extended per table to keep the newest release readable",
    )
    add_renamed(
        parser,
        "--allow-unsafe-retention",
        "--force",
        action="store_true",
        help="allow --retention-hours under 168 (breaks older time-travel reads)",
    )
    parser.add_argument(
        "--cleanup-logs",
        action="store_true",
        help="also delete log files older than delta.logRetentionDuration (30 days)",
    )
    parser.add_argument(
        "--staging-days",
        type=float,
        default=7,
        help="keep a failed or interrupted run's staging (for enrich run --resume) this many "
        "days; a run still recorded running whose staging is older goes too (killed outright)",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="drop from each table the data files its log references that are gone (their "
        "rows are lost; restore the files instead to keep them)",
    )
    parser.add_argument(
        "--staging-uri",
        help="the runs' staging root (default: run.staging_uri of --config, else <lake>/_staging)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be done only")
    parser.set_defaults(handler=command_maintain)


def check_retention(hours: int, force: bool) -> None:
    """Refuse a retention that breaks readers, unless forced."""
    if hours < 0:
        raise UsageError(f"--retention-hours {hours}: must be 0 or more")
    if hours < SAFE_RETENTION_HOURS and not force:
        raise UsageError(
            f"--retention-hours {hours} is under {SAFE_RETENTION_HOURS} h (7 days): VACUUM "
            f"would delete the files of table versions older than {hours} h, so time-travel "
            "reads (as_of, --table-version) and releases older than that stop working, and queries "
            "running now may lose files mid-read. Pass --allow-unsafe-retention (formerly --force) "
            "to do it anyway "
            "(the newest release stays protected)"
        )


# -- releases -----------------------------------------------------------------------------------
def newest_release(store) -> tuple[str | None, dict[str, int]]:
    """The newest release's label and the table versions it pins (none: ``(None, {})``)."""
    if not store.exists("releases"):
        return None, {}
    rows = store.read("releases", columns=["release_id", "table_versions_json", "updated_at"])
    if not rows.num_rows:
        return None, {}
    newest = max(rows.to_pylist(), key=lambda r: r["updated_at"])
    pinned = json.loads(newest["table_versions_json"] or "{}")
    return newest["release_id"], {k: int(v) for k, v in pinned.items() if v is not None}


def commit_time(table, version: int) -> datetime | None:
    """When ``version`` of the loaded table was committed (None when its log is gone)."""
    depth = table.version() - version + 1
    for entry in table.history(depth):
        if entry.get("version") == version and entry.get("timestamp") is not None:
            return datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
    return None


def protected_retention(
    table, name: str, release: str | None, pinned: int | None, hours: int, now: datetime
) -> tuple[int | None, str]:
    """The VACUUM retention for one table, and why: at least ``hours``, extended so the files
    of the release's pinned version survive. Files that version reads were removed by later
    commits, so their removal is no older than the first commit after it. None: do not
    vacuum (the log no longer says when that was)."""
    if pinned is None:
        return hours, "no release pins this table"
    current = table.version()
    if pinned >= current:
        return hours, f"release {release} pins v{pinned}, the current version"
    after = commit_time(table, pinned + 1)
    if after is None:
        return None, (
            f"release {release} pins v{pinned}, but the log no longer dates v{pinned + 1}: "
            "not vacuumed"
        )
    needed = math.ceil((now - after).total_seconds() / 3600) + MARGIN_HOURS
    if needed <= hours:
        return hours, (
            f"release {release} pins v{pinned}; the commits after it (from "
            f"{after:%Y-%m-%d %H:%M} UTC) are inside the retention"
        )
    return needed, (
        f"extended from {hours} h: release {release} pins v{pinned}; commits from v{pinned + 1} "
        f"({after:%Y-%m-%d %H:%M} UTC) on may have removed files it reads"
    )


# -- one table ----------------------------------------------------------------------------------
def stored_files(store, name: str) -> int:
    """Data files of a table on storage, referenced or not (the log not counted)."""
    from core import storage

    files = storage.list_files(store.path(name))
    return sum(1 for f in files if "/_delta_log/" not in f and f.endswith(".parquet"))


def compact(store, name: str, target_bytes: int, dry_run: bool, report: TableReport) -> None:
    """Rewrite the table's small files into files of about ``target_bytes``."""
    from deltalake.exceptions import CommitFailedError

    table = store.table(name)
    sizes = table.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    report.files_before = len(sizes)
    small = sum(1 for s in sizes if s < target_bytes)
    if dry_run:
        report.files_after = report.files_before
        if small > 1:
            report.notes.append(f"would compact {small} files under {target_bytes // MB} MB")
        return
    try:
        table.optimize.compact(target_size=target_bytes)
    except CommitFailedError as exc:  # a writer committed first: the next maintain compacts
        report.notes.append(f"compaction skipped, a concurrent write committed first ({exc})")
    report.files_after = len(store.table(name).file_uris())


def vacuum(
    store, name: str, hours: int | None, force: bool, dry_run: bool, report: TableReport
) -> None:
    """Delete the files no version inside ``hours`` needs (list them with ``dry_run``)."""
    if hours is None:
        return
    table = store.table(name)
    try:
        deleted = table.vacuum(
            retention_hours=hours,
            dry_run=dry_run,
            enforce_retention_duration=not force and hours >= SAFE_RETENTION_HOURS,
        )
    except Exception as exc:  # noqa: BLE001 - delta-rs raises DeltaError for a refused retention
        raise ValueError(f"VACUUM of table '{name}' under {store.lake} failed: {exc}") from exc
    report.vacuumed = len(deleted)


def log_retention(table) -> timedelta | None:
    """The table's ``delta.logRetentionDuration`` (None when it cannot be read)."""
    text = table.metadata().configuration.get("delta.logRetentionDuration")
    if not text:
        return DEFAULT_LOG_RETENTION
    found = re.fullmatch(r"\s*interval\s+(\d+)\s+(\w+?)s?\s*", text.lower())
    units = {"week": 604800, "day": 86400, "hour": 3600, "minute": 60, "second": 1}
    if not found or found.group(2) not in units:
        return None
    return timedelta(seconds=int(found.group(1)) * units[found.group(2)])


def checkpoint(
    store, name: str, pinned: int | None, cleanup: bool, dry_run: bool, report: TableReport
) -> None:
    """Checkpoint the current version; with ``cleanup``, delete expired log files unless the
    release's pinned version is older than the log retention (its log would go)."""
    table = store.table(name)
    verb = "would checkpoint" if dry_run else "checkpoint"
    report.checkpoint = f"{verb} v{table.version()}"
    if not dry_run:
        table.create_checkpoint()
    if not cleanup:
        return
    keep = log_retention(table)
    pinned_at = commit_time(table, pinned) if pinned is not None else None
    now = datetime.now(UTC)
    if keep is None or (pinned is not None and (pinned_at is None or now - pinned_at >= keep)):
        report.notes.append("log cleanup skipped: it would delete the pinned release's log")
        return
    if not dry_run:
        table.cleanup_metadata()
    report.checkpoint += ", expired logs " + ("would be deleted" if dry_run else "deleted")


def repair(store, name: str, allowed: bool, dry_run: bool, report: TableReport) -> None:
    """Drop the files the log references that are gone (``--repair``); without it, a damaged
    table stops maintenance (compacting it would fail half-way)."""
    from schemas.store import damaged_table_error

    missing = store.missing_files(name)
    if not missing:
        return
    if not allowed:
        raise damaged_table_error(store, name, missing)
    store.table(name).repair(dry_run=dry_run)
    report.repaired = len(missing)
    verb = "would drop" if dry_run else "dropped"
    report.notes.append(f"repair: {verb} {len(missing)} missing data file(s) from the log")


def maintain_table(
    store, name: str, args: argparse.Namespace, release: str | None, pinned: dict[str, int]
) -> TableReport:
    report = TableReport(name, stored_before=stored_files(store, name))
    repair(store, name, args.repair, args.dry_run, report)
    compact(store, name, args.target_file_mb * MB, args.dry_run, report)
    now = datetime.now(UTC)
    hours, why = protected_retention(
        store.table(name), name, release, pinned.get(name), args.retention_hours, now
    )
    report.retention_hours, report.retention_why = hours, why
    vacuum(store, name, hours, args.allow_unsafe_retention, args.dry_run, report)
    checkpoint(store, name, pinned.get(name), args.cleanup_logs, args.dry_run, report)
    report.stored_after = stored_files(store, name)
    return report


# -- staging ------------------------------------------------------------------------------------
def _last_written(uri: str) -> datetime | None:
    """When a staging folder's newest file was written (None: it holds none)."""
    from core import storage

    stamps = [storage.info(f).mtime for f in storage.list_files(uri)]
    return max((s for s in stamps if s is not None), default=None)


def _age(run: dict[str, Any] | None, uri: str, now: datetime) -> timedelta:
    """How long a run has been quiet: since it ended, or for a run recorded ``running`` (or
    not recorded) since it started or last wrote to its staging, whichever is later."""
    ended = run and run.get("finished_at")
    moments = [ended] if ended else [run and run.get("started_at"), _last_written(uri)]
    moments = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments if m is not None]
    return now - max(moments) if moments else timedelta(0)


def staging_plan(store, root: str, staging_days: float, now: datetime) -> list[StagingFolder]:
    """Every run's staging folder under ``root``, with whether to delete it and why."""
    from core import storage

    runs = {
        r["run_id"]: r
        for r in store.read_or_empty(
            "runs", columns=["run_id", "status", "started_at", "finished_at"]
        ).to_pylist()
    }
    keep_for = timedelta(days=staging_days)
    plan = []
    for uri in storage.list_dirs(root):
        run_id = uri.rstrip("/").rsplit("/", 1)[-1]  # as listed: name_of would follow a link
        try:
            storage.join_under(root, run_id)  # a link out of the root is never followed
        except storage.PathEscape as exc:
            plan.append(StagingFolder(uri, run_id, "not a run's", False, f"kept: {exc}"))
            continue
        run = runs.get(run_id)
        status = run["status"] if run else "unrecorded"
        if status == "succeeded":
            plan.append(StagingFolder(uri, run_id, status, True, "the run succeeded"))
            continue
        # failed, interrupted, never recorded (a run records itself just after staging its
        # plan), or running: a running run quiet for longer was killed outright
        age = _age(run, uri, now)
        days = age.total_seconds() / 86400
        if age < keep_for and status == "running":
            why = "the run is running"
        elif age < keep_for:
            why = f"{days:.1f} days old: kept for enrich run --resume {run_id}"
        elif status == "running":
            why = f"recorded running but quiet for {days:.1f} days (killed outright?)"
        else:
            why = f"{days:.1f} days old, over --staging-days {staging_days:g}"
        plan.append(StagingFolder(uri, run_id, status, age >= keep_for, why))
    return plan


# -- the command --------------------------------------------------------------------------------
def command_maintain(args: argparse.Namespace) -> int:
    from core import storage
    from core.config import load_config
    from pipelines.staging import staging_root
    from schemas.store import DeltaStore
    from schemas.tables import TABLES

    check_retention(args.retention_hours, args.allow_unsafe_retention)
    staging_uri = args.staging_uri or load_config(args.config, args.overrides).run.staging_uri
    if args.target_file_mb < 1:
        raise UsageError(f"--target-file-mb {args.target_file_mb}: must be 1 or more")
    store = DeltaStore(args.lake)
    store.require_lake()
    release, pinned = newest_release(store)
    mode = " (dry run: nothing is changed)" if args.dry_run else ""
    print(f"maintain {store.lake}{mode}")
    if release:
        print(f"newest release: {release}, pins {json.dumps(pinned, sort_keys=True)}")
    reports = [
        maintain_table(store, name, args, release, pinned) for name in TABLES if store.exists(name)
    ]
    root = staging_root(store.lake, staging_uri)
    staging = staging_plan(store, root, args.staging_days, datetime.now(UTC))
    for folder in staging:
        if folder.delete and not args.dry_run:
            storage.delete_tree(folder.uri)
    print_summary(reports, staging, args)
    return 0


def print_summary(
    reports: list[TableReport], staging: list[StagingFolder], args: argparse.Namespace
) -> None:
    would = "would be " if args.dry_run else ""
    print(
        f"\n{'table':<14} {'active files':>14} {'stored files':>14} {'retention':>10} "
        f"{'vacuumed':>9}  checkpoint"
    )
    for r in reports:
        retention = "skipped" if r.retention_hours is None else f"{r.retention_hours} h"
        print(
            f"{r.name:<14} {r.files_before:>6} -> {r.files_after:<5} "
            f"{r.stored_before:>6} -> {r.stored_after:<5} {retention:>10} {r.vacuumed:>9}  "
            f"{r.checkpoint}"
        )
    print(
        "\nretention per table (VACUUM " + would + "deletes files only versions older than it "
        "need):"
    )
    for r in reports:
        print(f"  {r.name}: {r.retention_why}")
        for note in r.notes:
            print(f"  {r.name}: {note}")
    print(
        f"A table version stays readable (as_of, --table-version, an older release) only while the "
        f"commits that replaced its files are younger than the retention ({args.retention_hours}"
        " h, or longer where extended above); only the newest release is kept readable "
        "however old it is."
    )
    if staging:
        print(f"\nstaging ({len(staging)} runs):")
        for s in staging:
            action = ("would delete" if args.dry_run else "deleted") if s.delete else "kept"
            print(f"  {action:<12} {s.run_id} ({s.status}): {s.why}")
    deleted = sum(s.delete for s in staging)
    print(
        f"\nmaintain: {len(reports)} tables, {sum(r.vacuumed for r in reports)} files "
        f"{would}vacuumed, {deleted} staging folders {would}deleted"
    )
