"""Codebook health: is the codebook used, spread out, faithful, and are prefixes meaningful?"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from transforms.semantic_ids.collisions import settle_batch

if TYPE_CHECKING:
    from transforms.semantic_ids.codebook import Codebook

COHERENCE_PAIRS = 20_000


def prefix_coherence(embeddings: np.ndarray, first_codes: np.ndarray, seed: int = 0) -> float:
    """Mean cosine of pairs sharing a level-1 code ÷ mean cosine of random pairs (>1 is good)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(unit), (2, COHERENCE_PAIRS))
    random_cos = float(np.mean(np.sum(unit[a] * unit[b], axis=1)))
    order = np.argsort(first_codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(first_codes[order])) + 1)
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return float("nan")
    sizes = np.array([len(g) for g in groups], dtype=float)
    picks = rng.choice(len(groups), COHERENCE_PAIRS, p=sizes / sizes.sum())
    left = np.array([rng.choice(groups[i]) for i in picks])
    right = np.array([rng.choice(groups[i]) for i in picks])
    keep = left != right
    within = float(np.mean(np.sum(unit[left[keep]] * unit[right[keep]], axis=1)))
    return round(within / random_cos, 4) if abs(random_cos) > 1e-6 else round(within, 4)


def codebook_health(codebook: Codebook, embeddings: np.ndarray) -> dict[str, Any]:
    """Unique fraction and MSE (of the nearest codes, and of the codes assigned once
    collisions move within the slack), per-level usage / perplexity / entropy, collisions,
    coherence."""
    data = np.asarray(embeddings, dtype=np.float32)
    codes, choices = codebook.encode_with_choices(data)
    assigned = settle_batch(codes, choices)
    tuples = Counter(map(tuple, codes.tolist()))
    usage, perplexity, entropy = [], [], []
    for level in range(codebook.levels):
        counts = np.bincount(codes[:, level], minlength=codebook.codebook_size)
        probs = counts[counts > 0] / counts.sum()
        bits = float(-(probs * np.log2(probs)).sum())
        usage.append(round(float((counts > 0).mean()), 4))
        perplexity.append(round(2**bits, 3))
        entropy.append(round(bits, 4))
    return {
        "n_items": int(len(codes)),
        "unique_fraction": round(len(tuples) / max(1, len(codes)), 4),
        "unique_fraction_assigned": round(
            len(set(map(tuple, assigned.tolist()))) / max(1, len(codes)), 4
        ),
        "max_items_per_id": int(max(tuples.values(), default=0)),
        "max_collisions": int(max(tuples.values(), default=1)) - 1,  # = the largest dedup suffix
        "per_level_usage": usage,
        "per_level_perplexity": perplexity,
        "per_level_entropy_bits": entropy,
        "reconstruction_mse": reconstruction_mse(codebook, data, codes),
        "reconstruction_mse_assigned": reconstruction_mse(codebook, data, assigned),
        "prefix_coherence": prefix_coherence(data, codes[:, 0]),
    }


def reconstruction_mse(codebook: Codebook, data: np.ndarray, codes: np.ndarray) -> float:
    """Mean squared error (summed over dimensions) of ``codes`` reconstructing ``data``."""
    return round(float(((data - codebook.reconstruct(codes)) ** 2).sum(1).mean()), 6)
