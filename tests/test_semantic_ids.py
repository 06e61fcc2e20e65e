import numpy as np
import pytest

from transforms.semantic_ids import (
    Codebook,
    assign_dedup_suffixes,
    effective_codebook_size,
    fit_rq_kmeans,
    sid_string,
)


def clustered(n_clusters=8, per_cluster=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_clusters] + 0.1 * rng.normal(size=(n_clusters, dim))  # well apart
    points = centres.repeat(per_cluster, 0) + 0.05 * rng.normal(
        size=(n_clusters * per_cluster, dim)
    )
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), np.arange(n_clusters).repeat(per_cluster)


def fit(data, **kwargs):
    params = {
        "levels": 3,
        "codebook_size": 8,
        "iters": 20,
        "seed": 0,
        "encoder": "enc",
        "version": "v1",
    }
    return fit_rq_kmeans(data, **{**params, **kwargs})


def test_first_level_recovers_clusters_and_metrics_are_healthy():
    data, labels = clustered()
    codebook = fit(data)
    codes = codebook.encode(data)
    assert codes.shape == (len(data), 3) and codes.dtype == np.int32
    for cluster in range(8):  # each true cluster maps to one level-1 code
        assert len(set(codes[labels == cluster, 0])) == 1
    assert len(set(codes[:, 0])) == 8
    m = codebook.metrics
    assert m["per_level_usage"][0] == 1.0
    assert m["unique_fraction"] > 0.5
    assert m["reconstruction_mse"] < float(((data - data.mean(0)) ** 2).sum(1).mean())


def test_residual_levels_reduce_reconstruction_error():
    data, _ = clustered(seed=1)
    one, three = fit(data, levels=1), fit(data, levels=3)
    assert three.metrics["reconstruction_mse"] < one.metrics["reconstruction_mse"]


def test_fit_is_reproducible_with_a_seed():
    data, _ = clustered(seed=2)
    assert np.array_equal(fit(data).encode(data), fit(data).encode(data))


def test_tiny_corpus_scales_k_down():
    assert effective_codebook_size(256, 6, 3) == 3
    assert effective_codebook_size(256, 100_000, 3) == 256
    data, _ = clustered(n_clusters=3, per_cluster=2)
    codebook = fit(data, codebook_size=256)
    assert codebook.codebook_size == 3 and codebook.codebook_size_requested == 256


def test_fit_needs_two_items():
    with pytest.raises(ValueError, match="at least 2"):
        fit(np.ones((1, 4), np.float32))


def test_codebook_round_trips_through_a_table_row():
    data, _ = clustered()
    codebook = fit(data)
    again = Codebook.from_row(codebook.to_row())
    assert again.version == "v1" and again.metrics == codebook.metrics
    assert np.array_equal(again.encode(data), codebook.encode(data))


def test_encode_rejects_wrong_dimension():
    codebook = fit(clustered()[0])
    with pytest.raises(ValueError, match="expects dim 16"):
        codebook.encode(np.zeros((2, 5), np.float32))


def test_colliding_items_get_distinct_suffixes():
    suffixes = assign_dedup_suffixes({"b": (1, 2, 3), "a": (1, 2, 3), "c": (4, 5, 6)}, {})
    assert suffixes == {"a": 0, "b": 1, "c": 0}
    assert sid_string((1, 2, 3), suffixes["b"]) == "1-2-3-1"


def test_suffixes_are_stable_and_new_items_take_the_next_free_one():
    existing = {"b": ((1, 2, 3), 0), "z": ((1, 2, 3), 1)}
    suffixes = assign_dedup_suffixes({"a": (1, 2, 3), "b": (1, 2, 3)}, existing)
    assert suffixes["b"] == 0  # keeps its suffix although "a" sorts first
    assert suffixes["a"] == 2  # 0 and 1 are held by b and z


def test_an_item_whose_codes_changed_frees_its_old_suffix():
    existing = {"a": ((1, 1, 1), 0), "b": ((1, 1, 1), 1)}
    suffixes = assign_dedup_suffixes({"a": (2, 2, 2), "c": (1, 1, 1)}, existing)
    assert suffixes == {"a": 0, "c": 0}


def test_balanced_assignment_respects_capacity_and_keeps_free_choices():
    from transforms.semantic_ids.rq_kmeans import balanced_labels, nearest

    data, _ = clustered(n_clusters=4, per_cluster=30)
    centroids = np.stack([data[i * 30 : (i + 1) * 30].mean(0) for i in range(4)])
    # capacity not binding (equal clusters): every item keeps its nearest code
    assert np.array_equal(balanced_labels(data, centroids), nearest(data, centroids)[0])
    # one crowded cluster: no code holds more than ceil(n/K), every item is placed
    crowded = np.concatenate([data[:30], data[:30] + 0.01, data[30:40]])
    labels = balanced_labels(crowded, centroids)
    assert labels.min() >= 0 and np.bincount(labels).max() <= int(np.ceil(len(crowded) / 4))


def test_balanced_fit_spreads_a_skewed_corpus_over_more_sids():
    rng = np.random.default_rng(3)
    big = rng.normal(size=(16,)) + 0.3 * rng.normal(size=(300, 16))  # most items in one blob
    rest = 3 * rng.normal(size=(60, 16))
    data = np.concatenate([big, rest]).astype(np.float32)
    plain, balanced = fit(data, balanced=False), fit(data, balanced=True)
    assert balanced.config["balanced"] and not plain.config["balanced"]
    assert balanced.metrics["unique_fraction"] > plain.metrics["unique_fraction"]
    level1 = np.bincount(balanced.encode(data)[:, 0], minlength=8)
    assert level1.max() < np.bincount(plain.encode(data)[:, 0], minlength=8).max()


def test_balancing_skips_codes_without_room_to_balance():
    data, _ = clustered(n_clusters=4, per_cluster=3)  # 12 items, K=6: two items per code
    balanced = fit(data, codebook_size=6, balanced=True)
    assert balanced.config["balanced"] and not balanced.metrics["balanced_applied"]
    assert np.array_equal(balanced.centroids, fit(data, codebook_size=6, balanced=False).centroids)
