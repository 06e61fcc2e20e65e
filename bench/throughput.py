"""Benchmark: a served describer kept busy by the streaming task runtime, against an
OpenAI-compatible endpoint on 127.0.0.1 of fixed capacity.

The endpoint is a LOAD MODEL of a vLLM server in steady state, not vLLM (which cannot run
here): C requests are served at once, each held L seconds, more wait in its queue
(tests/fake_openai_server.py ``serve_with_capacity``). Its capacity is C/L items/s. The input
is the demo clips repeated; the prep ahead of the describer is the media stage (ASR, audio
events, OCR and visual tags off, so the prep rate is high enough on 2 cores to make both
regimes reachable).

Everything runs in this process, through one ``pipelines.worker.Worker`` kept warm as the
local engine keeps it for a run: its models are loaded and its media worker processes started
(by a small warm-up task) before anything is timed, so no figure counts a start-up.

- The prep rate P: the media stage alone over the corpus, run as a task runs it
  (``pipelines.tasks.run_streaming``, each input fetched and hashed by the stream's source,
  the media stage in its ``run.prep_processes`` worker processes), with nothing after it.
- A run: the whole corpus as one ``pipelines.tasks.enrich_task`` (fetch, every stage, the
  rows staged as Parquet); items/s is the item count over the task's wall time (first item
  read to last row staged; what the runs summary sums as ``runtime.task_wall_s``), so no lake
  commit and no Semantic-ID fit are counted.

Two regimes, sized from P measured first (``--repeats`` times, the median):
- server-bound (C/L = P/2): goal items/s >= 0.9 C/L, and the endpoint has fewer than C
  requests in service for at most 10% of the time after its first request;
- prep-bound (C/L = 4P): goal items/s >= 0.85 P.
Each repeat then measures P again beside its two runs (P, server-bound, prep-bound, side by
side in this process); the prep-bound goal reads the medians of those. The serial runtime is
gone from the product; bench/runtime_cpu.py keeps a serial baseline for comparison.

    .venv/bin/python bench/throughput.py [--items 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SLOTS = 8
SERVER_GOAL, IDLE_GOAL, PREP_GOAL = 0.9, 0.10, 0.85
PREP_ONLY = [
    "asr.enabled=false",
    "audio.enabled=false",
    "ocr.enabled=false",
    "visual.enabled=false",
]
WARM_ITEMS = 8
NOTE = (
    "2 shared cores (another engineer's test runs overlap at times): figures are noisy, so "
    "the prep rate is measured again beside each repeat's runs and medians are given"
)


def corpus(folder: Path, items: int) -> Path:
    """The demo's good clips repeated to ``items`` rows with distinct ids."""
    from jobs.demo_media import build_demo_corpus

    clips = [json.loads(line) for line in build_demo_corpus(folder).read_text().splitlines()]
    clips = [c for c in clips if c.get("uri")]
    rows = [
        {**clips[n % len(clips)], "item_id": f"{clips[n % len(clips)]['item_id']}-{n:04d}"}
        for n in range(items)
    ]
    manifest = folder / f"repeated-{items}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def bench_config(endpoint: str, items: int):
    from core.config import load_config

    settings = [
        *PREP_ONLY,
        "describe.backend=openai",
        f"describe.endpoint={endpoint}",
        "describe.model=served/vlm",
        f"describe.concurrency={2 * SLOTS}",  # above the server's slots: its queue never drains
        f"describe.batch_size={2 * SLOTS}",
        f"run.items_per_task={items}",  # one task: the stream is not cut at task boundaries
    ]
    return load_config(ROOT / "configs" / "demo.yaml", settings)


def prep_rate(worker, config, manifest: Path) -> float:
    """Items/s of the prep stage alone (the media stage), run as a streaming task runs it:
    inputs fetched by the stream's source, the stage in its worker processes."""
    from pipelines.tasks import release_media, run_streaming
    from transforms.manifest import read_input
    from transforms.media import fetch_input

    [media] = [r for r in worker.runners(config.model_dump_json()) if r.name == "media"]
    records = read_input(manifest)

    def fetched():
        for record in records:
            fetch_input(record, config.media)
            yield record

    report = run_streaming(config, [media], fetched(), release_media)
    return len(records) / report["wall_s"]


def enrich_once(worker, config, manifest: Path, folder: Path) -> float:
    """The manifest as one enrich task on ``worker``; the task's wall seconds."""
    from pipelines.tasks import EnrichJob, enrich_task
    from transforms.manifest import plan_inputs

    job = EnrichJob(
        config_json=config.model_dump_json(),
        lake=str(folder / "lake"),
        staging=str(folder / "staging"),
        run_id=folder.name,
        fingerprint="bench",
        force=True,
        descriptions_version=None,
    )
    [task] = plan_inputs([str(manifest)], sys.maxsize)
    return enrich_task(job, task, 0, worker).runtime["wall_s"]


def idle_fraction(occupancy: list[tuple[float, int]], slots: int) -> float:
    """Share of the busy window (first request in, last answer out) with a slot free."""
    idle, (since, busy) = 0.0, occupancy[0]
    for at, now_busy in occupancy[1:]:
        if busy < slots:
            idle += at - since
        since, busy = at, now_busy
    return idle / max(occupancy[-1][0] - occupancy[0][0], 1e-9)


def run_once(worker, config, manifest: Path, server, hold_s: float, folder: Path) -> dict:
    """One enrich task against the endpoint serving ``SLOTS`` requests at ``hold_s`` each."""
    server.serve_with_capacity(SLOTS, hold_s)
    server.occupancy.clear()
    server.requests.clear()
    items = len(manifest.read_text().splitlines())
    wall = enrich_once(worker, config, manifest, folder)
    return {"items_per_s": items / wall, "idle": idle_fraction(server.occupancy, SLOTS)}


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    from pipelines.worker import Worker
    from tests.fake_openai_server import FakeOpenAI

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    worker = Worker()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as server:
        config = bench_config(server.url, args.items)
        manifest = corpus(Path(tmp) / "clips", args.items)
        warm = corpus(Path(tmp) / "clips", WARM_ITEMS)
        try:
            run_once(worker, config, warm, server, 0.01, Path(tmp) / "warm")  # models load
            sizing = [prep_rate(worker, config, manifest) for _ in range(args.repeats)]
            rate = statistics.median(sizing)
            regimes = {"server_bound": SLOTS / (rate / 2), "prep_bound": SLOTS / (rate * 4)}
            prep: list[float] = []
            runs: dict[str, list[dict]] = {regime: [] for regime in regimes}
            for repeat in range(args.repeats):
                prep.append(prep_rate(worker, config, manifest))
                print("prep", round(prep[-1], 2), flush=True)
                for regime, hold_s in regimes.items():
                    folder = Path(tmp) / f"{regime}-{repeat}"
                    runs[regime].append(run_once(worker, config, manifest, server, hold_s, folder))
                    print(regime, runs[regime][-1], flush=True)
        finally:
            worker.close()
    result = summarize(args, sizing, prep, regimes, runs)
    (ROOT / "bench" / "results" / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


def summarize(args, sizing: list[float], prep: list[float], regimes: dict, runs: dict) -> dict:
    rate = statistics.median(prep)
    capacity = {regime: SLOTS / hold_s for regime, hold_s in regimes.items()}
    figures = {
        regime: {
            "items_per_s": spread([o["items_per_s"] for o in outcomes]),
            "endpoint_idle_fraction": spread([o["idle"] for o in outcomes]),
        }
        for regime, outcomes in runs.items()
    }
    prep_share = [o["items_per_s"] / p for o, p in zip(runs["prep_bound"], prep, strict=True)]
    # Each ratio is goal / achieved (<= 1.0 passes); the benchmark's ratio is the worst.
    ratios = {
        "server_bound_throughput": SERVER_GOAL
        * capacity["server_bound"]
        / figures["server_bound"]["items_per_s"]["median"],
        "server_bound_idle": figures["server_bound"]["endpoint_idle_fraction"]["median"]
        / IDLE_GOAL,
        "prep_bound_throughput": PREP_GOAL * rate / figures["prep_bound"]["items_per_s"]["median"],
    }
    return {
        "benchmark": "throughput",
        "machine": "2 cores, no GPU (shared)",
        "note": NOTE,
        "load_model": f"OpenAI-compatible endpoint on 127.0.0.1: {SLOTS} slots, each request "
        "held L s, more queue (a vLLM server in steady state; not vLLM)",
        "items": args.items,
        "repeats": args.repeats,
        "sizing_prep_items_per_s": spread(sizing),
        "prep_items_per_s": spread(prep),
        "regimes": {
            regime: {"hold_s": round(hold_s, 3), "capacity_items_per_s": round(capacity[regime], 3)}
            for regime, hold_s in regimes.items()
        },
        "figures": figures,
        "prep_bound_over_prep": spread(prep_share),
        "goals": {
            "server_bound": f"items/s >= {SERVER_GOAL} x C/L; fewer than C in service <= "
            f"{IDLE_GOAL:.0%} of the time",
            "prep_bound": f"items/s >= {PREP_GOAL} x the prep rate",
        },
        "ratios": {name: round(value, 3) for name, value in ratios.items()},
        "headline": [
            "regimes.server_bound.capacity_items_per_s",
            "figures.server_bound.items_per_s.median",
            "figures.server_bound.endpoint_idle_fraction.median",
            "prep_items_per_s.median",
            "figures.prep_bound.items_per_s.median",
            "prep_bound_over_prep.median",
        ],
        "ratio": round(max(ratios.values()), 3),
    }


if __name__ == "__main__":
    main()
