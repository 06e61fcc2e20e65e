"""Collision-aware last level: items that would share a full SID move, within a bounded rise
in their own error, to a free last-level code of the same prefix.

Nearest-centroid coding gives every item its best code alone, so near neighbours in a crowded
prefix collide and only the dedup suffix tells them apart. As LC-Rec's uniform last-level
mapping, the assignment here looks at the whole prefix group, but it is bounded and stable:
- an item's *choices* are the last-level codes whose squared error is at most
  ``(1 + slack)`` times its best (best first, at most ``MAX_CHOICES``); slack 0 keeps only the
  best, which is plain nearest-centroid coding;
- codes held by items that are not re-coded stay theirs, and a re-coded item keeps its held
  code while that is still among its choices, so SIDs do not move between runs;
- the other items, fewest choices first (then item_id), take their first free choice, or
  their best code when none is free (then the dedup suffix separates them).
The answer depends only on the prefix group, so the engines settle it as a group-by on prefix
(with one level, the prefix is empty and one group holds every item). Errors are measured
where the codebook quantizes: the embedding for RQ-KMeans, the latent space for RQ-VAE.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from transforms.semantic_ids.beam_search import smallest

MAX_CHOICES = 8
CHUNK_ITEMS = 8192  # bounds the (items × K) distance block

Codes = tuple[int, ...]
ItemKey = str | int


def last_level_choices(
    before_last: np.ndarray, last_centroids: np.ndarray, chosen: np.ndarray, slack: float
) -> list[tuple[int, ...]]:
    """Per item: ``chosen`` (its coded last level) then the other last-level codes whose
    squared error on ``before_last`` (what the earlier levels leave) is within the slack,
    nearest first."""
    if slack <= 0 or len(before_last) == 0:
        return [(int(code),) for code in chosen]
    choices: list[tuple[int, ...]] = []
    norms = (last_centroids**2).sum(1)
    for start in range(0, len(before_last), CHUNK_ITEMS):
        part = before_last[start : start + CHUNK_ITEMS]
        picked = chosen[start : start + CHUNK_ITEMS]
        errors = np.maximum((part**2).sum(1)[:, None] - 2 * part @ last_centroids.T + norms, 0)
        limit = errors[np.arange(len(part)), picked] * (1 + slack)
        nearest = smallest(errors, MAX_CHOICES + 1)
        within = np.take_along_axis(errors, nearest, axis=1) <= limit[:, None]
        for best, codes, ok in zip(picked.tolist(), nearest.tolist(), within.tolist(), strict=True):
            others = [c for c, fits in zip(codes, ok, strict=True) if fits and c != best]
            choices.append((best, *others[: MAX_CHOICES - 1]))
    return choices


def settle_last_level(
    new_codes: Mapping[ItemKey, Codes],
    choices: Mapping[ItemKey, tuple[int, ...]],
    held: Mapping[ItemKey, Codes],
) -> dict[ItemKey, Codes]:
    """Final codes per item of ``new_codes`` (all of one prefix group, or several: groups do
    not interact). ``held`` maps item_id → the codes an item holds now."""
    if all(len(options) == 1 for options in choices.values()):
        return dict(new_codes)  # no slack: every item keeps its nearest codes
    taken = {codes for item_id, codes in held.items() if item_id not in new_codes}
    settled: dict[ItemKey, Codes] = {}
    for item_id, codes in new_codes.items():
        kept = held.get(item_id)
        if kept is not None and kept[:-1] == codes[:-1] and kept[-1] in choices[item_id]:
            settled[item_id] = kept
            taken.add(kept)
    waiting = sorted(set(new_codes) - set(settled), key=lambda i: (len(choices[i]), i))
    for item_id in waiting:
        prefix = new_codes[item_id][:-1]
        free = [(*prefix, c) for c in choices[item_id] if (*prefix, c) not in taken]
        settled[item_id] = free[0] if free else new_codes[item_id]
        taken.add(settled[item_id])
    return settled


def settle_batch(codes: np.ndarray, choices: list[tuple[int, ...]]) -> np.ndarray:
    """``settle_last_level`` for one batch of new items (rows of ``codes``), none held."""
    rows = {n: tuple(row) for n, row in enumerate(codes.tolist())}
    settled = settle_last_level(rows, dict(enumerate(choices)), {})
    return np.asarray([settled[n] for n in range(len(rows))], dtype=codes.dtype).reshape(
        codes.shape
    )
