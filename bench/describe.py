"""Benchmark: batched describer throughput against batch=1.

Offline describer (real SmolLM2-135M) and the transformers backend (a tiny random-weight LLaVA,
so the figure is the batching machinery, not a real VLM's speed). Writes
bench/results/describe.json. Goal: batched ≥ 3× batch=1 in items/s; the ratio printed last is
goal / worst speed-up (≤ 1.0 passes).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITEMS = 8
GOAL_SPEEDUP = 3.0


def records() -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "item_id": f"clip{i}",
            "title": f"Clip number {i}",
            "tags": ["demo"],
            "duration_s": 5.0 + i,
            "width": 320,
            "height": 240,
            "fps": 25.0,
            "has_audio": True,
            "audio_rms": 0.1,
            "transcript": f"hello this is clip {i} about cooking pasta",
            "ocr_text": "RECIPE",
            "frame_stats": {"brightness": 0.5, "motion": 0.05},
            "frames": [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(4)],
        }
        for i in range(ITEMS)
    ]


def throughput(config, batch_size: int) -> dict:
    from transforms.describe import build_describer

    stage = build_describer(config.model_copy(update={"batch_size": batch_size}))
    stage.setup()
    items = records()
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        stage.process_batch(items[start : start + batch_size])
    seconds = time.perf_counter() - started
    tokens = sum(r.get("description_tokens", 0) for r in items)
    failed = sum(1 for r in items if r.get("error"))
    return {
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        "items_per_s": round(len(items) / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "failed": failed,
    }


def compare(name: str, config) -> dict:
    single, batched = throughput(config, 1), throughput(config, ITEMS)
    speedup = batched["items_per_s"] / single["items_per_s"]
    print(
        f"{name}: batch=1 {single['items_per_s']} items/s, batch={ITEMS} "
        f"{batched['items_per_s']} items/s, speed-up {speedup:.2f}x"
    )
    return {"batch_1": single, f"batch_{ITEMS}": batched, "speedup": round(speedup, 2)}


def main() -> None:
    from tests.tiny_vlm import build_tiny_llava
    from transforms.config import DescribeConfig

    results = {
        "offline_smollm2": compare("offline", DescribeConfig(max_new_tokens=48, min_new_tokens=48))
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_llava(Path(tmp))
        results["transformers_tiny_llava"] = compare(
            "transformers",
            DescribeConfig(
                backend="transformers",
                model=str(folder),
                gguf_file=None,
                max_new_tokens=48,
                min_new_tokens=48,
                max_images=4,
            ),
        )
    worst = min(r["speedup"] for r in results.values())
    result = {
        "benchmark": "describe",
        "items": ITEMS,
        "device": "cpu",
        **results,
        "goal": f"speed-up >= {GOAL_SPEEDUP}x",
        "worst_speedup": worst,
        "ratio": round(GOAL_SPEEDUP / worst, 3),
    }
    (ROOT / "bench" / "results" / "describe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
