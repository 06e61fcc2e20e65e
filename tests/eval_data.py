"""A synthetic catalog and interaction log where content decides cold-start: each user follows
one topic, and an item's title, tags and description name its topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

TOPICS = {
    "cooking": ["pasta recipe", "baking bread", "knife skills", "spicy curry", "pancakes"],
    "football": ["penalty kick", "goalkeeper save", "match highlights", "tactics board", "derby"],
    "jazz": ["saxophone solo", "piano trio", "swing band", "bebop lesson", "double bass"],
    "astronomy": ["saturn rings", "telescope setup", "meteor shower", "galaxy survey", "moon"],
    "gardening": ["tomato plants", "pruning roses", "compost heap", "seed trays", "hedges"],
    "motorsport": ["pit stop", "rally stage", "lap record", "engine tuning", "grid start"],
    "chess": ["queen sacrifice", "endgame study", "opening trap", "blitz game", "rook ending"],
    "yoga": ["sun salutation", "breathing drill", "balance pose", "stretch flow", "meditation"],
}


def catalog(items_per_topic: int = 25) -> list[dict]:
    """Items with a topic, a title, tags and a description that names the topic."""
    rows = []
    for topic, phrases in TOPICS.items():
        for k in range(items_per_topic):
            phrase = phrases[k % len(phrases)]
            rows.append(
                {
                    "item_id": f"{topic}-{k:03d}",
                    "topic": topic,
                    "title": f"{phrase.title()} #{k}",
                    "tags": [topic, phrase.split()[0]],
                    "description": f"A short video about {topic}: {phrase}, part {k}.",
                }
            )
    return rows


def interactions(items: list[dict], users: int = 320, length: int = 12, seed: int = 0) -> pa.Table:
    """Each user watches ``length`` items of one topic (popular ones more often), in time order."""
    rng = np.random.default_rng(seed)
    by_topic: dict[str, list[str]] = {}
    for item in items:
        by_topic.setdefault(item["topic"], []).append(item["item_id"])
    topics = sorted(by_topic)
    rows = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    for user in range(users):
        pool = by_topic[topics[user % len(topics)]]
        weights = 1.0 / np.arange(1, len(pool) + 1) ** 0.6
        order = rng.permutation(len(pool))
        chosen = rng.choice(len(pool), size=length, replace=False, p=weights / weights.sum())
        for step, index in enumerate(chosen):
            rows["user_id"].append(f"u{user:04d}")
            rows["item_id"].append(pool[order[index]])
            rows["timestamp"].append(start + 3600 * step + user)
            rows["rating"].append(float(rng.integers(1, 6)))
    return pa.table(rows)


def manifest(path: Path, items: list[dict]) -> Path:
    """A text-only ``enrich run`` manifest: title, tags and the item's text, no media."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "item_id": i["item_id"],
                    "title": i["title"],
                    "tags": i["tags"],
                    "text": i["description"],
                }
            )
            + "\n"
            for i in items
        )
    )
    return path


RUN_SIDS = ("semantic_ids.levels=2", "semantic_ids.codebook_size=8")  # a catalog of ~100s


def write_lake(lake: Path, items: list[dict]) -> None:
    """The items through a real ``enrich run`` (the offline describer, the encoder, a small
    codebook): the descriptions, embeddings and SIDs the pipeline itself writes. Tests refit
    the SIDs they evaluate with ``enrich fit-sids``."""
    from jobs.cli import main
    from tests.cli_helpers import run_argv

    lake = Path(lake)
    source = manifest(lake.parent / f"{lake.name}-items.jsonl", items)
    code = main(run_argv(source, lake, *RUN_SIDS, extra=("--no-report",)))
    if code != 0:
        raise RuntimeError(f"enrich run over {source} exited {code}")
