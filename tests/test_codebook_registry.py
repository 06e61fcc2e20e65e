"""The codebook registry (``pipelines.codebooks``): get a codebook by version, the one runs pin,
compatibility, seeded sampling of embeddings, and recorded fits and promotions. Small
k-means codebooks on random vectors in a temporary lake: seconds."""

import numpy as np
import pyarrow as pa
import pytest

from core.config import SemanticIdConfig
from core.errors import UsageError
from pipelines import codebooks
from pipelines.sids import fit_codebook_on
from schemas.store import DeltaStore

ENCODER = "test-encoder"
CONFIG = SemanticIdConfig(levels=2, codebook_size=4, kmeans_iters=3, sentencepiece_vocab=0)


def vectors(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def embeddings_table(rows: int) -> pa.Table:
    return pa.table(
        {
            "item_id": [f"item-{i:03d}" for i in range(rows)],
            "embedding": pa.array(vectors(rows).tolist(), pa.list_(pa.float32())),
        }
    )


def fitted(store: DeltaStore, run_id: str, config: SemanticIdConfig = CONFIG, seed: int = 0):
    codebook = fit_codebook_on(vectors(40, seed=seed), config, ENCODER)
    codebooks.record_fitted(store, codebook, run_id)
    return codebook


def test_get_returns_a_recorded_codebook_and_names_the_known_ones_otherwise(tmp_path):
    store = DeltaStore(tmp_path / "lake")
    codebook = fitted(store, "run-1")
    assert codebooks.codebook_row(store, codebook.version)["run_id"] == "run-1"
    loaded = codebooks.load_codebook(str(tmp_path / "lake"), codebook.version)
    assert np.array_equal(loaded.encode(vectors(5)), codebook.encode(vectors(5)))
    assert codebooks.find_row(store, "nope") is None
    with pytest.raises(UsageError, match=rf"'nope' is not in .*{codebook.version}"):
        codebooks.codebook_row(store, "nope")


def test_current_prefers_the_promoted_codebook_and_never_a_candidate(tmp_path):
    store = DeltaStore(tmp_path / "lake")
    first = fitted(store, "run-1", seed=1)
    second = fitted(store, "run-2", seed=2)
    assert codebooks.current_codebook(store, CONFIG, ENCODER).version == first.version
    candidate_row = {**codebooks.codebook_row(store, second.version)}
    codebooks.set_promotion_status(store, candidate_row, "candidate", "fitted by fit-sids")
    assert codebooks.current_codebook(store, CONFIG, ENCODER).version == first.version
    codebooks.set_promotion_status(store, candidate_row, "promoted", "on request")
    assert codebooks.current_codebook(store, CONFIG, ENCODER).version == second.version
    assert codebooks.codebook_row(store, second.version)["promotion_note"] == "on request"
    named = CONFIG.model_copy(update={"codebook_version": first.version})
    assert codebooks.pinned_codebook(store, named, ENCODER).version == first.version


def test_a_codebook_serves_only_the_settings_it_was_fitted_for(tmp_path):
    store = DeltaStore(tmp_path / "lake")
    row = codebooks.codebook_row(store, fitted(store, "run-1").version)
    assert codebooks.compatible(row, CONFIG, ENCODER)
    wider = CONFIG.model_copy(update={"codebook_size": 8})
    assert codebooks.settings_mismatch(row, wider, "other") == [
        "codebook_size_requested 4 but the config has 8",
        "encoder 'test-encoder' but the config has 'other'",
    ]
    assert codebooks.current_codebook(store, wider, ENCODER) is None


def test_seeded_sampling_is_stable_ordered_and_bounded():
    table = embeddings_table(30)
    sample = codebooks.seeded_sample(table, 10, seed=3)
    assert sample.num_rows == 10
    assert sample["item_id"].to_pylist() == sorted(sample["item_id"].to_pylist())
    assert sample.equals(codebooks.seeded_sample(table, 10, seed=3))
    assert not sample.equals(codebooks.seeded_sample(table, 10, seed=4))
    assert codebooks.seeded_sample(table, 30, seed=3) is table
    config = CONFIG.model_copy(update={"fit_sample": 10, "seed": 3})
    matrix = codebooks.fit_sample(table, config, ENCODER)
    keys = codebooks.sample_keys(table.select(["item_id"]), config, ENCODER)
    assert keys == sample["item_id"].to_pylist()
    assert np.array_equal(matrix, np.asarray(sample["embedding"].to_pylist(), np.float32))
    with pytest.raises(ValueError, match="need at least 2 embeddings from encoder e to fit"):
        codebooks.fit_sample(table.slice(0, 1), config, "e")
