"""A fitted residual codebook: encode embeddings to L codes, save to and load from a table row."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Codebook:
    version: str
    method: str
    centroids: np.ndarray  # (levels, codebook_size, dim) float32
    encoder: str
    codebook_size_requested: int
    n_fit: int
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[2])

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Residual nearest-centroid assignment: (n, dim) → (n, levels) int32 codes."""
        codes, _ = self.encode_with_residual(embeddings)
        return codes

    def encode_with_residual(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = np.asarray(embeddings, dtype=np.float32).copy()
        if residual.ndim != 2 or residual.shape[1] != self.dim:
            raise ValueError(
                f"codebook {self.version} expects dim {self.dim}, got {residual.shape}"
            )
        codes = np.empty((len(residual), self.levels), dtype=np.int32)
        for level, centroids in enumerate(self.centroids):
            distances = (
                (residual**2).sum(1, keepdims=True)
                - 2 * residual @ centroids.T
                + (centroids**2).sum(1)
            )
            codes[:, level] = distances.argmin(1)
            residual -= centroids[codes[:, level]]
        return codes, residual

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        return sum(self.centroids[level][codes[:, level]] for level in range(self.levels))

    def to_row(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        np.save(buffer, self.centroids.astype(np.float32), allow_pickle=False)
        return {
            "codebook_version": self.version,
            "method": self.method,
            "levels": self.levels,
            "codebook_size": self.codebook_size,
            "codebook_size_requested": self.codebook_size_requested,
            "dim": self.dim,
            "encoder": self.encoder,
            "n_fit": self.n_fit,
            "centroids_npy": buffer.getvalue(),
            "metrics_json": json.dumps(self.metrics, sort_keys=True),
            "config_json": json.dumps(self.config, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Codebook:
        centroids = np.load(io.BytesIO(row["centroids_npy"]), allow_pickle=False)
        return cls(
            version=row["codebook_version"],
            method=row["method"],
            centroids=centroids,
            encoder=row["encoder"],
            codebook_size_requested=row["codebook_size_requested"],
            n_fit=row["n_fit"],
            metrics=json.loads(row["metrics_json"] or "{}"),
            config=json.loads(row["config_json"] or "{}"),
        )
