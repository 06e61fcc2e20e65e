"""RQ-KMeans (OneRec): k-means on the embeddings, then on the residuals, level by level.

k-means runs in FAISS. Dead codes (centroids no item chose) are re-seeded with the worst-fit
items and refined, so a level never wastes codes. ``balanced`` adds capacity-constrained
refinement so every code holds about n/K items, which spreads SIDs further.

After the level-by-level fit, ``refine_steps`` passes alternate a beam-search assignment of
every item with a re-fit of each level's centroids on what the other levels leave (block
coordinate descent on the reconstruction error, as FAISS's RQ codebook refinement). The
codebook records its ``beam_width``, so assignment searches the same way as the fit did.
"""

from __future__ import annotations

import logging

import numpy as np

from transforms.semantic_ids.beam_search import beam_quantize, reconstruct_sum
from transforms.semantic_ids.codebook import Codebook, TooFewEmbeddings
from transforms.semantic_ids.metrics import codebook_health

logger = logging.getLogger(__name__)
REFINE_STEPS = 3
# Balance only codes with room to balance: with a few items per code, capacity limits would
# just split near-duplicates by float noise (and engines differ in the last bits).
BALANCE_MIN_ITEMS_PER_CODE = 4
BEAM_WIDTH = 3  # paths kept by the residual beam search (FAISS keeps 5)
CODEBOOK_REFINE_STEPS = 1  # assignment + per-level re-fit passes after the level-wise fit


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


def nearest(data: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, squared distance) per row, with FAISS."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    distances, labels = index.search(np.ascontiguousarray(data, dtype=np.float32), 1)
    return labels[:, 0], distances[:, 0]


def reseed_dead_codes(data: np.ndarray, centroids: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Move unused centroids onto the worst-fit items, then refine with Lloyd steps."""
    centroids = centroids.copy()
    reseeded = 0
    for _ in range(REFINE_STEPS):
        labels, distances = nearest(data, centroids)
        dead = np.flatnonzero(np.bincount(labels, minlength=len(centroids)) == 0)
        if not len(dead):
            break
        worst = np.argsort(-distances)[: len(dead)]
        jitter = np.random.default_rng(seed).normal(0, 1e-4, (len(worst), data.shape[1]))
        centroids[dead[: len(worst)]] = data[worst] + jitter
        reseeded += len(dead)
        centroids = _lloyd(data, centroids, nearest(data, centroids)[0])
    return centroids, reseeded


def _lloyd(data: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One centroid update: each used centroid moves to the mean of its items."""
    from scipy.sparse import csr_matrix

    members = csr_matrix(
        (np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
        shape=(len(centroids), len(labels)),
    )
    sums = np.asarray(members @ data, dtype=centroids.dtype)  # ~15x faster than np.add.at
    counts = np.bincount(labels, minlength=len(centroids))
    used = counts > 0
    centroids = centroids.copy()
    centroids[used] = sums[used] / counts[used, None]
    return centroids


def balanced_labels(data: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Capacity-constrained assignment (≤ ceil(n/K) items per code), in rounds: every
    unplaced item proposes its nearest open code (a FAISS search, so memory stays O(n)),
    and each code keeps the proposers it helps most (the largest drop in squared error,
    |x|² - |x - c|²) up to its remaining room."""
    n, k = len(data), len(centroids)
    room = np.full(k, int(np.ceil(n / k)))
    labels = np.full(n, -1)
    norms = (data**2).sum(1)
    while (open_items := np.flatnonzero(labels < 0)).size:
        open_codes = np.flatnonzero(room > 0)
        nearest_open, distance = nearest(data[open_items], centroids[open_codes])
        choice = open_codes[nearest_open]
        order = np.lexsort((distance - norms[open_items], choice))  # by code, then by gain
        sorted_codes = choice[order]
        starts = np.searchsorted(sorted_codes, sorted_codes, side="left")
        rank = np.arange(len(order)) - starts
        accepted = order[rank < room[sorted_codes]]
        labels[open_items[accepted]] = choice[accepted]
        room -= np.bincount(choice[accepted], minlength=k)
    return labels


def fit_level(
    data: np.ndarray, k: int, *, iters: int, redo: int, seed: int, balanced: bool
) -> tuple[np.ndarray, int]:
    centroids = _kmeans(data, k, iters, seed, redo)
    centroids, reseeded = reseed_dead_codes(data, centroids, seed)
    if balanced:
        for _ in range(REFINE_STEPS):
            centroids = _lloyd(data, centroids, balanced_labels(data, centroids))
    return centroids, reseeded


def refit_levels(
    data: np.ndarray, centroids: np.ndarray, codes: np.ndarray, *, balanced: bool = False
) -> np.ndarray:
    """Each level's centroids become the mean, over their items, of what the other levels
    leave unexplained (x minus the other levels' centroids); unused codes stay put. With
    ``balanced``, each level's items are first re-assigned under the capacity limit."""
    centroids, codes = centroids.copy(), codes.copy()
    residual = data - reconstruct_sum(centroids, codes)
    for level in range(len(centroids)):
        target = residual + centroids[level][codes[:, level]]
        if balanced:
            codes[:, level] = balanced_labels(target, centroids[level])
        centroids[level] = _lloyd(target, centroids[level], codes[:, level])
        residual = target - centroids[level][codes[:, level]]
    return centroids


def refine_codebook(
    data: np.ndarray, centroids: np.ndarray, *, beam_width: int, steps: int, balanced: bool
) -> np.ndarray:
    """``steps`` passes of (beam-search) assignment followed by a per-level re-fit."""
    for _ in range(steps):
        codes, _ = beam_quantize(data, centroids, beam_width)
        centroids = refit_levels(data, centroids, codes, balanced=balanced)
    return centroids


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
    balanced: bool = True,
    beam_width: int = BEAM_WIDTH,
    refine_steps: int = CODEBOOK_REFINE_STEPS,
    collision_slack: float = 0.0,
) -> Codebook:
    """Fit ``levels`` residual codebooks; K is scaled down (and recorded) for tiny corpora."""
    data = np.asarray(embeddings, dtype=np.float32)
    if len(data) < 2:
        raise TooFewEmbeddings(f"RQ-KMeans needs at least 2 embeddings to fit, got {len(data)}")
    if beam_width < 1 or refine_steps < 0:
        raise ValueError(
            f"RQ-KMeans needs beam_width >= 1 and refine_steps >= 0, got {beam_width}, "
            f"{refine_steps}"
        )
    k = effective_codebook_size(codebook_size, len(data), levels)
    if k < codebook_size:
        logger.warning(
            "semantic_ids: %d items only, codebook_size scaled %d → %d", len(data), codebook_size, k
        )
    balance = balanced and len(data) >= BALANCE_MIN_ITEMS_PER_CODE * k
    residual, centroids, reseeded = data.copy(), [], []
    for level in range(levels):
        level_centroids, count = fit_level(
            residual, k, iters=iters, redo=redo, seed=seed + level, balanced=balance
        )
        centroids.append(level_centroids)
        reseeded.append(count)
        residual = residual - level_centroids[nearest(residual, level_centroids)[0]]
    centroids = refine_codebook(
        data, np.stack(centroids), beam_width=beam_width, steps=refine_steps, balanced=balance
    )
    codebook = Codebook(
        version=version,
        method="rq_kmeans",
        centroids=centroids,
        encoder=encoder,
        codebook_size_requested=codebook_size,
        n_fit=len(data),
        config={
            "levels": levels,
            "codebook_size": codebook_size,
            "iters": iters,
            "redo": redo,
            "seed": seed,
            "balanced": balanced,
            "beam_width": beam_width,
            "refine_steps": refine_steps,
            "collision_slack": collision_slack,
        },
    )
    codebook.metrics = {
        **codebook_health(codebook, data),
        "reseeded_codes": reseeded,
        "balanced_applied": balance,
    }
    return codebook
