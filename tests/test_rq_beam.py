"""Beam-search residual assignment and codebook refinement for RQ-KMeans."""

import itertools

import numpy as np
import pytest

from transforms.semantic_ids import Codebook, fit_rq_kmeans
from transforms.semantic_ids.beam_search import beam_quantize, greedy_quantize
from transforms.semantic_ids.rq_kmeans import refit_levels

LEVELS, K, DIM = 3, 8, 16


def seeded_set(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, DIM)).astype(np.float32)
    centroids = (0.6 * rng.normal(size=(LEVELS, K, DIM))).astype(np.float32)
    return data, centroids


def squared_errors(residual: np.ndarray) -> np.ndarray:
    return (residual**2).sum(1)


def test_beam_is_never_worse_than_greedy_and_better_on_average():
    data, centroids = seeded_set()
    _, greedy = greedy_quantize(data, centroids)
    _, beam = beam_quantize(data, centroids, width=5)
    assert np.all(squared_errors(beam) <= squared_errors(greedy) + 1e-5)
    assert squared_errors(beam).mean() < 0.95 * squared_errors(greedy).mean()


def test_a_beam_as_wide_as_every_path_finds_the_best_codes():
    data, centroids = seeded_set(300)
    best = np.full(len(data), np.inf)
    for combo in itertools.product(range(K), repeat=LEVELS):
        chosen = sum(centroids[level][code] for level, code in enumerate(combo))
        best = np.minimum(best, squared_errors(data - chosen))
    codes, residual = beam_quantize(data, centroids, width=K**LEVELS)
    np.testing.assert_allclose(squared_errors(residual), best, rtol=1e-4, atol=1e-4)
    chosen = sum(centroids[level][codes[:, level]] for level in range(LEVELS))
    np.testing.assert_allclose(data - chosen, residual, atol=1e-4)


def test_refitting_levels_on_fixed_codes_never_raises_the_error():
    data, centroids = seeded_set()
    codes, residual = beam_quantize(data, centroids, width=5)
    refit = refit_levels(data, centroids, codes)
    after = data - sum(refit[level][codes[:, level]] for level in range(LEVELS))
    assert squared_errors(after).mean() < squared_errors(residual).mean()


def test_codebooks_without_a_beam_width_assign_greedily_as_before():
    data, centroids = seeded_set(500)
    old = Codebook("v0", "rq_kmeans", centroids, "enc", K, len(data))
    np.testing.assert_array_equal(old.encode(data), greedy_quantize(data, centroids)[0])
    beamed = Codebook("v1", "rq_kmeans", centroids, "enc", K, len(data), config={"beam_width": 5})
    np.testing.assert_array_equal(beamed.encode(data), beam_quantize(data, centroids, 5)[0])


def test_refined_beam_fit_reconstructs_better_than_the_plain_greedy_fit():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1500, DIM)).astype(np.float32)
    common = {"levels": LEVELS, "codebook_size": 16, "iters": 10, "seed": 0, "encoder": "e"}
    plain = fit_rq_kmeans(data, **common, version="plain", beam_width=1, refine_steps=0)
    refined = fit_rq_kmeans(data, **common, version="refined")
    assert refined.config["beam_width"] > 1 and refined.config["refine_steps"] > 0
    mse = {book.version: book.metrics["reconstruction_mse"] for book in (plain, refined)}
    assert mse["refined"] < mse["plain"]
    assert refined.metrics["per_level_usage"][0] == 1.0


def test_bad_beam_width_fails_fast():
    data, _ = seeded_set(100)
    with pytest.raises(ValueError, match="beam_width >= 1"):
        fit_rq_kmeans(
            data, levels=2, codebook_size=4, iters=2, seed=0, encoder="e", version="v", beam_width=0
        )
