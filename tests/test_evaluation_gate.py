"""The evaluation gate of codebook promotion: a refit whose SIDs no longer match what users
do is refused, though its health metrics are no worse; the same fit again is promoted.

The embeddings have no cluster structure, so where k-means cuts them depends on its seed; the
users follow the first SID code of the promoted codebook. A refit with another seed is as
healthy (unique fraction, MSE, entropy) but cuts elsewhere, and its SID tokens no longer
tell the recommender which items go together."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from core.config import EncodeConfig
from jobs.cli import main
from jobs.sid_jobs import REFUSED_EXIT
from schemas import DeltaStore
from tests.sid_lake import codebook_rows
from transforms.encode import EncodeStage

pytestmark = pytest.mark.slow
ITEMS, DIM = 240, 16


def seed_isotropic(lake, encoder: str) -> None:
    """Embeddings with no cluster structure: where a codebook cuts them is up to its seed."""
    vectors = np.random.default_rng(0).normal(size=(ITEMS, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(UTC)
    DeltaStore(lake).merge(
        "embeddings",
        [
            {"item_id": f"item{i:03d}", "embedding": v.tolist(), "dim": DIM,
             "encoder": encoder, "run_id": "seed", "updated_at": now}
            for i, v in enumerate(vectors.astype(np.float32))
        ],
    )  # fmt: skip


def log_following_first_codes(lake, path, users: int = 240, length: int = 10) -> None:
    """Each user watches items that share the first SID code of the current codebook."""
    rows = DeltaStore(lake).read("semantic_ids", columns=["item_id", "codes"]).to_pylist()
    groups: dict[int, list[str]] = {}
    for row in rows:
        groups.setdefault(row["codes"][0], []).append(row["item_id"])
    pools = [sorted(g) for _, g in sorted(groups.items()) if len(g) >= length]
    rng = np.random.default_rng(0)
    log = {"user_id": [], "item_id": [], "timestamp": []}
    for user in range(users):
        pool = pools[user % len(pools)]
        for step, item in enumerate(rng.choice(pool, size=length, replace=False)):
            log["user_id"].append(f"u{user}")
            log["item_id"].append(str(item))
            log["timestamp"].append(step)
    pq.write_table(pa.table(log), path)


def gate_settings() -> dict:
    """A small codebook, and a small, quick evaluation for the gate (interactions unset)."""
    return {
        "semantic_ids": {"levels": 2, "codebook_size": 8, "sentencepiece_vocab": 0},
        "evaluate": {
            "seeds": [0, 1],
            "dim": 16,
            "epochs": 20,
            "batch_size": 16,
            "gate_models": ["two_tower"],
            "gate_slices": ["all", "cold_start"],
        },
    }


@pytest.fixture
def gated(tmp_path):
    lake, config = tmp_path / "lake", tmp_path / "gate.yaml"
    seed_isotropic(lake, EncodeStage(EncodeConfig()).encoder_id)
    settings = gate_settings()
    config.write_text(yaml.safe_dump(settings))
    base = ["--lake", str(lake), "--config", str(config)]
    assert main(["fit-sids", *base, "--promote", "if-no-worse", "--assign"]) == 0
    log_following_first_codes(lake, tmp_path / "log.parquet")
    settings["evaluate"]["interactions"] = str(tmp_path / "log.parquet")
    config.write_text(yaml.safe_dump(settings))
    return lake, base


def test_a_refit_that_serves_the_recommender_worse_is_refused_an_equal_one_promoted(gated, capsys):
    lake, base = gated
    [first] = codebook_rows(lake)
    code = main(["fit-sids", *base, "--set", "semantic_ids.seed=1", "--promote", "if-no-worse"])
    assert code == REFUSED_EXIT, capsys.readouterr().out
    [refit] = set(codebook_rows(lake)) - {first}
    row = codebook_rows(lake)[refit]
    assert row["promotion_status"] == "refused", row["promotion_note"]
    assert "evaluation two_tower" in row["promotion_note"]
    assert "unique fraction" not in row["promotion_note"]  # health alone would promote it
    assert codebook_rows(lake)[first]["promotion_status"] == "promoted"

    # The same settings again code the items the same way: no worse, so promoted.
    assert main(["fit-sids", *base, "--promote", "if-no-worse"]) == 0
    [again] = set(codebook_rows(lake)) - {first, refit}
    assert codebook_rows(lake)[again]["promotion_status"] == "promoted"
    assert "eval_two_tower_cold_start_hr@10" in capsys.readouterr().out
