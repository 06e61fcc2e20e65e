"""A refit's Semantic IDs: labels aligned to the old codebook, churn figures, crosswalk rows."""

from dataclasses import replace

import numpy as np

from transforms.semantic_ids import fit_rq_kmeans
from transforms.semantic_ids.churn import aligned, churn, crosswalk_rows


def clustered(seed: int = 0, n: int = 1200, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim)) * 4
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def fit(x: np.ndarray, seed: int):
    return fit_rq_kmeans(
        x, levels=2, codebook_size=12, iters=20, seed=seed, encoder="e", version=f"v{seed}"
    )


def test_relabeling_a_codebook_is_undone_and_its_churn_is_zero():
    x = clustered()
    old = fit(x, seed=0)
    rng = np.random.default_rng(1)
    shuffled = replace(old, centroids=np.stack([c[rng.permutation(12)] for c in old.centroids]))
    before = old.encode(x)
    assert churn(before, shuffled.encode(x))["level_1_prefix_changed"] > 0.5
    realigned = aligned(shuffled, before, x)
    assert churn(before, realigned.encode(x)) == {
        "items": len(x),
        "level_1_prefix_changed": 0.0,
        "level_2_prefix_changed": 0.0,
        "code_changed": 0.0,
    }


def test_a_refit_with_another_seed_moves_few_items_once_aligned_and_keeps_its_partition():
    x = clustered()
    old, new = fit(x, seed=0), fit(x, seed=7)
    before = old.encode(x)
    raw = churn(before, new.encode(x))
    fixed = aligned(new, before, x)
    after = churn(before, fixed.encode(x))
    assert after["level_1_prefix_changed"] < 0.1 < raw["level_1_prefix_changed"]
    assert after["level_2_prefix_changed"] <= raw["level_2_prefix_changed"]
    # only labels changed: the same items share a code, and reconstruction is identical
    codes, relabeled = new.encode(x), fixed.encode(x)
    for level in range(2):
        pairs = set(zip(codes[:, level].tolist(), relabeled[:, level].tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs})
    assert np.allclose(new.reconstruct(codes), fixed.reconstruct(relabeled))


def test_crosswalk_rows_name_both_sids_and_which_prefixes_moved():
    old = [
        {"codes": [1, 2, 3], "sid": "1-2-3-0", "codebook_version": "a"},
        {"codes": [4, 5, 6], "sid": "4-5-6-0", "codebook_version": "a"},
    ]
    new = [
        {"codes": [1, 2, 9], "sid": "1-2-9-0", "codebook_version": "b"},
        {"codes": [4, 7, 6], "sid": "4-7-6-1", "codebook_version": "b"},
    ]
    rows = crosswalk_rows(["x", "y"], old, new)
    assert [(r["crosswalk_key"], r["old_sid"], r["new_sid"]) for r in rows] == [
        ("b/x", "1-2-3-0", "1-2-9-0"),
        ("b/y", "4-5-6-0", "4-7-6-1"),
    ]
    assert [(r["level_1_changed"], r["level_2_changed"]) for r in rows] == [
        (False, False),
        (False, True),
    ]
