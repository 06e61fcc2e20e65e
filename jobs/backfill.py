"""spark-submit entry point: enrich a date range (or a list) of daily manifest partitions.

Manifests live as ``<manifests>/dt=YYYY-MM-DD/*.jsonl|csv|parquet``. Each day is one run of
``enrich run`` (the Spark engine by default) and MERGEs into the lake, so rerunning a day is
safe: unchanged items are skipped and nothing is duplicated. The job takes the options of
``enrich run`` (``--config``, ``--set``, ``--engine-arg``, ``--resume``, ``--force``,
``--json``, ``--report``, ``--require-describer``, ...), runs each day through the same code,
prints the same summary (then one JSON line per day, for schedulers) and exits with the same
codes: 0, 1 when a day fails (the days after it are not run), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date, timedelta
from pathlib import Path

from core.errors import UsageError

logger = logging.getLogger("enrich.backfill")
EXAMPLES = """examples:
  spark-submit --master yarn jobs/backfill.py --manifests s3://bucket/manifests \\
      --lake s3://bucket/lake --config configs/production.vllm.yaml \\
      --start 2026-11-01 --end 2026-11-07 --require-describer
  spark-submit jobs/backfill.py --manifests manifests --lake lake --partitions 2026-11-02 \\
      --resume 20261102T000000Z-1a2b3c4d"""


def day_range(start: str, end: str) -> list[str]:
    first, last = _day(start, "--start"), _day(end, "--end")
    if last < first:
        raise UsageError(f"--end {end} is before --start {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: write the day as YYYY-MM-DD") from None


def partition_manifests(root: str, day: str) -> list[str]:
    """The manifest files of one day's partition, on any storage."""
    from core import storage
    from transforms.manifest import MANIFEST_FORMATS

    folder = storage.join(root, f"dt={day}")
    return [
        uri
        for uri in storage.list_files(folder, recursive=False)
        if Path(uri).suffix.lower() in MANIFEST_FORMATS
    ]


def build_parser() -> argparse.ArgumentParser:
    """``enrich run``'s options but ``--input``, plus the partitions to run."""
    from jobs.cli import add_run_options  # late: __main__ first puts the checkout on sys.path
    from jobs.common import EnrichParser, forget_warnings

    forget_warnings()
    parser = EnrichParser(prog="backfill.py", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--manifests",
        required=True,
        metavar="FOLDER",
        help="folder (path or URI) of dt=YYYY-MM-DD partitions",
    )
    parser.add_argument("--start", metavar="DAY", help="first day, YYYY-MM-DD")
    parser.add_argument("--end", metavar="DAY", help="last day (inclusive); default: --start")
    parser.add_argument(
        "--partitions", nargs="*", default=[], metavar="DAY", help="explicit days instead"
    )
    add_run_options(parser, default_engine="spark")
    parser.set_defaults(handler=command_backfill, json_lists_runs=True)
    return parser


def selected_days(args: argparse.Namespace) -> list[str]:
    """The days asked for, checked before any work (exit 2)."""
    if args.partitions and args.start:
        raise UsageError("give --start [--end] or --partitions DAY ..., not both")
    if args.partitions:
        days = [_day(day, "--partitions").isoformat() for day in args.partitions]
    elif args.start:
        days = day_range(args.start, args.end or args.start)
    else:
        raise UsageError("give --start [--end] or --partitions DAY ...")
    if len(days) > 1 and args.resume:
        raise UsageError("--resume RUN_ID finishes one run: give the one day it ran")
    if len(days) > 1 and args.report:
        raise UsageError("--report FILE names one report: with several days, leave it out")
    return days


def command_backfill(args: argparse.Namespace) -> int:
    """Each day with a manifest: one run, as ``enrich run`` does it."""
    from jobs.cli import run_config, run_once

    days = selected_days(args)
    config = run_config(args, args.manifests)
    finished: list[dict] = []
    for day in days:
        manifests = partition_manifests(args.manifests, day)
        if not manifests:
            logger.warning("dt=%s: no manifest, nothing to do", day)
            continue
        run_once(args, config.model_copy(deep=True), manifests, f"dt={day}", args.resume, finished)
        print(json.dumps({"day": day, **day_line(finished[-1])}))
    return 0


def day_line(summary: dict) -> dict:
    """The figures a scheduler reads from a day's JSON line."""
    return {key: summary[key] for key in ("run_id", "items", "succeeded", "skipped", "failed")}


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import main as enrich_main

    return enrich_main(argv, parser=build_parser())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
