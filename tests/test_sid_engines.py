"""Semantic-ID assignment on the engines: a distributed map with the pinned codebook and a
group-by on codes give exactly the in-process answer, including items that already hold a
suffix, items that move to other codes, and collisions."""

import random

import numpy as np
import pytest

from core.config import SemanticIdConfig
from pipelines.engines import make_engine
from pipelines.sid_waves import assign_sids, code_wave, dedup_wave
from pipelines.sids import code_items, fit_codebook_on, sid_rows
from pipelines.staging import Staging
from pipelines.tasks import SidTask, SidWaveJob
from schemas import DeltaStore
from schemas.rows import embedding_row, utc_now
from schemas.store import parquet_dataset
from transforms.semantic_ids.dedup import dedup_entry, dedup_group, settle_and_dedup

ENCODER = "test-encoder"


def _grouped_assignment(new_codes, choices, existing):
    groups = {}
    for item_id in set(new_codes) | set(existing):
        key, entry = dedup_entry(
            item_id, new_codes.get(item_id), existing.get(item_id), choices.get(item_id)
        )
        groups.setdefault(key, []).append(entry)
    assigned = {}
    for entries in groups.values():
        assigned.update(dedup_group(entries))
    return assigned


@pytest.mark.parametrize("seed", range(20))
def test_group_by_prefix_dedup_equals_the_global_dedup(seed):
    rng = random.Random(seed)
    codes = [(a, b) for a in range(3) for b in range(12)]
    existing = {}
    for i in range(40):
        held = rng.choice(codes)
        taken = {s for c, s in existing.values() if c == held}
        existing[f"old{i}"] = (held, min(set(range(len(taken) + 1)) - taken))
    new_codes = {f"new{i}": rng.choice(codes) for i in range(30)}
    new_codes.update({f"old{i}": rng.choice(codes) for i in rng.sample(range(40), 15)})
    choices = {
        item_id: (c[-1], *rng.sample([b for b in range(12) if b != c[-1]], rng.randint(0, 3)))
        for item_id, c in new_codes.items()
    }
    expected = settle_and_dedup(new_codes, choices, existing)
    assert _grouped_assignment(new_codes, choices, existing) == expected
    assert any(new_codes[k] != existing[k][0] for k in new_codes if k in existing)
    assert any(expected[k][0] != new_codes[k] for k in new_codes)  # some moved within choices
    assert len({sid for sid in expected.values()}) == len(expected)


def _items(vectors, first):
    return [
        {
            "item_id": f"item{first + i:03d}",
            "embedding": vector.tolist(),
            "encoder": ENCODER,
            "describer": "offline:test@1",
            "content_sha256": f"sha{first + i}",
        }
        for i, vector in enumerate(vectors)
    ]


@pytest.fixture(scope="module")
def coded_lake(tmp_path_factory):
    """A lake with a small (collision-heavy) codebook and 30 items already coded; the slack
    lets colliding items move to another last-level code."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    config = SemanticIdConfig(
        levels=2, codebook_size=4, kmeans_redo=1, sentencepiece_vocab=8, collision_slack=0.5
    )
    codebook = fit_codebook_on(vectors, config, ENCODER)
    store = DeltaStore(tmp_path_factory.mktemp("sid-engines") / "lake")
    store.merge("codebooks", [{**codebook.to_row(), "run_id": "fit", "updated_at": utc_now()}])
    store.merge(
        "embeddings", [embedding_row(item, "r1", utc_now()) for item in _items(vectors[:30], 0)]
    )
    assert assign_sids(store, codebook, ENCODER, "r1") == 30
    moved = vectors[20:60].copy()
    moved[:10] = -moved[:10]  # items 20-29 come back with new embeddings
    return store, codebook, _items(moved, 20)


def _comparable(rows):
    return sorted(
        ({k: v for k, v in row.items() if k != "updated_at"} for row in rows),
        key=lambda row: row["item_id"],
    )


def in_process_assignment(store, codebook, items, run_id, hash_buckets) -> list[dict]:
    """The answer the waves must give: every item coded, then one global settle-and-dedup
    against every SID held under the codebook."""
    coded = code_items(codebook, items)
    held = {
        r["item_id"]: (tuple(r["codes"]), r["dedup"])
        for r in store.read("semantic_ids").to_pylist()
        if r["codebook_version"] == codebook.version
    }
    assigned = settle_and_dedup(
        {item["item_id"]: item["codes"] for item in coded},
        {item["item_id"]: item["choices"] for item in coded},
        held,
    )
    return sid_rows(codebook, coded, assigned, run_id, hash_buckets)


def engine_assignment(engine, store, codebook, items, staging_uri) -> list[dict]:
    """The engine's SID waves over staged embeddings: a code task, then one dedup task per
    codes bucket (3 buckets, so the group-by really is partitioned)."""
    staging = Staging(staging_uri)
    parts = staging.parts("test", "00000")
    parts.write("embeddings", [embedding_row(item, "r2", utc_now()) for item in items])
    embeddings = parts.close()["embeddings"].uri
    held = store.version("semantic_ids")
    wave = SidWaveJob(store.lake, staging.uri, "r2", codebook.version, ENCODER, 3, 64, held)
    runner = make_engine(engine)
    code_files = code_wave(runner, staging, wave, [SidTask("c0", files=(embeddings,))])
    files = dedup_wave(runner, staging, wave, code_files)
    return parquet_dataset(files).to_table().to_pylist()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "beam", "spark"])
def test_engine_assignment_matches_in_process(coded_lake, engine, tmp_path):
    store, codebook, items = coded_lake
    expected = in_process_assignment(store, codebook, items, "r2", hash_buckets=64)
    got = engine_assignment(engine, store, codebook, items, str(tmp_path / "staging"))
    assert _comparable(got) == _comparable(expected)
    sids = [row["sid"] for row in expected]
    assert len(set(sids)) == len(sids) and max(row["dedup"] for row in expected) > 0
    nearest = codebook.encode(np.asarray([item["embedding"] for item in items], np.float32))
    assert any(list(row["codes"]) != list(n) for row, n in zip(expected, nearest, strict=True))
