"""Two small, standard consumers of item features, in torch on CPU.

Both score items by a dot product with one vector per item, built by ``ItemTower`` from one
representation: a trainable ID embedding, a learned projection of a frozen content vector
(description or metadata embedding), and/or a mean of SID token embeddings.

- ``SASRec`` (Kang & McAuley 2018): causal self-attention over the history; input and output
  item vectors are shared.
- ``TwoTower``: the user tower is an MLP over the running mean of the history's item vectors;
  the item tower is an MLP over the item vectors (YouTube-DNN style retrieval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ItemInputs:
    """What an item representation is made of, per item index 0..N (0 pads)."""

    n_items: int
    use_id: bool
    content: np.ndarray | None = None  # (N + 1, D) float32, zero rows where missing
    tokens: list[list[int]] | None = None  # per index, token ids (empty where missing)
    vocab: int = 0


class ItemTower(nn.Module):
    """One vector per item index from an ``ItemInputs``."""

    def __init__(self, inputs: ItemInputs, dim: int, id_dropout: float = 0.0):
        super().__init__()
        self.id_dropout = id_dropout
        self.ids = nn.Embedding(inputs.n_items + 1, dim) if inputs.use_id else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.05)
        self.project = None
        if inputs.content is not None:
            self.register_buffer("content", torch.from_numpy(inputs.content))
            self.project = nn.Linear(inputs.content.shape[1], dim)
        self.bag = None
        if inputs.tokens is not None:
            lengths = torch.tensor([len(t) for t in inputs.tokens])
            self.register_buffer("flat", torch.tensor([i for t in inputs.tokens for i in t]))
            self.register_buffer("offsets", torch.cumsum(lengths, 0) - lengths)
            self.bag = nn.EmbeddingBag(max(1, inputs.vocab), dim, mode="mean")
            nn.init.normal_(self.bag.weight, std=0.05)
        pad = torch.ones(inputs.n_items + 1, 1)
        pad[0] = 0
        self.register_buffer("pad", pad)

    def forward(self) -> torch.Tensor:
        parts = []
        if self.ids is not None:
            parts.append(self._id_vectors())
        if self.project is not None:
            parts.append(self.project(self.content))
        if self.bag is not None:
            parts.append(self.bag(self.flat, self.offsets))
        return sum(parts) * self.pad

    def _id_vectors(self) -> torch.Tensor:
        """ID embeddings; in training with content, some items lose theirs (DropoutNet), so
        the content path learns to score an item on its own, as it must for a cold item."""
        weight = self.ids.weight
        has_content = self.project is not None or self.bag is not None
        if not (self.training and has_content and self.id_dropout):
            return weight
        keep = torch.rand(weight.shape[0], 1) >= self.id_dropout
        return weight * keep


class SASRec(nn.Module):
    def __init__(self, items: ItemTower, dim: int, max_len: int, dropout: float, layers: int = 2):
        super().__init__()
        self.items, self.dim = items, dim
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(
            dim, 2, 2 * dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(max_len))

    def forward(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, T, dim), item vectors (N + 1, dim)) for left-padded ``seqs``."""
        vectors = self.items()
        steps = seqs.shape[1]
        x = vectors[seqs] * math.sqrt(self.dim) + self.positions.weight[-steps:]
        x = self.dropout(x) * (seqs > 0).unsqueeze(-1)
        states = self.encoder(x, mask=self.causal[:steps, :steps], is_causal=True)
        return self.norm(states), vectors


class TwoTower(nn.Module):
    def __init__(self, items: ItemTower, dim: int, dropout: float):
        super().__init__()
        self.items = items
        self.user = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.item = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors after each step (B, T, dim), item vectors (N + 1, dim))."""
        vectors = self.items()
        mask = (seqs > 0).unsqueeze(-1).float()
        running = torch.cumsum(vectors[seqs] * mask, 1) / torch.cumsum(mask, 1).clamp(min=1)
        return self.user(running), self.item(vectors)


def build_model(name: str, inputs: ItemInputs, config) -> nn.Module:
    """``sasrec`` or ``two_tower`` over ``inputs``, sized by an ``EvaluateConfig``."""
    tower = ItemTower(inputs, config.dim, config.id_dropout)
    if name == "sasrec":
        return SASRec(tower, config.dim, config.max_len, config.dropout, config.layers)
    if name == "two_tower":
        return TwoTower(tower, config.dim, config.dropout)
    raise ValueError(f"unknown model {name!r}: sasrec or two_tower")
