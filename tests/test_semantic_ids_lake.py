"""Semantic IDs on real sentence embeddings, through the Delta lake, and the fit-sids CLI."""

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from core.config import EncodeConfig, SemanticIdConfig
from jobs.cli import main
from pipelines.sid_waves import assign_sids
from pipelines.sids import fit_codebook, pinned_codebook
from schemas import DeltaStore
from transforms.encode import EncodeStage
from transforms.semantic_ids import Codebook
from transforms.semantic_ids.features import hashed
from transforms.semantic_ids.rq_vae import fit_rq_vae

pytestmark = pytest.mark.slow
SUBJECTS = [
    "a golden retriever",
    "a street chef",
    "two toddlers",
    "a skateboarder",
    "a violinist",
    "an old fisherman",
    "a cat",
    "a yoga teacher",
    "a race car",
    "a robot toy",
    "a news anchor",
    "a magician",
]
ACTIONS = [
    "dances",
    "cooks noodles",
    "falls over",
    "tells a joke",
    "plays guitar",
    "repairs a bike",
    "reviews a phone",
    "paints a wall",
    "sings karaoke",
    "does a backflip",
    "feeds ducks",
    "unboxes a gift",
    "explains taxes",
    "builds a sandcastle",
]
PLACES = [
    "on a beach",
    "in a kitchen",
    "at a wedding",
    "in the snow",
    "on a rooftop",
    "in a classroom",
    "at night in Tokyo",
    "in a forest",
    "on a train",
    "at a football match",
    "in a garage",
    "under the rain",
    "at a birthday party",
]


@pytest.fixture(scope="module")
def sentence_embeddings():
    """2,184 distinct made-up clip descriptions, encoded with the real MiniLM."""
    sentences = [
        f"A short video where {s} {a} {p}."
        for s, a, p in itertools.product(SUBJECTS, ACTIONS, PLACES)
    ]
    stage = EncodeStage(EncodeConfig(batch_size=256))
    records = [
        {"item_id": f"item{i:05d}", "title": None, "description": text}
        for i, text in enumerate(sentences)
    ]
    stage.process_batch(records)
    return [r["item_id"] for r in records], np.stack([r["embedding"] for r in records])


def store_embeddings(store, ids, vectors, encoder="enc@1"):
    now = datetime.now(UTC)
    store.merge(
        "embeddings",
        [
            {
                "item_id": i,
                "embedding": v.tolist(),
                "dim": len(v),
                "encoder": encoder,
                "run_id": "r0",
                "updated_at": now,
            }
            for i, v in zip(ids, vectors, strict=True)
        ],
    )


def held_sids(store) -> dict[str, str]:
    return {r["item_id"]: r["sid"] for r in store.read("semantic_ids").to_pylist()}


def test_real_text_uses_the_codebook_without_collapse(sentence_embeddings, tmp_path):
    ids, vectors = sentence_embeddings
    assert len(ids) >= 2000
    store = DeltaStore(tmp_path / "lake")
    store_embeddings(store, ids, vectors)
    config = SemanticIdConfig(codebook_size=16, levels=3)
    codebook = fit_codebook(store, config, "enc@1", "r1")
    metrics = codebook.metrics
    assert metrics["per_level_usage"][0] >= 0.9
    assert metrics["max_items_per_id"] < 0.05 * len(ids)  # no collapse onto a few IDs
    assert metrics["unique_fraction"] > 0.3
    assert metrics["prefix_coherence"] > 1.2  # items sharing a level-1 code are more alike
    assert assign_sids(store, codebook, "enc@1", "r1") == len(ids)
    assert len(set(held_sids(store).values())) == len(ids)  # dedup makes every SID unique


def test_codebook_round_trips_and_assignment_is_stable(sentence_embeddings, tmp_path):
    ids, vectors = sentence_embeddings
    store = DeltaStore(tmp_path / "lake")
    store_embeddings(store, ids[:1500], vectors[:1500])
    config = SemanticIdConfig(codebook_size=16, levels=3)
    fitted = fit_codebook(store, config, "enc@1", "r1")
    loaded = pinned_codebook(store, config, "enc@1")
    assert loaded.version == fitted.version
    assert np.array_equal(loaded.encode(vectors), fitted.encode(vectors))
    assert assign_sids(store, loaded, "enc@1", "r1") == 1500
    first = held_sids(store)
    assert assign_sids(store, loaded, "enc@1", "r2") == 1500  # every item coded again
    assert held_sids(store) == first
    store_embeddings(store, ids[1500:], vectors[1500:])
    assert assign_sids(store, loaded, "enc@1", "r3", only=ids[1500:]) == len(ids) - 1500
    latest = held_sids(store)
    assert all(latest[item] == sid for item, sid in first.items())  # old items keep their SIDs
    assert len(set(latest.values())) == len(ids)


def test_ranker_features_are_written(sentence_embeddings, tmp_path):
    ids, vectors = sentence_embeddings
    store = DeltaStore(tmp_path / "lake")
    store_embeddings(store, ids, vectors)
    codebook = fit_codebook(
        store, SemanticIdConfig(codebook_size=16, sentencepiece_vocab=64), "enc@1", "r"
    )
    assert codebook.sentencepiece_model
    assign_sids(store, codebook, "enc@1", "r", hash_buckets=1000)
    rows = store.read("semantic_ids").to_pylist()
    row = rows[0]
    a, b, c = row["codes"]
    assert row["prefix_ngrams"] == [f"{a}", f"{a}_{b}", f"{a}_{b}_{c}"]
    assert row["prefix_hashes"] == hashed(row["prefix_ngrams"], 1000)
    assert all(0 <= h < 1000 for h in row["prefix_hashes"])
    for r in rows[:50]:  # pieces re-join to the codes
        assert "_".join(r["sid_pieces"]) == "_".join(map(str, r["codes"]))
    assert any(len(r["sid_pieces"]) < 3 for r in rows)  # some code runs were merged


def test_rq_vae_trains_on_cpu_and_beats_a_random_codebook(sentence_embeddings):
    _, vectors = sentence_embeddings
    codebook = fit_rq_vae(
        vectors,
        levels=3,
        codebook_size=16,
        encoder="enc",
        version="v",
        epochs=15,
        batch_size=256,
        seed=0,
    )
    random_book = Codebook(
        version="rand",
        method="rq_vae",
        centroids=np.random.default_rng(0)
        .normal(0, 0.3, codebook.centroids.shape)
        .astype(np.float32),
        encoder="enc",
        codebook_size_requested=16,
        n_fit=0,
        mlp_encoder=codebook.mlp_encoder,
        mlp_decoder=codebook.mlp_decoder,
    )
    from transforms.semantic_ids.metrics import codebook_health

    trained_mse = codebook.metrics["reconstruction_mse"]
    assert trained_mse < codebook_health(random_book, vectors)["reconstruction_mse"]
    assert trained_mse < float(((vectors - vectors.mean(0)) ** 2).sum(1).mean())  # beats the mean
    assert np.array_equal(
        Codebook.from_row(codebook.to_row()).encode(vectors), codebook.encode(vectors)
    )
    again = fit_rq_vae(
        vectors,
        levels=3,
        codebook_size=16,
        encoder="enc",
        version="v",
        epochs=15,
        batch_size=256,
        seed=0,
    )
    assert np.array_equal(again.encode(vectors), codebook.encode(vectors))  # seeded


def test_fit_sids_cli_makes_a_new_version_and_only_assign_recodes(
    sentence_embeddings, tmp_path, capsys
):
    ids, vectors = sentence_embeddings
    lake = tmp_path / "lake"
    store = DeltaStore(lake)
    encoder = EncodeStage(EncodeConfig()).encoder_id
    store_embeddings(store, ids[:400], vectors[:400], encoder)
    base = ["--lake", str(lake), "--set", "semantic_ids.codebook_size=8"]
    assert main(["fit-sids", *base, "--assign"]) == 0
    before = {r["item_id"]: r["sid"] for r in store.read("semantic_ids").to_pylist()}
    assert main(["fit-sids", *base, "--set", "semantic_ids.seed=7"]) == 0
    assert "existing SIDs unchanged" in capsys.readouterr().out
    assert store.read("codebooks").num_rows == 2
    assert {r["item_id"]: r["sid"] for r in store.read("semantic_ids").to_pylist()} == before
    assert (
        main(
            [
                "fit-sids",
                *base,
                "--set",
                "semantic_ids.method=rq_vae",
                "--set",
                "semantic_ids.vae_epochs=3",
                "--assign",
            ]
        )
        == 0
    )
    versions = {r["codebook_version"] for r in store.read("semantic_ids").to_pylist()}
    assert len(versions) == 1 and versions.pop().startswith("rq_vae-")
