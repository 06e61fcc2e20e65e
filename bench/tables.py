"""Benchmark: MERGE 200k rows of 384-d embeddings (50% updates) into a 200k-row table, against
writing the same rows as raw Parquet with pyarrow; plus an incremental rerun over an unchanged
corpus against its first run.

Writes bench/results/tables.json. Goals: MERGE throughput ≥ 0.8 of raw Parquet; incremental
rerun ≤ 0.05 of the first run. The ratio printed last is the worse of the two normalized to
its goal (≤ 1.0 passes).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS, DIM = 200_000, 384


def embedding_rows(ids: range, seed: int) -> pa.Table:
    from schemas.tables import EMBEDDINGS

    vectors = np.random.default_rng(seed).normal(size=(len(ids), DIM)).astype(np.float32)
    now = datetime.now(UTC)
    columns = {
        "item_id": pa.array([f"item{i:07d}" for i in ids]),
        "embedding": pa.ListArray.from_arrays(
            np.arange(0, len(ids) * DIM + 1, DIM, dtype=np.int32), pa.array(vectors.reshape(-1))
        ),
        "dim": pa.array([DIM] * len(ids), pa.int32()),
        "encoder": pa.array(["bench@1"] * len(ids)),
        "run_id": pa.array(["bench"] * len(ids)),
        "updated_at": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
    }
    return pa.Table.from_pydict(
        {f.name: columns.get(f.name, pa.nulls(len(ids), f.type)) for f in EMBEDDINGS},
        schema=EMBEDDINGS,
    )


def merge_vs_parquet(tmp: Path) -> dict:
    from schemas.store import DeltaStore

    store = DeltaStore(tmp / "lake")
    store.merge("embeddings", embedding_rows(range(ROWS), seed=0))
    batch = embedding_rows(range(ROWS // 2, ROWS // 2 + ROWS), seed=1)  # 50% updates
    started = time.perf_counter()
    store.merge("embeddings", batch)
    merge_s = time.perf_counter() - started
    assert store.read("embeddings", columns=["item_id"]).num_rows == ROWS + ROWS // 2
    started = time.perf_counter()
    pq.write_table(batch, tmp / "raw.parquet")
    parquet_s = time.perf_counter() - started
    return {
        "merge_s": round(merge_s, 2),
        "raw_parquet_s": round(parquet_s, 2),
        "merge_rows_per_s": round(ROWS / merge_s),
        "raw_rows_per_s": round(ROWS / parquet_s),
        "throughput_ratio": round(parquet_s / merge_s, 3),
    }


def incremental_rerun(tmp: Path) -> dict:
    from jobs.cli import main
    from jobs.demo_media import build_demo_corpus

    manifest = build_demo_corpus(tmp / "media")
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        assert (
            main(
                [
                    "run",
                    "--input",
                    str(manifest),
                    "--lake",
                    str(tmp / "demo_lake"),
                    "--config",
                    str(ROOT / "configs" / "demo.yaml"),
                ]
            )
            == 0
        )
        seconds.append(time.perf_counter() - started)
    return {
        "first_run_s": round(seconds[0], 2),
        "unchanged_rerun_s": round(seconds[1], 2),
        "rerun_ratio": round(seconds[1] / seconds[0], 4),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        merge = merge_vs_parquet(Path(tmp))
        print(merge, flush=True)
        rerun = incremental_rerun(Path(tmp))
    result = {
        "benchmark": "tables",
        "rows": ROWS,
        "dim": DIM,
        "merge": merge,
        "incremental": rerun,
        "goals": {"merge throughput / raw parquet": ">= 0.8", "rerun / first run": "<= 0.05"},
        "ratio": round(max(0.8 / merge["throughput_ratio"], rerun["rerun_ratio"] / 0.05), 3),
    }
    (ROOT / "bench" / "results" / "tables.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
