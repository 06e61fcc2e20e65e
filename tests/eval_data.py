"""A synthetic catalog and interaction log where content decides cold-start: each user follows
one topic, and an item's title, tags and description name its topic."""

from __future__ import annotations

from datetime import UTC, datetime

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


def write_lake(lake, items: list[dict]) -> None:
    """``descriptions`` and ``embeddings`` rows for ``items`` in a real Delta lake; the
    embeddings come from the project's sentence encoder over each description."""
    from core.config import EncodeConfig
    from schemas import DeltaStore
    from transforms.encode import EncodeStage

    stage = EncodeStage(EncodeConfig())
    stage.setup()
    vectors = stage.encode_texts([item["description"] for item in items])
    now = datetime.now(UTC)
    lineage = {"run_id": "synthetic", "updated_at": now, "describer": "synthetic:template@1"}
    store = DeltaStore(lake)
    store.merge(
        "descriptions",
        [
            {
                "item_id": i["item_id"],
                "title": i["title"],
                "tags": i["tags"],
                "description": i["description"],
                "prompt_version": "synthetic_v1",
                **lineage,
            }
            for i in items
        ],
    )
    store.merge(
        "embeddings",
        [
            {
                "item_id": i["item_id"],
                "embedding": v.tolist(),
                "dim": len(v),
                "encoder": stage.encoder_id,
                **lineage,
            }
            for i, v in zip(items, vectors, strict=True)
        ],
    )
