"""spark-submit entry point: enrich a date range (or a list) of daily manifest partitions.

Manifests live as ``<manifests>/dt=YYYY-MM-DD/*.jsonl|csv|parquet``. Each day runs through the
Spark engine and MERGEs into the lake, so rerunning a day is safe: unchanged items are skipped
and nothing is duplicated.

    spark-submit --master yarn jobs/backfill.py --manifests s3://bucket/manifests \\
        --lake s3://bucket/lake --config configs/production.vllm.yaml \\
        --start 2026-11-01 --end 2026-11-07
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


def day_range(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise UsageError(f"--end {end} is before --start {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from jobs.common import add_config_args  # late: __main__ first puts the checkout on sys.path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifests", required=True, help="folder (path or URI) of dt=YYYY-MM-DD partitions"
    )
    parser.add_argument("--lake", required=True)
    add_config_args(parser)
    parser.add_argument("--start", help="first day, YYYY-MM-DD")
    parser.add_argument("--end", help="last day (inclusive); default: --start")
    parser.add_argument(
        "--partitions", nargs="*", default=[], help="explicit days instead of a range"
    )
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if not args.partitions and not args.start:
        parser.error("give --start [--end] or --partitions DAY ...")
    return args


def main(argv: list[str] | None = None) -> int:
    from core.config import load_config
    from core.redact import install_log_redaction
    from jobs.common import confine_to, offline_env
    from pipelines.commit import new_run_id
    from pipelines.driver import run_pipeline

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()
    offline_env()
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    confine_to(config, args.manifests)
    days = args.partitions or day_range(args.start, args.end or args.start)
    for day in days:
        manifests = partition_manifests(args.manifests, day)
        if not manifests:
            logger.warning("dt=%s: no manifest, nothing to do", day)
            continue
        summary = run_pipeline(
            config,
            manifests,
            args.lake,
            new_run_id(),
            input_label=f"dt={day}",
            engine="spark",
            force=args.force,
        )
        print(
            json.dumps(
                {
                    "day": day,
                    "run_id": summary.run_id,
                    "items": summary.items,
                    "succeeded": summary.succeeded,
                    "skipped": summary.skipped,
                    "failed": summary.failed,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
