"""Generative retrieval over Semantic IDs (TIGER, Rajput et al. 2023).

An encoder-decoder (``torch.nn.Transformer``) reads a user's history as the SID tokens of its
items and decodes the next item's SID one level at a time. Beam search is constrained to SIDs
that exist (a prefix trie over every item's SID, cold items included), so every decoded SID
names an item; a cold item can be retrieved because its SID shares prefixes with warm ones.

Tokens: level ``l``, code ``c`` is token ``offset[l] + c`` (one vocabulary per level, as in
TIGER); 0 pads and 1 starts the decoder. With the dedup token, the last level is the item's
dedup suffix, which makes each SID unique; without it, items that collide share a SID and a
decoded SID stands for all of them (ranked by training popularity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from evaluation.split import Cases, Split

PAD, START = 0, 1


@dataclass
class SidCatalog:
    """Each item index's SID as token ids, and the items behind each SID."""

    tokens: np.ndarray  # (N + 1, levels) int64; row of zeros where an item has no SID
    vocab: int
    items_of: dict[tuple[int, ...], list[int]]  # SID → item indices, most popular first

    @property
    def levels(self) -> int:
        return self.tokens.shape[1]


def sid_catalog(
    split: Split,
    codes: dict[str, list[int]],
    dedup: dict[str, int] | None = None,
) -> SidCatalog:
    """The catalog of ``split``'s items from their codes (and dedup suffixes, if given)."""
    rows = {}
    for index, item in enumerate(split.item_ids, start=1):
        if codes.get(item):
            suffix = [int(dedup.get(item, 0))] if dedup is not None else []
            rows[index] = [int(c) for c in codes[item]] + suffix
    if not rows:
        raise ValueError("no item has a Semantic ID: generative retrieval has nothing to decode")
    levels = {len(r) for r in rows.values()}
    if len(levels) > 1:
        raise ValueError(f"Semantic IDs of {sorted(levels)} levels: use one codebook")
    width = np.max(np.array(list(rows.values())), axis=0) + 1
    offsets = START + 1 + np.concatenate([[0], np.cumsum(width)[:-1]])
    tokens = np.zeros((split.n_items + 1, len(width)), dtype=np.int64)
    for index, row in rows.items():
        tokens[index] = offsets + np.asarray(row)
    popularity = np.bincount(np.concatenate([*split.train, [0]]), minlength=split.n_items + 1)
    items_of: dict[tuple[int, ...], list[int]] = {}
    for index in sorted(rows, key=lambda i: (-popularity[i], i)):
        items_of.setdefault(tuple(tokens[index]), []).append(index)
    return SidCatalog(tokens, int(offsets[-1] + width[-1]), items_of)


def prefix_trie(catalog: SidCatalog) -> list[dict[tuple[int, ...], np.ndarray]]:
    """Per level, prefix → the tokens that may follow it (sorted)."""
    trie: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(catalog.levels)]
    for sid in catalog.items_of:
        for level in range(catalog.levels):
            trie[level].setdefault(sid[:level], set()).add(sid[level])
    return [{p: np.array(sorted(t)) for p, t in level.items()} for level in trie]


class Tiger(nn.Module):
    """A small encoder-decoder over SID tokens."""

    def __init__(
        self, vocab: int, levels: int, max_len: int, dim: int, layers: int, dropout: float
    ):
        super().__init__()
        self.dim, self.levels = dim, levels
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.source_positions = nn.Embedding(max_len * levels, dim)
        self.target_positions = nn.Embedding(levels, dim)
        self.transformer = nn.Transformer(
            dim,
            nhead=2,
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            dim_feedforward=2 * dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.out = nn.Linear(dim, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(levels))

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory, padding mask) of left-padded ``source`` token rows."""
        steps = source.shape[1]
        x = self.embed(source) * math.sqrt(self.dim) + self.source_positions.weight[-steps:]
        padding = source == PAD
        memory = self.transformer.encoder(x, src_key_padding_mask=padding)
        return memory, padding

    def decode(self, memory, padding, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (B, steps, vocab) after each token of ``prefix`` (which starts with START)."""
        steps = prefix.shape[1]
        y = self.embed(prefix) * math.sqrt(self.dim) + self.target_positions.weight[:steps]
        states = self.transformer.decoder(
            y,
            memory,
            tgt_mask=self.causal[:steps, :steps],
            tgt_is_causal=True,
            memory_key_padding_mask=padding,
        )
        return self.out(states)


def source_rows(histories: list[np.ndarray], catalog: SidCatalog, max_len: int) -> torch.Tensor:
    """The last ``max_len`` history items as SID tokens, left-padded (items without SIDs drop)."""
    rows = []
    for history in histories:
        tail = history[catalog.tokens[history, 0] > 0][-max_len:]
        rows.append(catalog.tokens[tail].reshape(-1))
    width = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            out[i, width - len(row) :] = row
    return torch.from_numpy(out)


def training_pairs(split: Split, catalog: SidCatalog, per_user: int, rng) -> list[tuple]:
    """(history, target) pairs: up to ``per_user`` positions per user (the last one always)."""
    pairs = []
    for sequence in split.train:
        usable = [t for t in range(1, len(sequence)) if catalog.tokens[sequence[t], 0] > 0]
        if not usable:
            continue
        earlier, last = usable[:-1], usable[-1]
        count = min(per_user - 1, len(earlier))
        chosen = set(rng.choice(earlier, count, replace=False).tolist()) if count else set()
        for t in sorted(chosen | {last}):
            pairs.append((sequence[:t], int(sequence[t])))
    return pairs


def fit_tiger(
    model: Tiger,
    split: Split,
    catalog: SidCatalog,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    max_len: int,
    per_user: int,
    seed: int,
) -> list[float]:
    """Teacher-forced cross-entropy on each pair's target SID; the loss of each epoch."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for _ in range(epochs):
        model.train()
        pairs = training_pairs(split, catalog, per_user, rng)
        order = rng.permutation(len(pairs))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = [pairs[i] for i in order[start : start + batch_size]]
            source = source_rows([h for h, _ in batch], catalog, max_len)
            target = torch.from_numpy(catalog.tokens[[t for _, t in batch]])
            loss = sid_loss(model, source, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / max(1, len(pairs)))
    return losses


def sid_loss(model: Tiger, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of each ``target`` row of SID tokens given its ``source``
    row (history items' SID tokens, or a query's words)."""
    prefix = torch.cat([torch.full((len(target), 1), START), target[:, :-1]], 1)
    memory, padding = model.encode(source)
    logits = model.decode(memory, padding, prefix)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


@torch.no_grad()
def constrained_beam_search(
    model: Tiger, source: torch.Tensor, trie, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(SIDs (B, width, levels), log-probabilities (B, width)), best first; only prefixes in
    ``trie`` are ever extended, so every SID returned exists (or is -inf padding)."""
    model.eval()
    memory, padding = model.encode(source)
    batch = len(source)
    paths = np.zeros((batch, 1, 0), dtype=np.int64)
    scores = np.zeros((batch, 1))
    for level in range(model.levels):
        beams = paths.shape[1]
        prefix = np.concatenate([np.full((batch, beams, 1), START), paths], 2)
        logits = model.decode(
            memory.repeat_interleave(beams, 0),
            padding.repeat_interleave(beams, 0),
            torch.from_numpy(prefix.reshape(batch * beams, -1)),
        )[:, -1]
        logp = torch.log_softmax(logits, -1).numpy().reshape(batch, beams, -1)
        allowed = np.full_like(logp, -np.inf)
        for b in range(batch):
            for k in range(beams):
                if np.isfinite(scores[b, k]):
                    nxt = trie[level].get(tuple(paths[b, k]))
                    if nxt is not None:
                        allowed[b, k, nxt] = scores[b, k] + logp[b, k, nxt]
        flat = allowed.reshape(batch, -1)
        keep = min(width, flat.shape[1])
        best = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
        parent, token = np.divmod(best, logp.shape[2])
        rows = np.arange(batch)[:, None]
        paths = np.concatenate([paths[rows, parent], token[:, :, None]], 2)
        scores = flat[rows, best]
    return paths, scores


def tiger_ranks(
    model: Tiger,
    cases: Cases,
    catalog: SidCatalog,
    trie,
    *,
    max_len: int,
    width: int,
    batch_size: int = 128,
) -> np.ndarray:
    """The 0-based rank of each target in the decoded list (SIDs expanded to their items,
    history items left out); ``catalog.tokens.shape[0]`` where the beam missed it."""
    missed = catalog.tokens.shape[0]
    out = []
    for start in range(0, len(cases), batch_size):
        histories = cases.histories[start : start + batch_size]
        sids, scores = constrained_beam_search(
            model, source_rows(histories, catalog, max_len), trie, width
        )
        for row, history in enumerate(histories):
            seen = set(history.tolist())
            ranked = [
                item
                for sid, score in zip(sids[row], scores[row], strict=True)
                if np.isfinite(score)
                for item in catalog.items_of.get(tuple(sid), [])
                if item not in seen
            ]
            target = cases.targets[start + row]
            out.append(ranked.index(target) if target in ranked else missed)
    return np.asarray(out, dtype=np.int64)
