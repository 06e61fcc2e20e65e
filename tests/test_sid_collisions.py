"""Collision-aware last level: colliding items move to a free nearby last-level code, within
the codebook's slack, and SIDs that are held never move."""

import numpy as np
import pytest

from core.config import SemanticIdConfig
from pipelines.sids import fit_codebook_on
from transforms.semantic_ids.collisions import MAX_CHOICES, last_level_choices, settle_last_level
from transforms.semantic_ids.dedup import settle_and_dedup


@pytest.fixture(scope="module")
def crowded():
    """Clusters in 32-d: many items per prefix, so nearest codes collide often."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(12, 32))
    x = centers[rng.integers(0, 12, 3000)] + 0.3 * rng.normal(size=(3000, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fit(x, slack):
    config = SemanticIdConfig(
        levels=3, codebook_size=16, kmeans_redo=1, sentencepiece_vocab=0, collision_slack=slack
    )
    return fit_codebook_on(x, config, "enc")


def _settled(codebook, x):
    return codebook.encode(x), codebook.assign(x)


def _errors(codebook, x, codes):
    return ((x - codebook.reconstruct(codes)) ** 2).sum(1)


def test_collisions_move_within_the_slack_and_raise_unique_sids(crowded):
    codebook = _fit(crowded, 0.1)
    assert codebook.collision_slack == 0.1
    nearest, settled = _settled(codebook, crowded)
    assert (settled[:, :-1] == nearest[:, :-1]).all()  # only the last level moves
    moved = (settled != nearest).any(1)
    assert moved.mean() > 0.05
    nearest_error, settled_error = (
        _errors(codebook, crowded, nearest),
        _errors(codebook, crowded, settled),
    )
    assert (settled_error <= nearest_error * 1.1 + 1e-5).all()
    unique = len({tuple(c) for c in settled.tolist()})
    assert unique > len({tuple(c) for c in nearest.tolist()}) * 1.1
    assert settled_error.mean() <= nearest_error.mean() * 1.02
    metrics = codebook.metrics  # the fit's health reports both figures
    assert metrics["unique_fraction_assigned"] == round(unique / len(crowded), 4)
    assert metrics["unique_fraction_assigned"] > metrics["unique_fraction"]


def test_slack_zero_and_codebooks_fitted_before_it_code_nearest_only(crowded):
    codebook = _fit(crowded, 0.0)
    nearest, settled = _settled(codebook, crowded)
    assert (nearest == settled).all()
    codebook.config.pop("collision_slack")  # a codebook row written before the setting
    assert codebook.collision_slack == 0.0
    assert all(len(c) == 1 for c in codebook.encode_with_choices(crowded[:50])[1])


def test_choices_start_with_the_coded_level_and_stay_within_the_slack():
    rng = np.random.default_rng(0)
    before_last = rng.normal(size=(200, 8)).astype(np.float32)
    last = rng.normal(size=(32, 8)).astype(np.float32)
    chosen = rng.integers(0, 32, 200)  # not always the nearest: choices must start with it
    choices = last_level_choices(before_last, last, chosen, 0.3)
    errors = ((before_last[:, None, :] - last[None]) ** 2).sum(2)
    for row, (picked, options) in enumerate(zip(chosen, choices, strict=True)):
        assert options[0] == picked and len(set(options)) == len(options) <= MAX_CHOICES
        assert (errors[row, list(options)] <= errors[row, picked] * 1.3 + 1e-4).all()
        assert list(options[1:]) == sorted(options[1:], key=lambda c: errors[row, c])
    assert max(len(c) for c in choices) > 1


def test_held_codes_stay_and_a_recoded_item_keeps_its_code_while_it_is_a_choice():
    held = {"a": (1, 2, 5), "b": (1, 2, 6)}
    new = {"b": (1, 2, 5), "c": (1, 2, 5), "d": (1, 2, 5), "e": (1, 2, 5)}
    choices = {"b": (5, 6), "c": (5, 7, 6), "d": (5,), "e": (5, 8)}
    settled = settle_last_level(new, choices, held)
    assert settled["b"] == (1, 2, 6)  # held and still a choice: kept
    assert settled["d"] == (1, 2, 5)  # no other choice: collides with a (dedup separates)
    assert settled["e"] == (1, 2, 8) and settled["c"] == (1, 2, 7)
    assigned = settle_and_dedup(new, choices, {"a": ((1, 2, 5), 0), "b": ((1, 2, 6), 0)})
    assert assigned["d"] == ((1, 2, 5), 1) and assigned["b"] == ((1, 2, 6), 0)


def test_fewest_choices_go_first_so_more_items_get_their_own_code():
    new = {"x": (0, 1), "y": (0, 1)}
    settled = settle_last_level(new, {"x": (1, 2), "y": (1,)}, {})
    assert settled == {"y": (0, 1), "x": (0, 2)}  # x sorts first by id but has a spare
