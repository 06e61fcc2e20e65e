"""A fitted residual codebook: encode embeddings to L codes, save to and load from a table row.

RQ-KMeans quantizes the embedding itself. RQ-VAE first maps it through an MLP encoder into a
latent space and reconstructs through an MLP decoder; both MLPs travel with the codebook, so
assignment needs nothing but this object (plain numpy, no torch).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import EnrichError
from transforms.semantic_ids.beam_search import beam_quantize
from transforms.semantic_ids.collisions import last_level_choices, settle_batch


class TooFewEmbeddings(EnrichError, ValueError):
    """The corpus is too small to fit a codebook (fewer than 2 embeddings): a run notes it and
    goes on; any other failure of a fit is an error."""


Layers = list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,)) per Linear


def mlp_forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """ReLU MLP (no activation after the last layer), as torch.nn.Linear stores weights."""
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight.T + bias
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


@dataclass
class Codebook:
    version: str
    method: str
    centroids: np.ndarray  # (levels, codebook_size, latent dim) float32
    encoder: str
    codebook_size_requested: int
    n_fit: int
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    mlp_encoder: Layers = field(default_factory=list)  # empty: quantize the embedding itself
    mlp_decoder: Layers = field(default_factory=list)
    sentencepiece_model: bytes | None = None

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        """The embedding dimension the codebook accepts."""
        return (
            int(self.mlp_encoder[0][0].shape[1])
            if self.mlp_encoder
            else int(self.centroids.shape[2])
        )

    def to_latent(self, embeddings: np.ndarray) -> np.ndarray:
        data = np.asarray(embeddings, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"codebook {self.version} expects dim {self.dim}, got {data.shape}")
        return mlp_forward(self.mlp_encoder, data).astype(np.float32) if self.mlp_encoder else data

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Residual assignment (greedy or beam search): (n, dim) → (n, levels) int32 codes."""
        return self.quantize(self.to_latent(embeddings))[0]

    @property
    def beam_width(self) -> int:
        """Paths kept by the residual beam search; 1 (greedy) for codebooks fitted before it."""
        return int(self.config.get("beam_width", 1))

    def quantize(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, final residual) for latent vectors: greedy or beam search, per the fit."""
        return beam_quantize(latent, self.centroids, self.beam_width)

    @property
    def collision_slack(self) -> float:
        """How much (relative) error an item may take on to avoid a shared SID; 0 (nearest
        codes only) for codebooks fitted before it."""
        return float(self.config.get("collision_slack", 0.0))

    def encode_with_choices(self, embeddings: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
        """(codes, last-level choices per item) for collision-aware assignment."""
        codes, residual = self.quantize(self.to_latent(embeddings))
        last = self.centroids[-1]
        before_last = residual + last[codes[:, -1]]
        return codes, last_level_choices(before_last, last, codes[:, -1], self.collision_slack)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes for a batch of new items as the pipeline assigns them (no SIDs held yet):
        nearest codes, then collisions moved within the slack."""
        return settle_batch(*self.encode_with_choices(embeddings))

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Back to embedding space: the sum of chosen centroids (through the decoder, if any)."""
        latent = sum(self.centroids[level][codes[:, level]] for level in range(self.levels))
        return mlp_forward(self.mlp_decoder, latent) if self.mlp_decoder else latent

    def to_row(self) -> dict[str, Any]:
        arrays = {"centroids": self.centroids.astype(np.float32)}
        for prefix, layers in (("enc", self.mlp_encoder), ("dec", self.mlp_decoder)):
            for i, (weight, bias) in enumerate(layers):
                arrays[f"{prefix}_w{i}"], arrays[f"{prefix}_b{i}"] = weight, bias
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return {
            "codebook_version": self.version,
            "method": self.method,
            "levels": self.levels,
            "codebook_size": self.codebook_size,
            "codebook_size_requested": self.codebook_size_requested,
            "dim": self.dim,
            "encoder": self.encoder,
            "n_fit": self.n_fit,
            "weights_npz": buffer.getvalue(),
            "sentencepiece_model": self.sentencepiece_model,
            "metrics_json": json.dumps(self.metrics, sort_keys=True),
            "config_json": json.dumps(self.config, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Codebook:
        arrays = np.load(io.BytesIO(row["weights_npz"]), allow_pickle=False)

        def layers(prefix: str) -> Layers:
            count = sum(1 for key in arrays.files if key.startswith(f"{prefix}_w"))
            return [(arrays[f"{prefix}_w{i}"], arrays[f"{prefix}_b{i}"]) for i in range(count)]

        return cls(
            version=row["codebook_version"],
            method=row["method"],
            centroids=arrays["centroids"],
            encoder=row["encoder"],
            codebook_size_requested=row["codebook_size_requested"],
            n_fit=row["n_fit"],
            metrics=json.loads(row["metrics_json"] or "{}"),
            config=json.loads(row["config_json"] or "{}"),
            mlp_encoder=layers("enc"),
            mlp_decoder=layers("dec"),
            sentencepiece_model=row.get("sentencepiece_model"),
        )
