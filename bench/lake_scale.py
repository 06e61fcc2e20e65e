"""Benchmark: does a daily commit's cost follow the day or the lake? MERGE one daily batch
(``--batch`` rows, 90% new items, 10% updates of random existing items) into an ``embeddings``
table of each ``--sizes`` rows (384-d vectors, built in daily-commit-sized files), ``--repeats``
times each on a fresh copy, and report the median, min and max seconds with the files and bytes
each MERGE rewrote (delta-rs operationMetrics).

Writes bench/results/lake_scale.json. Goal (issue 16): seconds at the largest size ÷ seconds at
the smallest ≤ 2.0; the ratio printed last is that quotient ÷ 2.0 (≤ 1.0 passes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import embedding_rows  # noqa: E402

GOAL = 2.0
BUILD_COMMIT_ROWS = 100_000  # the table is built in commits of this size (daily-batch files)


def build(lake: Path, rows: int) -> None:
    """The table, as the store creates it, grown by appends (a MERGE per build step would
    scan the growing table and make the build itself the slow part)."""
    from deltalake import write_deltalake

    from schemas.store import DeltaStore

    store = DeltaStore(lake)
    for start in range(0, rows, BUILD_COMMIT_ROWS):
        chunk = embedding_rows(range(start, min(rows, start + BUILD_COMMIT_ROWS)), 0)
        if start == 0:
            store.merge("embeddings", chunk)
        else:
            write_deltalake(store.path("embeddings"), chunk, mode="append")


def daily_batch(rows: int, batch: int, seed: int):
    """90% new ids after the table's, 10% random existing ids."""
    rng = np.random.default_rng(seed)
    updates = sorted(rng.choice(rows, size=batch // 10, replace=False).tolist())
    new = list(range(rows, rows + batch - len(updates)))
    return embedding_rows(updates + new, seed + 1)


def one_merge(template: Path, work: Path, rows: int, batch: int, seed: int) -> dict:
    from schemas.store import DeltaStore

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    store = DeltaStore(work)
    source = daily_batch(rows, batch, seed)
    started = time.perf_counter()
    store.merge("embeddings", source)
    seconds = time.perf_counter() - started
    metrics = store.table("embeddings").history(1)[0].get("operationMetrics") or {}
    return {
        "seconds": seconds,
        "files_added": metrics.get("num_target_files_added"),
        "files_removed": metrics.get("num_target_files_removed"),
        "rows_copied": metrics.get("num_target_rows_copied"),
        "rows_updated": metrics.get("num_target_rows_updated"),
        "rows_inserted": metrics.get("num_target_rows_inserted"),
    }


def summarize(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds_median": round(statistics.median(seconds), 3),
        "seconds_min": round(min(seconds), 3),
        "seconds_max": round(max(seconds), 3),
        **{k: runs[0][k] for k in runs[0] if k != "seconds"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 2_000_000])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for rows in args.sizes:
            template = Path(tmp) / f"table{rows}"
            build(template, rows)
            runs = [
                one_merge(template, Path(tmp) / "work", rows, args.batch, seed)
                for seed in range(args.repeats)
            ]
            figures[str(rows)] = summarize(runs)
            shutil.rmtree(template)
            print(rows, figures[str(rows)], flush=True)
    small, large = figures[str(min(args.sizes))], figures[str(max(args.sizes))]
    growth = large["seconds_median"] / small["seconds_median"]
    result = {
        "batch": args.batch,
        "sizes": figures,
        "growth": round(growth, 2),
        "goal": f"seconds at {max(args.sizes)} / at {min(args.sizes)} <= {GOAL}",
        "headline": ["growth"] + [f"sizes.{s}.seconds_median" for s in figures],
        "ratio": round(growth / GOAL, 3),
    }
    (ROOT / "bench" / "results" / "lake_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
