"""What a refit does to items' Semantic IDs: label alignment, churn figures and crosswalk rows.

A refit's codes are labels: cluster 17 of a new codebook has nothing to do with cluster 17 of
the old one. Greedy residual assignment does not depend on the order of a level's centroids, so
each level can be relabeled freely; ``aligned`` picks, level by level, the labels that agree
most with the old codebook on the same items (the Hungarian assignment over their contingency
table). After that, an item whose SID prefix changed has really moved: churn counts moves, not
renamings, and downstream features keyed by a prefix keep their meaning where they can.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from transforms.semantic_ids.codebook import Codebook

CHURN_LEVELS = (1, 2)  # prefixes whose change a refit reports (level 1, levels 1-2)


def matching_labels(old: np.ndarray, new: np.ndarray, size: int) -> np.ndarray:
    """``relabel[new_code]``: the old label each new code takes, so as many items as possible
    keep their label (codes in [0, size) for both)."""
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (new, old), 1)
    rows, columns = linear_sum_assignment(counts, maximize=True)
    relabel = np.empty(size, dtype=np.int64)
    relabel[rows] = columns
    return relabel


def aligned(candidate: Codebook, previous_codes: np.ndarray, latent: np.ndarray) -> Codebook:
    """``candidate`` with each level's centroids reordered so that its codes for the items of
    ``latent`` match ``previous_codes`` (their codes under the old codebook) where possible.
    Codes are the same partition as before; only the labels change."""
    size, levels = candidate.codebook_size, candidate.levels
    if previous_codes.shape[1] < levels or int(previous_codes.max(initial=0)) >= size:
        return candidate  # a different shape of codebook: labels cannot correspond
    codes, _ = candidate.quantize(latent)
    centroids = candidate.centroids.copy()
    for level in range(levels):
        relabel = matching_labels(previous_codes[:, level], codes[:, level], size)
        centroids[level, relabel] = candidate.centroids[level]
    return replace(candidate, centroids=centroids)


def churn(old: np.ndarray, new: np.ndarray) -> dict[str, Any]:
    """The share of items whose level-1 prefix, levels 1-2 prefix and whole code changed
    between two code arrays of the same items (rows aligned)."""
    if len(old) != len(new):
        raise ValueError(f"churn needs the same items on both sides ({len(old)} vs {len(new)})")
    figures: dict[str, Any] = {"items": len(old)}
    if not len(old):
        return figures
    for depth in CHURN_LEVELS:
        moved = (old[:, :depth] != new[:, :depth]).any(axis=1)
        figures[f"level_{depth}_prefix_changed"] = round(float(moved.mean()), 4)
    whole = min(old.shape[1], new.shape[1])
    moved = (old[:, :whole] != new[:, :whole]).any(axis=1) | (old.shape[1] != new.shape[1])
    figures["code_changed"] = round(float(moved.mean()), 4)
    return figures


def crosswalk_rows(
    item_ids: list[str],
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per item: its SID under the old and the new codebook, and which prefixes moved.
    ``old`` and ``new`` are semantic_ids rows (codes, sid, codebook_version) in item order."""
    rows = []
    for item_id, before, after in zip(item_ids, old, new, strict=True):
        moved = {
            f"level_{depth}_changed": list(before["codes"][:depth]) != list(after["codes"][:depth])
            for depth in CHURN_LEVELS
        }
        rows.append(
            {
                "crosswalk_key": f"{after['codebook_version']}/{item_id}",
                "item_id": item_id,
                "old_codebook_version": before["codebook_version"],
                "old_sid": before["sid"],
                "new_codebook_version": after["codebook_version"],
                "new_sid": after["sid"],
                **moved,
            }
        )
    return rows
