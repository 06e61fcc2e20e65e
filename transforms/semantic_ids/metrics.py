"""Codebook health: is the codebook used, spread out, and faithful to the embeddings?"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transforms.semantic_ids.codebook import Codebook


def codebook_health(codebook: Codebook, embeddings: np.ndarray) -> dict[str, Any]:
    """Unique fraction, per-level usage and perplexity, max collisions and reconstruction MSE."""
    codes, residual = codebook.encode_with_residual(embeddings)
    tuples = Counter(map(tuple, codes.tolist()))
    usage, perplexity = [], []
    for level in range(codebook.levels):
        counts = np.bincount(codes[:, level], minlength=codebook.codebook_size)
        probs = counts[counts > 0] / counts.sum()
        usage.append(round(float((counts > 0).mean()), 4))
        perplexity.append(round(float(np.exp(-(probs * np.log(probs)).sum())), 3))
    return {
        "n_items": int(len(codes)),
        "unique_fraction": round(len(tuples) / max(1, len(codes)), 4),
        "max_items_per_id": int(max(tuples.values(), default=0)),
        "per_level_usage": usage,
        "per_level_perplexity": perplexity,
        "reconstruction_mse": round(float((residual**2).sum(1).mean()), 6),
    }
