"""Benchmark: batched describer throughput against batch=1, the visual-tag stage, and the
offline describer before and after grounding.

Offline describer (real SmolLM2-135M) and the transformers backend (a tiny random-weight LLaVA,
so the figure is the batching machinery, not a real VLM's speed). The visual stage
(EfficientNet-Lite0) runs on the demo clips' decoded frames. "Before" is the offline describer
with the offline_v1 prompt and no visual context; "after" is offline_v2 with the visual tags in
the prompt and the grounding filter (its own cost is also timed alone). Timed figures are the
median of ``REPEATS`` runs with min and max. Writes bench/results/describe.json. Goal: batched
≥ 3× batch=1 in items/s for the transformers backend; the ratio printed last is goal / its
speed-up (≤ 1.0 passes). The offline describer, when it generates
(``describe.generated_sentences``), runs one item per call so its text never depends on the
batch: its batch=8 figure is reported, not held to the goal.

    python bench/describe.py            # everything
    python bench/describe.py --visual   # only the visual stage and before/after figures
    python bench/describe.py --offline  # only the offline describer's kept rate and demo wall

``--offline``: how many of SmolLM2-135M's sentences the grounding filter keeps, on the demo
clips and on clips with known content from tests/media_factory.py, for two tasks (describe the
item with the offline_v3 prompt; restate its title, speech and on-screen text in one
sentence); and the demo's wall time (``enrich run`` with configs/demo.yaml, median of
``DEMO_RUNS``) with the default (no generation) and with ``describe.generated_sentences=2``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITEMS = 8
GOAL_SPEEDUP = 3.0
REPEATS = 3
TAGS = [
    {"label": "bow tie", "score": 0.29, "share": 1.0},
    {"label": "suit", "score": 0.21, "share": 1.0},
    {"label": "seat belt", "score": 0.1, "share": 0.75},
]


def records() -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "item_id": f"clip{i}",
            "title": f"Clip number {i}",
            "tags": ["demo"],
            "text": None,
            "duration_s": 5.0 + i,
            "width": 320,
            "height": 240,
            "fps": 25.0,
            "has_audio": True,
            "audio_rms": 0.1,
            "transcript": f"hello this is clip {i} about cooking pasta",
            "ocr_text": "RECIPE",
            "frame_stats": {"brightness": 0.5, "motion": 0.05},
            "visual_tags": TAGS,
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


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


def demo_frames() -> list[dict]:
    """The demo corpus's video clips with their sampled frames (media stage, default config)."""
    from core.config import MediaConfig
    from jobs.demo_media import build_demo_corpus
    from transforms.media import MediaStage

    manifest = build_demo_corpus(Path(tempfile.mkdtemp(prefix="bench_visual_")))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    MediaStage(MediaConfig()).process_batch(rows)
    return [r for r in rows if r.get("frames")]


def visual_throughput() -> dict:
    """Visual-tag stage items/s (and frames/s) on the demo clips, one batch per repeat."""
    from core.config import VisualConfig
    from transforms.visual import VisualTagStage

    clips = demo_frames()
    stage = VisualTagStage(VisualConfig(batch_size=len(clips)))
    stage.setup()
    rates = []
    for _ in range(REPEATS):
        items = [dict(c) for c in clips]
        started = time.perf_counter()
        stage.process_batch(items)
        rates.append(len(items) / (time.perf_counter() - started))
    frames = sum(len(c["frames"]) for c in clips)
    result = {
        "items": len(clips),
        "frames": frames,
        "items_per_s": spread(rates),
        "frames_per_s_median": round(statistics.median(rates) * frames / len(clips), 1),
    }
    print(f"visual: {result}")
    return result


def describer_rates(config) -> list[float]:
    from transforms.describe import build_describer

    stage = build_describer(config.model_copy(update={"batch_size": ITEMS}))
    stage.setup()
    rates = []
    for _ in range(REPEATS):
        items = records()
        started = time.perf_counter()
        stage.process_batch(items)
        rates.append(len(items) / (time.perf_counter() - started))
    return rates


def grounding_ms_per_item() -> float:
    """The grounding filter alone (evidence vocabulary, sentence scores, templates)."""
    from transforms.describe.offline import grounded_description

    items = records()
    generated = "This video introduces an urban bike tour. It shows a man in a suit and bow tie."
    started = time.perf_counter()
    for _ in range(50):
        for item in items:
            grounded_description(item, generated, 0.75)
    return round((time.perf_counter() - started) * 1000 / (50 * len(items)), 3)


def before_after() -> dict:
    """Offline describer items/s at batch=ITEMS: v1 prompt without tags vs v2 with tags."""
    from core.config import DescribeConfig

    base = {"max_new_tokens": 32, "min_new_tokens": 32, "generated_sentences": 2}
    before = DescribeConfig(**base, prompt_version="offline_v1", visual_context="off")
    after = DescribeConfig(**base)
    result = {
        "before_offline_v1_no_tags": {"items_per_s": spread(describer_rates(before))},
        "after_offline_v2_tags_grounded": {"items_per_s": spread(describer_rates(after))},
        "grounding_filter_ms_per_item": grounding_ms_per_item(),
    }
    print(f"describer before/after: {result}")
    return result


def visual_and_grounding() -> dict:
    return {"visual_stage": visual_throughput(), "offline_describer": before_after()}


DEMO_RUNS = 3
HEADLINE = [
    "transformers_tiny_llava.speedup",
    "offline_generation.kept_sentences.describe_offline_v3.demo.kept_rate",
    "offline_generation.kept_sentences.restate_title_speech.generated.kept_rate",
    "offline_generation.demo_before_change.wall_s.median",
    "offline_generation.demo_default.wall_s.median",
    "offline_generation.demo_generating_2_sentences.wall_s.median",
]
RESTATE_SYSTEM = (
    "You restate facts about a video in one short plain sentence. Use only words that appear "
    "in the facts. Do not add anything the facts do not say."
)


def generated_clips(folder: Path) -> list[dict]:
    """Clips with known speech, on-screen text and pictures (tests/media_factory.py)."""
    from tests.media_factory import lavfi_clip, speech_clip, synth_video

    speech = [
        ("weather", "Today will be sunny with a light wind from the west.", "WEATHER REPORT"),
        ("cooking", "Add two cups of flour and stir the batter slowly.", "PANCAKE RECIPE"),
        ("guitar", "This guitar lesson shows three simple chords.", "LESSON ONE"),
    ]
    rows = [
        {"item_id": f"gen/{name}", "uri": str(speech_clip(folder / f"{name}.mp4", said, shown))}
        | {"title": f"{name.title()} video", "tags": [name]}
        for name, said, shown in speech
    ]
    patterns = lavfi_clip(folder / "patterns.mp4", ["testsrc", "mandelbrot", "smptebars"])
    rows += [
        {"item_id": "gen/patterns", "uri": str(patterns), "title": "Test patterns", "tags": []},
        {"item_id": "gen/tone", "uri": str(synth_video(folder / "tone.mp4")), "title": None},
    ]
    return [{"tags": [], "text": None, **row} for row in rows]


def offline_corpus(folder: Path) -> list[dict]:
    """The demo clips and the generated clips, through the demo config's stages up to visual."""
    from core.config import load_config
    from jobs.demo_media import build_demo_corpus
    from transforms.pipeline import build_stages

    manifest = build_demo_corpus(folder / "demo")
    rows = [{"text": None, **json.loads(line)} for line in manifest.read_text().splitlines()]
    (folder / "gen").mkdir()
    rows += generated_clips(folder / "gen")
    config = load_config(ROOT / "configs" / "demo.yaml")
    config.media.allowed_roots = [str(folder)]
    for stage in build_stages(config)[:4]:
        stage.process_batch(rows)
    return [r for r in rows if not r.get("error")]


def restate_prompt(record: dict):
    """The restating task: one sentence from the title, speech and on-screen text."""
    from transforms.describe.prompt import RenderedPrompt, quote

    facts = {
        "title": record.get("title"),
        "speech": record.get("transcript"),
        "on-screen text": record.get("ocr_text"),
        "tags": ", ".join(record.get("tags") or []),
    }
    lines = "\n".join(f"{name}: {quote(value)}" for name, value in facts.items() if value)
    user = f"Facts:\n{lines}\nIn one sentence, say what the video is about, using these words."
    return RenderedPrompt(RESTATE_SYSTEM, user, "The video is about")


def kept_counts(record: dict, generated: str) -> dict:
    """The generated sentences, those the filter keeps, and those also naming new evidence."""
    from transforms.describe.grounding import (
        content_words,
        evidence_vocabulary,
        grounded_sentences,
        sentences,
        unstated_evidence,
    )
    from transforms.describe.offline import evidence_description

    vocabulary = evidence_vocabulary(record)
    adds = unstated_evidence(record, evidence_description(record))
    return {
        "sentences": sum(bool(content_words(s)) for s in sentences(generated, complete=True)),
        "grounded": len(grounded_sentences(generated, vocabulary, 0.75, limit=99)),
        "kept": len(grounded_sentences(generated, vocabulary, 0.75, adds=adds, limit=99)),
    }


def kept_rates() -> dict:
    """Per task and corpus: sentences generated, grounded and kept, and generation seconds."""
    from core.config import load_config
    from transforms.describe import build_describer

    with tempfile.TemporaryDirectory() as tmp:
        records = offline_corpus(Path(tmp))
    describe = load_config(ROOT / "configs" / "demo.yaml").describe
    stage = build_describer(describe.model_copy(update={"generated_sentences": 2}))
    stage.setup()
    tasks = {"describe_offline_v3": stage.render, "restate_title_speech": restate_prompt}
    result: dict = {}
    for task, prompt_of in tasks.items():
        for record in records:
            corpus = "generated" if record["item_id"].startswith("gen/") else "demo"
            started = time.perf_counter()
            generated, _, tokens = stage.generate(prompt_of(record))
            seconds = time.perf_counter() - started
            counts = {**kept_counts(record, generated), "tokens": tokens, "seconds": seconds}
            totals = result.setdefault(task, {}).setdefault(corpus, {"items": 0})
            totals["items"] += 1
            for name, value in counts.items():
                totals[name] = round(totals.get(name, 0) + value, 1)
    for corpora in result.values():
        for totals in corpora.values():
            totals["kept_rate"] = round(totals["kept"] / max(1, totals["sentences"]), 3)
    print(f"kept rates: {result}")
    return result


def demo_wall(overrides: list[str], runs: int) -> dict:
    """``enrich run`` of the demo (``--force``): wall seconds and per-stage seconds."""
    import subprocess

    walls, stages, kept = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        from jobs.demo_media import build_demo_corpus

        manifest = build_demo_corpus(Path(tmp) / "media", with_bad_inputs=True)
        for run in range(runs):
            summary = Path(tmp) / f"summary{run}.json"
            command = [sys.executable, "-m", "jobs.cli", "run", "--input", str(manifest)]
            command += ["--lake", f"{tmp}/lake", "--config", str(ROOT / "configs" / "demo.yaml")]
            command += ["--force", "--no-report", "--summary-json", str(summary)]
            command += [arg for override in overrides for arg in ("--set", override)]
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
            walls.append(time.perf_counter() - started)
            for name, stats in json.loads(summary.read_text())["stage_stats"].items():
                stages.setdefault(name, []).append(stats["seconds"])
            kept.append(stray_quotes(f"{tmp}/lake"))
    return {
        "overrides": overrides,
        "wall_s": spread(walls),
        "stage_s_median": {name: round(statistics.median(s), 1) for name, s in stages.items()},
        "descriptions_with_an_open_quote": max(kept),
    }


def stray_quotes(lake: str) -> int:
    """Descriptions in the lake that leave a double quote open."""
    from schemas.store import DeltaStore
    from transforms.describe.grounding import open_quote

    rows = DeltaStore(lake).read("descriptions").to_pylist()
    return sum(open_quote(r["description"]) for r in rows)


def offline_describer() -> dict:
    result = {
        "kept_sentences": kept_rates(),
        "demo_default": demo_wall([], DEMO_RUNS),
        "demo_generating_2_sentences": demo_wall(["describe.generated_sentences=2"], 1),
    }
    print(f"offline describer: {result}")
    return result


def kept_from_before() -> dict:
    """The recorded run of the code before the change (this script cannot rerun old code)."""
    path = ROOT / "bench" / "results" / "describe.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    before = recorded.get("offline_generation", {}).get("demo_before_change")
    return {"demo_before_change": before} if before else {}


def main_offline_only() -> None:
    """Refresh only the offline describer's kept rates and demo wall times."""
    path = ROOT / "bench" / "results" / "describe.json"
    result = json.loads(path.read_text()) if path.is_file() else {"benchmark": "describe"}
    result["offline_generation"] = {**result.get("offline_generation", {}), **offline_describer()}
    result["headline"] = HEADLINE
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["offline_generation"], indent=2))


def main() -> None:
    from core.config import DescribeConfig
    from tests.tiny_vlm import build_tiny_llava

    results = {
        "offline_smollm2": compare(
            "offline", DescribeConfig(max_new_tokens=48, min_new_tokens=48, generated_sentences=2)
        )
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
    speedup = results["transformers_tiny_llava"]["speedup"]  # offline generates per item
    results["visual_and_grounding"] = visual_and_grounding()
    results["offline_generation"] = {**kept_from_before(), **offline_describer()}
    result = {
        "benchmark": "describe",
        "items": ITEMS,
        "device": "cpu",
        **results,
        "goal": f"transformers batch={ITEMS} speed-up >= {GOAL_SPEEDUP}x",
        "headline": HEADLINE,
        "ratio": round(GOAL_SPEEDUP / speedup, 3),
    }
    (ROOT / "bench" / "results" / "describe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


def main_visual_only() -> None:
    """Refresh only the visual and before/after figures in bench/results/describe.json, each
    section written as soon as it is measured."""
    path = ROOT / "bench" / "results" / "describe.json"
    result = json.loads(path.read_text()) if path.is_file() else {"benchmark": "describe"}
    section = result.setdefault("visual_and_grounding", {})
    for name, measure in (("visual_stage", visual_throughput), ("offline_describer", before_after)):
        section[name] = measure()
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(section, indent=2))


if __name__ == "__main__":
    if "--visual" in sys.argv[1:]:
        main_visual_only()
    elif "--offline" in sys.argv[1:]:
        main_offline_only()
    else:
        main()
