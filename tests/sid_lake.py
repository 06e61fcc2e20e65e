"""A lake seeded with clustered embeddings, for Semantic-ID fit / promotion tests."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from schemas import DeltaStore


def clustered_embeddings(n: int = 800, dim: int = 384, top: int = 16, sub: int = 8) -> np.ndarray:
    """Unit vectors in a two-level cluster hierarchy: structure a residual codebook can learn."""
    rng = np.random.default_rng(0)
    tops = rng.normal(size=(top, dim))
    subs = (tops[:, None, :] + 0.5 * rng.normal(size=(top, sub, dim))).reshape(-1, dim)
    data = subs[rng.integers(0, top * sub, n)] + 0.15 * rng.normal(size=(n, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def seed_lake(lake: Path, encoder: str) -> None:
    now = datetime.now(UTC)
    DeltaStore(lake).merge(
        "embeddings",
        [
            {
                "item_id": f"item{i:04d}",
                "embedding": v.tolist(),
                "dim": len(v),
                "encoder": encoder,
                "run_id": "seed",
                "updated_at": now,
            }
            for i, v in enumerate(clustered_embeddings())
        ],
    )


def codebook_rows(lake: Path) -> dict[str, dict]:
    rows = DeltaStore(lake).read("codebooks").to_pylist()
    return {r["codebook_version"]: r for r in rows}
