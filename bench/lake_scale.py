"""Benchmark: does a daily commit's cost follow the day or the lake? Upsert one daily batch
(``--batch`` rows: 90% new items, 10% updates) into an ``embeddings`` table of each ``--sizes``
rows (384-d vectors, random hex item ids as in production, built in daily-batch-sized
files), ``--repeats`` times each on a fresh copy. Three update patterns:

- ``recent``: the updated items were first enriched in the last week (the newest 70,000):
  re-enrichment after an edit, a retry or a late transcript, the common case;
- ``uniform``: updated items drawn uniformly from the whole table;
- ``new_only``: the whole batch is new items.

Each reports the median, min and max seconds and what the commit touched (files scanned,
removed, added, bytes rewritten, rows copied), through ``DeltaStore.merge``; ``recent`` is
also run through delta-rs MERGE (the previous path) side by side.

Writes bench/results/lake_scale.json. Goal (issue 16): seconds at the largest size / seconds
at the smallest <= 2.0 for the daily batch (``recent``); the ratio printed last is that
quotient / 2.0 (<= 1.0 passes). ``uniform`` is reported, not gated: with copy-on-write, 1,000
updates spread over every file rewrite every file, whatever the layout (see README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tables import embedding_rows  # noqa: E402

GOAL = 2.0
BUILD_COMMIT_ROWS = 100_000  # the table is built in commits of this size (daily-batch files)


RECENT_ITEMS = 70_000  # a week of daily batches


def hex_ids(numbers) -> list[str]:
    return [hashlib.blake2b(str(n).encode(), digest_size=8).hexdigest() for n in numbers]


def rows_for(numbers: list[int], seed: int):
    table = embedding_rows(range(len(numbers)), seed)
    return table.set_column(0, "item_id", pa.array(hex_ids(numbers)))


def build(lake: Path, rows: int) -> None:
    """The table, as the store creates it, grown by appends of daily-batch-sized chunks in
    item order (an upsert per build step would make the build itself the slow part)."""
    from deltalake import write_deltalake

    from schemas.store import DeltaStore

    store = DeltaStore(lake)
    for start in range(0, rows, BUILD_COMMIT_ROWS):
        chunk = rows_for(list(range(start, min(rows, start + BUILD_COMMIT_ROWS))), 0)
        if start == 0:
            store.merge("embeddings", chunk)
        else:
            write_deltalake(store.path("embeddings"), chunk, mode="append")


def daily_batch(rows: int, batch: int, pattern: str, seed: int):
    """``batch`` rows: new items after the table's, and for ``recent``/``uniform`` 10% updates."""
    rng = np.random.default_rng(seed)
    count = 0 if pattern == "new_only" else batch // 10
    pool = min(rows, RECENT_ITEMS) if pattern == "recent" else rows
    updates = (rows - 1 - rng.choice(pool, size=count, replace=False)).tolist()
    new = list(range(rows, rows + batch - count))
    return rows_for(sorted(updates) + new, seed + 1)


def delta_rs_merge(store, source) -> None:
    (
        store.table("embeddings")
        .merge(source, predicate="t.item_id = s.item_id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def one_commit(template: Path, work: Path, source, path: str) -> dict:
    from schemas.store import DeltaStore
    from schemas.upsert import KEYED_COMMIT

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    os.sync()  # time the commit, not the write-back of the copy (3 GB at 2M rows)
    store = DeltaStore(work)
    started = time.perf_counter()
    if path == "store":
        store.merge("embeddings", source)
    else:
        delta_rs_merge(store, source)
    seconds = time.perf_counter() - started
    entry = store.table("embeddings").history(1)[0]
    if KEYED_COMMIT in entry:
        return {"seconds": seconds, **entry[KEYED_COMMIT]}
    metrics = entry.get("operationMetrics") or {}
    return {
        "seconds": seconds,
        "files_scanned": metrics.get("num_target_files_scanned"),
        "files_removed": metrics.get("num_target_files_removed"),
        "files_added": metrics.get("num_target_files_added"),
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


RUNS = [
    ("recent", "store"),
    ("recent", "delta_rs_merge"),
    ("uniform", "store"),
    ("new_only", "store"),
]


def measure(tmp: Path, args) -> dict:
    """Every size's table is built first; then each repeat runs every size and pattern in
    turn, so a noisy moment hits all of them alike."""
    templates = {rows: Path(tmp) / f"table{rows}" for rows in args.sizes}
    for rows, template in templates.items():
        build(template, rows)
    commits: dict[tuple, list[dict]] = {}
    for seed in range(args.repeats):
        for rows, template in templates.items():
            for pattern, path in RUNS:
                source = daily_batch(rows, args.batch, pattern, seed)
                commit = one_commit(template, Path(tmp) / "work", source, path)
                commits.setdefault((rows, pattern, path), []).append(commit)
                print(rows, pattern, path, round(commit["seconds"], 3), flush=True)
    figures: dict[str, dict] = {}
    for (rows, pattern, path), runs in commits.items():
        name = pattern if path == "store" else f"{pattern}_{path}"
        figures.setdefault(str(rows), {})[name] = summarize(runs)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 2_000_000])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        figures = measure(Path(tmp), args)
    small, large = str(min(args.sizes)), str(max(args.sizes))
    growth = {
        pattern: round(
            figures[large][pattern]["seconds_median"] / figures[small][pattern]["seconds_median"], 2
        )
        for pattern in figures[small]
    }
    result = {
        "batch": args.batch,
        "repeats": args.repeats,
        "sizes": figures,
        "growth": growth,
        "goal": f"recent: seconds at {large} / at {small} <= {GOAL}",
        "headline": ["growth.recent", "growth.recent_delta_rs_merge", "growth.uniform"]
        + [f"sizes.{s}.recent.seconds_median" for s in figures],
        "ratio": round(growth["recent"] / GOAL, 3),
    }
    (ROOT / "bench" / "results" / "lake_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
