"""Benchmark: choose tiger's settings (prefix n-grams, learning rate, width, epochs) on a
validation split of MovieLens-100K, never on the test cases.

The validation split lives inside the training sequences (``evaluation.generative.holdout_last``:
each user's last training item is the target); the test cases of ``evaluation.split`` are not
passed to the tuning at all. Each grid point trains once (seed 0), keeping its best epoch on
validation (``evaluate.tiger_patience``). Reads a lake built by ``bench/evaluate.py``'s steps
(``enrich run`` + ``enrich fit-sids --assign``) and its interactions file:

    python bench/tiger_tuning.py LAKE INTERACTIONS.parquet

Writes bench/results/tiger_tuning.json (grid rows best first, and the chosen point).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = [
    {"tiger_prefix_ngrams": False, "tiger_lr": 3e-3, "tiger_dim": 64},
    {"tiger_prefix_ngrams": True, "tiger_lr": 3e-3, "tiger_dim": 64},
    {"tiger_prefix_ngrams": True, "tiger_lr": 1e-2, "tiger_dim": 64},
]


def main(lake: str, interactions: str) -> None:
    import pyarrow.parquet as pq
    import torch

    from bench.evaluate import EVALUATE
    from core.config import EvaluateConfig
    from evaluation.generative import sid_catalog
    from evaluation.harness import tune_tiger
    from evaluation.split import leave_last_out
    from pipelines.evaluation import load_features
    from schemas import DeltaStore

    torch.set_num_threads(1)
    started = time.perf_counter()
    store = DeltaStore(lake)
    versions = {t: store.version(t) for t in ("embeddings", "semantic_ids", "descriptions")}
    features = load_features(store, versions)
    catalog_items = set(features.embeddings) | set(features.texts) | set(features.codes)
    config = EvaluateConfig(**{k: v for k, v in EVALUATE.items() if k != "seeds"})
    split = leave_last_out(
        pq.read_table(interactions), catalog_items, config.cold_fraction, config.head_share, 0
    )
    catalog = sid_catalog(split, features.codes, features.dedup)
    rows = tune_tiger(catalog, split, config, GRID)
    result = {
        "benchmark": "tiger_tuning",
        "data": "MovieLens-100K, the bench/evaluate.py lake (3 x 32 codes + dedup token)",
        "protocol": "validation = each user's last training item (test cases never read); "
        "seed 0; best epoch kept (patience 3); validation HR@10 from a beam of 10",
        "grid": rows,
        "chosen": rows[0],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path = ROOT / "bench" / "results" / "tiger_tuning.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
