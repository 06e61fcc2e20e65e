"""RQ-KMeans (OneRec): k-means on the embeddings, then on the residuals, level by level."""

from __future__ import annotations

import logging

import numpy as np

from transforms.semantic_ids.codebook import Codebook
from transforms.semantic_ids.metrics import codebook_health

logger = logging.getLogger(__name__)


def effective_codebook_size(requested: int, n_items: int, levels: int) -> int:
    """Scale K down on small corpora so each code can hold a few items (K ≤ n/2, K ≥ 2)."""
    return int(max(2, min(requested, n_items // 2)))


def _kmeans(data: np.ndarray, k: int, iters: int, seed: int, redo: int) -> np.ndarray:
    import faiss

    kmeans = faiss.Kmeans(
        data.shape[1],
        k,
        niter=iters,
        seed=seed,
        nredo=redo,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=1 << 16,
    )
    kmeans.train(np.ascontiguousarray(data, dtype=np.float32))
    return kmeans.centroids.astype(np.float32)


def fit_rq_kmeans(
    embeddings: np.ndarray,
    *,
    levels: int,
    codebook_size: int,
    iters: int,
    seed: int,
    encoder: str,
    version: str,
    redo: int = 3,
) -> Codebook:
    """Fit ``levels`` residual codebooks; K is scaled down (and recorded) for tiny corpora."""
    data = np.asarray(embeddings, dtype=np.float32)
    if len(data) < 2:
        raise ValueError(f"RQ-KMeans needs at least 2 embeddings to fit, got {len(data)}")
    k = effective_codebook_size(codebook_size, len(data), levels)
    if k < codebook_size:
        logger.warning(
            "semantic_ids: %d items only, codebook_size scaled %d → %d", len(data), codebook_size, k
        )
    residual, centroids = data.copy(), []
    for level in range(levels):
        level_centroids = _kmeans(residual, k, iters, seed + level, redo)
        centroids.append(level_centroids)
        residual = residual - level_centroids[_nearest(residual, level_centroids)]
    codebook = Codebook(
        version=version,
        method="rq_kmeans",
        centroids=np.stack(centroids),
        encoder=encoder,
        codebook_size_requested=codebook_size,
        n_fit=len(data),
        config={
            "levels": levels,
            "codebook_size": codebook_size,
            "iters": iters,
            "redo": redo,
            "seed": seed,
        },
    )
    codebook.metrics = codebook_health(codebook, data)
    return codebook


def _nearest(data: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return index.search(np.ascontiguousarray(data), 1)[1][:, 0]
