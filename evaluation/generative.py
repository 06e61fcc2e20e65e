"""Generative retrieval over Semantic IDs (TIGER, Rajput et al. 2023).

Two models decode an item's SID one level at a time: ``SidDecoder``, decoder-only (as GRID
offers), reads a user's history as the SID tokens of its items and continues with the next
item's (``enrich evaluate``'s ``tiger``); ``Tiger``, an encoder-decoder
(``torch.nn.Transformer``), reads any token rows, e.g. a query's words (generative search).
Beam search is constrained to SIDs that exist (a prefix trie over the items' SIDs), so every
decoded SID names an item; a cold item can be retrieved because its SID shares prefixes with
warm ones, and TIGER's cold-start rule (``admit_cold``) reserves part of the top 10 for the
best-scoring items unseen in training.

Tokens: level ``l``, code ``c`` is token ``offset[l] + c`` (one vocabulary per level, as in
TIGER); 0 pads and 1 starts the decoder. With the dedup token, the last level is the item's
dedup suffix, which makes each SID unique; without it, items that collide share a SID and a
decoded SID stands for all of them (ranked by training popularity).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from evaluation.split import Cases, Split

logger = logging.getLogger(__name__)
PAD, START = 0, 1


@dataclass
class SidCatalog:
    """Each item index's SID as token ids, and the items behind each SID."""

    tokens: np.ndarray  # (N + 1, levels) int64; row of zeros where an item has no SID
    vocab: int
    items_of: dict[tuple[int, ...], list[int]]  # SID → item indices, most popular first
    seen: np.ndarray | None = None  # bool per index: the item is in the training sequences

    @property
    def levels(self) -> int:
        return self.tokens.shape[1]

    def prefix_table(self) -> tuple[list[np.ndarray], int]:
        """Per level, the sorted keys of the SID prefixes that exist (up to and including that
        level), and how many there are in all: the prefix n-grams' vocabulary (2306.08121)."""
        keys = [np.unique(prefix_keys(self.tokens[1:], self.vocab)[:, level]) for level in
                range(self.levels)]  # fmt: skip
        keys = [k[k > 0] for k in keys]
        return keys, 1 + sum(len(k) for k in keys)


def prefix_keys(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """Each row's prefix at each level as one integer (mixed radix over the vocabulary)."""
    keys = np.zeros(tokens.shape, dtype=np.int64)
    running = np.zeros(tokens.shape[:-1], dtype=np.int64)
    for level in range(tokens.shape[-1]):
        running = running * vocab + tokens[..., level]
        keys[..., level] = np.where(tokens[..., level] > 0, running, 0)
    return keys


def prefix_ids(tokens: np.ndarray, vocab: int, table: list[np.ndarray]) -> np.ndarray:
    """The prefix n-gram id of each token of ``tokens`` (..., levels); 0 pads or is unknown."""
    keys = prefix_keys(tokens, vocab)
    out = np.zeros(tokens.shape, dtype=np.int64)
    offset = 1
    for level, known in enumerate(table):
        where = np.clip(np.searchsorted(known, keys[..., level]), 0, max(0, len(known) - 1))
        hit = (len(known) > 0) & (known[where] == keys[..., level]) if len(known) else False
        out[..., level] = np.where(hit, offset + where, 0)
        offset += len(known)
    return out


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
    return SidCatalog(tokens, int(offsets[-1] + width[-1]), items_of, popularity > 0)


def prefix_trie(
    catalog: SidCatalog, items: set[int] | None = None
) -> list[dict[tuple[int, ...], np.ndarray]]:
    """Per level, prefix → the tokens that may follow it (sorted); over the SIDs of ``items``
    only, if given."""
    trie: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(catalog.levels)]
    for sid, members in catalog.items_of.items():
        if items is not None and not items.intersection(members):
            continue
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

    def begin(self, source: torch.Tensor):
        """What decoding reads of ``source``: the encoder's memory and padding."""
        return self.encode(source)

    def next_logits(self, state, paths: torch.Tensor, beams: int) -> torch.Tensor:
        """Logits (B x beams, vocab) of the token after each row of ``paths`` (B x beams,
        level), the beams of one source row adjacent."""
        memory, padding = state
        prefix = torch.cat([torch.full((len(paths), 1), START), paths], 1)
        repeat = lambda x: x.repeat_interleave(beams, 0)  # noqa: E731
        return self.decode(repeat(memory), repeat(padding), prefix)[:, -1]


class _Block(nn.Module):
    """Pre-norm causal self-attention and feed-forward; keys and values of earlier positions
    may be given (``past``), so decoding reuses the history's."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, past=None):
        """(output, (keys, values)); ``mask`` (B, 1, T, S) is True where attention may go."""
        batch, steps, dim = x.shape
        q, k, v = (
            t.reshape(batch, steps, self.heads, -1).transpose(1, 2)
            for t in self.qkv(self.norm1(x)).split(dim, -1)
        )
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        p = self.drop.p if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(batch, steps, dim)))
        return x + self.drop(self.ff(self.norm2(x))), (k, v)


class SidDecoder(nn.Module):
    """Decoder-only generative retrieval (as GRID offers): one causal stack over the SID
    tokens of the history's items, then of the next item, each token predicting the next, so
    a training window teaches every position at once. With ``prefixes`` (the catalog's
    ``prefix_table``), each token also adds the embedding of its SID prefix (prefix n-grams,
    2306.08121)."""

    def __init__(
        self,
        catalog: SidCatalog,
        max_len: int,
        dim: int,
        layers: int,
        dropout: float,
        *,
        prefix_ngrams: bool = False,
        heads: int = 2,
    ):
        super().__init__()
        self.dim, self.levels, self.vocab = dim, catalog.levels, catalog.vocab
        self.prefix_keys, prefixes = catalog.prefix_table() if prefix_ngrams else ([], 0)
        self.embed = nn.Embedding(catalog.vocab, dim, padding_idx=PAD)
        self.prefix_embed = nn.Embedding(prefixes, dim, padding_idx=PAD) if prefixes else None
        self.slots = nn.Embedding(max_len + 1, dim)  # items from the end: the target is 0
        self.level_embed = nn.Embedding(self.levels, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm, self.drop = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.out = nn.Linear(dim, catalog.vocab)

    def inputs(self, tokens: torch.Tensor, first_slot: int) -> torch.Tensor:
        """Embeddings of whole items' tokens (B, items x levels), the last item at
        ``first_slot`` items from the end."""
        steps = tokens.shape[1]
        slot = first_slot + (steps - 1 - torch.arange(steps)) // self.levels
        x = self.embed(tokens) * math.sqrt(self.dim)
        x = x + self.slots(slot.clamp(max=self.slots.num_embeddings - 1))
        x = x + self.level_embed(torch.arange(steps) % self.levels)
        if self.prefix_embed is not None:
            rows = tokens.numpy().reshape(len(tokens), -1, self.levels)
            ids = prefix_ids(rows, self.vocab, self.prefix_keys).reshape(len(tokens), -1)
            x = x + self.prefix_embed(torch.from_numpy(ids))
        return self.drop(x)

    def run(self, x, mask, past=None):
        """The stack over ``x``: (final states, per block (keys, values))."""
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if past is None else past[i])
            cache.append(kv)
        return self.norm(x), cache

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) of the token after each of ``tokens`` (left-padded items)."""
        steps = tokens.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool).tril()
        real = tokens != PAD
        mask = (causal & real[:, None, :]) | torch.eye(steps, dtype=torch.bool)
        states, _ = self.run(self.inputs(tokens, 0), mask[:, None])
        return self.out(states)

    def begin(self, source: torch.Tensor):
        """The history's keys and values, padding and the logits of the first level."""
        steps = source.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool).tril()
        real = source != PAD
        mask = (causal & real[:, None, :]) | torch.eye(steps, dtype=torch.bool)
        states, cache = self.run(self.inputs(source, 1), mask[:, None])
        return cache, real, self.out(states[:, -1])

    def next_logits(self, state, paths: torch.Tensor, beams: int) -> torch.Tensor:
        """As ``Tiger.next_logits``: the history is encoded once, each beam's path on top."""
        cache, real, first = state
        if paths.shape[1] == 0:
            return first.repeat_interleave(beams, 0)
        steps = paths.shape[1]
        padded = torch.cat(
            [paths, torch.zeros(len(paths), self.levels - steps, dtype=paths.dtype)], 1
        )
        x = self.inputs(padded, 0)[:, :steps]
        own = torch.ones(steps, steps, dtype=torch.bool).tril()
        history = real.repeat_interleave(beams, 0)[:, None, :].expand(-1, steps, -1)
        mask = torch.cat([history, own.expand(len(paths), -1, -1)], 2)[:, None]
        past = [(k.repeat_interleave(beams, 0), v.repeat_interleave(beams, 0)) for k, v in cache]
        states, _ = self.run(x, mask, past)
        return self.out(states[:, -1])


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


def sid_loss(model: Tiger, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of each ``target`` row of SID tokens given its ``source``
    row (history items' SID tokens, or a query's words)."""
    prefix = torch.cat([torch.full((len(target), 1), START), target[:, :-1]], 1)
    memory, padding = model.encode(source)
    logits = model.decode(memory, padding, prefix)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


@torch.no_grad()
def constrained_beam_search(
    model: Tiger | SidDecoder,
    source: torch.Tensor,
    trie,
    width: int,
    exclude: list[set[tuple[int, ...]]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(SIDs (B, width, levels), log-probabilities (B, width)), best first; only prefixes in
    ``trie`` are ever extended, so every SID returned exists (or is -inf padding). With
    ``exclude`` (per row, SIDs to leave out: e.g. the history's), a prefix whose every SID is
    excluded is never extended, so the beam is not spent on them."""
    model.eval()
    state = model.begin(source)
    batch = len(source)
    leaves = leaf_counts(trie) if exclude is not None else None
    paths = np.zeros((batch, 1, 0), dtype=np.int64)
    scores = np.zeros((batch, 1))
    for level in range(model.levels):
        beams = paths.shape[1]
        logits = model.next_logits(state, torch.from_numpy(paths.reshape(batch * beams, -1)), beams)
        logp = torch.log_softmax(logits, -1).numpy().reshape(batch, beams, -1)
        allowed = np.full_like(logp, -np.inf)
        for b in range(batch):
            for k in range(beams):
                if np.isfinite(scores[b, k]):
                    nxt = trie[level].get(tuple(paths[b, k]))
                    if nxt is not None:
                        allowed[b, k, nxt] = scores[b, k] + logp[b, k, nxt]
            if leaves is not None:
                _block_excluded(allowed[b], paths[b], exclude[b], leaves[level], level)
        flat = allowed.reshape(batch, -1)
        keep = min(width, flat.shape[1])
        best = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
        parent, token = np.divmod(best, logp.shape[2])
        rows = np.arange(batch)[:, None]
        paths = np.concatenate([paths[rows, parent], token[:, :, None]], 2)
        scores = flat[rows, best]
    return paths, scores


def leaf_counts(trie) -> list[dict[tuple[int, ...], int]]:
    """Per level, prefix (up to and including that level) → SIDs of ``trie`` under it."""
    counts: list[dict[tuple[int, ...], int]] = [{} for _ in trie]
    for level in range(len(trie) - 1, -1, -1):
        for prefix, tokens in trie[level].items():
            for token in tokens.tolist():
                node = (*prefix, token)
                below = trie[level + 1].get(node) if level + 1 < len(trie) else None
                counts[level][node] = (
                    1 if below is None else sum(counts[level + 1][(*node, t)] for t in below)
                )
    return counts


def _block_excluded(allowed, paths, excluded, leaves, level: int) -> None:
    """Set -inf where a beam's next token leads to a prefix all of whose SIDs are excluded."""
    below: dict[tuple[int, ...], int] = {}
    for sid in excluded:
        below[sid[: level + 1]] = below.get(sid[: level + 1], 0) + 1
    beam_of = {tuple(path): k for k, path in enumerate(paths.tolist())}
    for prefix, count in below.items():
        k = beam_of.get(prefix[:-1])
        if k is not None and count >= leaves.get(prefix, 0):
            allowed[k, prefix[-1]] = -np.inf


def holdout_last(train: list[np.ndarray]) -> tuple[list[np.ndarray], Cases]:
    """A validation split inside the training sequences: each user's last training item is a
    validation target (its history before it); the sequences without it are fitted. The test
    cases are never read."""
    cases, fitted = Cases(), []
    for sequence in train:
        if len(sequence) >= 3:
            cases.add(sequence[:-1], int(sequence[-1]))
            sequence = sequence[:-1]
        fitted.append(sequence)
    return fitted, cases


def fit_decoder(
    model: SidDecoder,
    sequences: list[np.ndarray],
    catalog: SidCatalog,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    max_len: int,
    seed: int,
    validation: Cases | None = None,
    patience: int = 3,
    width: int = 10,
) -> list[dict[str, float]]:
    """Next-token cross-entropy over windows of ``max_len + 1`` items; with ``validation``,
    HR@10 on it after each epoch, the best epoch's weights kept and training stopped after
    ``patience`` epochs without gain. Per epoch: loss (and validation HR@10)."""
    windows = source_rows(
        [
            s[max(0, end - max_len - 1) : end]
            for s in sequences
            for end in range(len(s), 1, -max_len)
        ],
        catalog,
        max_len + 1,
    )
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    trie = prefix_trie(catalog) if validation is not None else None
    log, best, best_state, stale = [], -1.0, None, 0
    for _ in range(epochs):
        model.train()
        total = 0.0
        for batch in windows[torch.randperm(len(windows), generator=generator)].split(batch_size):
            logits = model(batch)[:, :-1]
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), ignore_index=PAD
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        log.append({"loss": round(total / max(1, len(windows)), 5)})
        if validation is None:
            continue
        rank = tiger_ranks(model, validation, catalog, trie, max_len=max_len, width=width)
        log[-1]["val_hr@10"] = hr = float(np.mean(rank < 10))
        logger.info("tiger epoch %d: %s", len(log), log[-1])
        if hr > best:
            best, stale = hr, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif (stale := stale + 1) >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return log


def watched_sids(history: np.ndarray, catalog: SidCatalog) -> set[tuple[int, ...]]:
    """The SIDs all of whose items are in ``history`` (nothing left to recommend there)."""
    watched = set(history.tolist())
    sids = {tuple(catalog.tokens[i]) for i in watched if catalog.tokens[i, 0] > 0}
    return {sid for sid in sids if watched.issuperset(catalog.items_of.get(sid, []))}


def decoded_items(sids, scores, catalog: SidCatalog, skip: set[int], keep) -> list[tuple]:
    """(item, score) of decoded SIDs, best first: each SID's items that ``keep`` admits, the
    ones in ``skip`` (the history) left out."""
    return [
        (item, float(score))
        for sid, score in zip(sids, scores, strict=True)
        if np.isfinite(score)
        for item in catalog.items_of.get(tuple(sid), [])
        if item not in skip and keep(item)
    ]


def admit_cold(warm: list[tuple], cold: list[tuple], k: int, slots: int) -> list[int]:
    """TIGER's cold-start rule: the top ``k`` holds the best ``k - slots`` warm items and the
    best ``slots`` cold ones (unseen in training), ordered by score; the rest follow by
    score. ``warm`` and ``cold`` are (item, score) lists, best first."""
    slots = min(slots, len(cold))
    top = sorted(warm[: k - slots] + cold[:slots], key=lambda pair: -pair[1])
    rest = sorted(warm[k - slots :] + cold[slots:], key=lambda pair: -pair[1])
    return [item for item, _ in top + rest]


def tiger_ranks(
    model: Tiger | SidDecoder,
    cases: Cases,
    catalog: SidCatalog,
    trie,
    *,
    max_len: int,
    width: int,
    batch_size: int = 128,
    cold_slots: int = 0,
) -> np.ndarray:
    """The 0-based rank of each target in the decoded list (SIDs expanded to their items,
    history items left out); ``catalog.tokens.shape[0]`` where the beam missed it. With
    ``cold_slots``, ``trie`` decodes the seen items and a second beam over the unseen items'
    SIDs fills that many of the top 10 (``admit_cold``)."""
    missed = catalog.tokens.shape[0]
    seen = catalog.seen if catalog.seen is not None else np.ones(missed, dtype=bool)
    cold_trie = prefix_trie(catalog, set(np.flatnonzero(~seen).tolist())) if cold_slots else None
    out = []
    for start in range(0, len(cases), batch_size):
        histories = cases.histories[start : start + batch_size]
        source = source_rows(histories, catalog, max_len)
        exclude = [watched_sids(history, catalog) for history in histories]
        sids, scores = constrained_beam_search(model, source, trie, width, exclude)
        if cold_trie is not None:
            cold_sids, cold_scores = constrained_beam_search(model, source, cold_trie, width)
        for row, history in enumerate(histories):
            skip = set(history.tolist())
            if cold_trie is None:
                ranked = [i for i, _ in decoded_items(sids[row], scores[row], catalog, skip, bool)]
            else:
                warm = decoded_items(sids[row], scores[row], catalog, skip, lambda i: seen[i])
                cold = decoded_items(
                    cold_sids[row], cold_scores[row], catalog, skip, lambda i: not seen[i]
                )
                ranked = admit_cold(warm, cold, 10, cold_slots)
            target = cases.targets[start + row]
            out.append(ranked.index(target) if target in ranked else missed)
    return np.asarray(out, dtype=np.int64)
