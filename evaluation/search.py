"""Search over the lake's items (the second task of 2508.10478): held-out queries, three
retrievers.

- ``split_queries``: the queries table's ``train`` rows teach, its ``test`` rows are scored
  (without a ``split`` column, ``query_test_fraction`` of the distinct queries, picked with
  ``split_seed``, are held out). *Cold* items are those no training query names; *long-tail*
  items are warm items outside the head holding ``head_share`` of the training pairs
  (``evaluation.split.long_tail``, as for recommendation).
- Slices: ``all`` (each test query, with every item relevant to it), ``cold_start`` and
  ``long_tail`` (the test queries with a relevant cold or long-tail item, scored on those
  items only; the ranking is over every item).
- Retrievers, each returning ``DEPTH`` items a query: ``bm25`` (bm25s over the description
  text; only items sharing a term are returned), ``dense`` (cosine between the query, encoded
  by the lake's encoder, and the item embeddings) and ``generative`` (the encoder-decoder of
  ``evaluation.generative`` reads the query's words and decodes an item's SID, dedup token
  included, by beam search constrained to existing SIDs).
- Metrics per test query, averaged: Recall@10, Recall@30 and nDCG@10 (gain = relevance).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from core.config import EvaluateConfig
from core.errors import UsageError
from evaluation.data import ItemFeatures
from evaluation.generative import (
    PAD,
    SidCatalog,
    Tiger,
    constrained_beam_search,
    prefix_trie,
    sid_catalog,
    sid_loss,
)
from evaluation.harness import Evaluation, aggregate, content_matrix, missing_features
from evaluation.split import SLICES, Split, long_tail

logger = logging.getLogger(__name__)

SEARCH_METRICS = ("recall@10", "recall@30", "ndcg@10")
READS = {"bm25": "description_text", "dense": "description", "generative": "sid"}
DEPTH = 30  # items a retriever returns per query: Recall@30's cut-off
QUERY_WORDS = 32  # the generative retriever reads a query's first words
WORD = re.compile(r"\w+")


@dataclass
class QuerySplit:
    """Training pairs, test queries and, per slice, each test query's relevant items."""

    item_ids: list[str]  # index i + 1 is item_ids[i]; 0 pads
    train_queries: list[str]  # one per training (query, item) pair
    train_items: np.ndarray  # the pair's item index
    test_queries: list[str]
    relevant: dict[str, list[dict[int, float]]]  # slice → per test query: item → relevance
    cold: np.ndarray  # bool per index: no training query names the item
    tail: np.ndarray  # bool per index: warm and outside the head
    counts: dict[str, int]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def as_split(self) -> Split:
        """The item index and training popularity in ``evaluation.split``'s form (for
        ``sid_catalog``: a SID shared by items lists the most-queried first)."""
        return Split(self.item_ids, [self.train_items], self.cold, self.tail, {}, {})


def split_queries(
    queries: pa.Table, catalog: set[str], test_fraction: float, head_share: float, seed: int
) -> QuerySplit:
    """The split described in the module docstring (``queries`` as ``read_queries`` gives)."""
    queried = set(queries.column("item_id").to_pylist())
    item_ids = sorted(catalog | queried)
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    rows = [r for r in queries.to_pylist() if r["relevance"] > 0]
    train, test = _train_test(rows, test_fraction, seed)
    train_items = np.asarray([index[r["item_id"]] for r in train], dtype=np.int64)
    cold = np.ones(len(item_ids) + 1, dtype=bool)
    cold[0], cold[train_items] = False, False
    tail = long_tail([train_items], cold, head_share)
    judged: dict[str, dict[int, float]] = {}
    for row in test:
        items, item = judged.setdefault(row["query"], {}), index[row["item_id"]]
        items[item] = max(row["relevance"], items.get(item, 0.0))
    test_queries = sorted(judged)
    relevant = {
        "all": [judged[q] for q in test_queries],
        "cold_start": [_only(judged[q], cold) for q in test_queries],
        "long_tail": [_only(judged[q], tail) for q in test_queries],
    }
    in_test = {i for items in judged.values() for i in items}
    counts = {
        "queries": len({r["query"] for r in rows}),
        "train_queries": len({r["query"] for r in train}),
        "train_pairs": len(train),
        "test_queries": len(test_queries),
        "items": len(item_ids),
        "query_items_not_in_lake": len(queried - catalog),
        "cold_items": int(sum(cold[i] for i in in_test)),
        "long_tail_items": int(sum(tail[i] for i in in_test)),
        **{f"cases_{name}": sum(1 for r in relevant[name] if r) for name in SLICES},
    }
    if not train or not test_queries:
        raise UsageError(
            f"the queries table has {counts['train_pairs']} training pair(s) and "
            f"{len(test_queries)} test query(ies): search needs both (a split column with "
            "train and test rows, or evaluate.query_test_fraction between 0 and 1)"
        )
    if not queried & catalog:
        raise UsageError(
            f"none of the {len(queried)} items the queries name is in the lake (e.g. "
            f"{', '.join(sorted(queried)[:3])}): the queries' item_ids must be the manifest's"
        )
    train_queries = [r["query"] for r in train]
    return QuerySplit(
        item_ids, train_queries, train_items, test_queries, relevant, cold, tail, counts
    )


def _train_test(rows: list[dict], test_fraction: float, seed: int) -> tuple[list, list]:
    """(training rows, test rows): by the ``split`` column, else a seeded ``test_fraction``
    of the distinct queries held out."""
    if any(r["split"] is not None for r in rows):
        return [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "test"]
    distinct = sorted({r["query"] for r in rows})
    count = int(round(test_fraction * len(distinct)))
    chosen = np.random.default_rng(seed).choice(len(distinct), size=count, replace=False)
    held = {distinct[i] for i in chosen}
    return [r for r in rows if r["query"] not in held], [r for r in rows if r["query"] in held]


def _only(items: dict[int, float], mask: np.ndarray) -> dict[int, float]:
    return {i: gain for i, gain in items.items() if mask[i]}


def search_metrics(rankings: list[list[int]], relevant: list[dict[int, float]]) -> dict:
    """Recall@10, Recall@30 and nDCG@10 averaged over the queries with a relevant item."""
    cases = [(ranked, items) for ranked, items in zip(rankings, relevant, strict=True) if items]
    if not cases:
        return {name: float("nan") for name in SEARCH_METRICS}
    discount = 1 / np.log2(np.arange(2, 12))
    recall10, recall30, ndcg = [], [], []
    for ranked, items in cases:
        recall10.append(sum(i in items for i in ranked[:10]) / len(items))
        recall30.append(sum(i in items for i in ranked[:30]) / len(items))
        gains = np.array([items.get(i, 0.0) for i in ranked[:10]])
        ideal = np.sort(np.fromiter(items.values(), float))[::-1][:10]
        dcg = float(gains @ discount[: len(gains)])
        ndcg.append(dcg / float(ideal @ discount[: len(ideal)]))
    return {
        "recall@10": float(np.mean(recall10)),
        "recall@30": float(np.mean(recall30)),
        "ndcg@10": float(np.mean(ndcg)),
    }


def bm25_rankings(texts: dict[int, str], queries: list[str], depth: int) -> list[list[int]]:
    """bm25s (Lucene's BM25, English stopwords) over ``texts``: the items sharing a term with
    each query, best first."""
    import bm25s

    items = sorted(i for i, text in texts.items() if text)
    if not items:
        return [[] for _ in queries]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([texts[i] for i in items], stopwords="en", show_progress=False),
        show_progress=False,
    )
    tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    found, scores = retriever.retrieve(tokens, k=min(depth, len(items)), show_progress=False)
    return [
        [items[d] for d, score in zip(row, row_scores, strict=True) if score > 0]
        for row, row_scores in zip(found, scores, strict=True)
    ]


def dense_rankings(items: np.ndarray, queries: np.ndarray, depth: int) -> list[list[int]]:
    """Cosine top-``depth`` of each query vector among the item vectors ``items`` ((N + 1, D),
    zero rows for items without an embedding: never returned)."""
    norms = np.linalg.norm(items, axis=1)
    usable = np.flatnonzero(norms > 0)
    if not len(usable):
        return [[] for _ in queries]
    unit = items[usable] / norms[usable, None]
    query_unit = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    scores = query_unit @ unit.T
    best = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return usable[best].tolist()


def query_words(query: str) -> list[str]:
    """The generative retriever's tokens: lower-cased words, the first ``QUERY_WORDS``."""
    return WORD.findall(query.lower())[:QUERY_WORDS]


def word_vocabulary(queries: list[str], first_id: int) -> dict[str, int]:
    """Each training word → a token id from ``first_id + 1`` on (``first_id``: unknown)."""
    words = sorted({w for q in queries for w in query_words(q)})
    return {word: first_id + 1 + i for i, word in enumerate(words)}


def query_rows(queries: list[str], vocabulary: dict[str, int], unknown: int) -> torch.Tensor:
    """Each query's word ids, left-padded (a query with no word reads as one unknown)."""
    rows = [[vocabulary.get(w, unknown) for w in query_words(q)] or [unknown] for q in queries]
    out = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, out.shape[1] - len(row) :] = row
    return torch.from_numpy(out)


def generative_rankings(
    split: QuerySplit, catalog: SidCatalog, config: EvaluateConfig, seed: int, depth: int
) -> list[list[int]]:
    """Train the encoder-decoder on the training pairs that have a SID (query words → SID
    tokens) and decode each test query's SIDs under the prefix trie: their items, best
    first."""
    torch.manual_seed(seed)
    vocabulary = word_vocabulary(split.train_queries, catalog.vocab)
    unknown = catalog.vocab
    model = Tiger(
        catalog.vocab + len(vocabulary) + 1,
        catalog.levels,
        math.ceil(QUERY_WORDS / catalog.levels),  # source positions: max_len x levels
        config.tiger_dim,
        config.tiger_layers,
        config.dropout,
    )
    keep = catalog.tokens[split.train_items, 0] > 0
    named = [q for q, has_sid in zip(split.train_queries, keep, strict=True) if has_sid]
    sources = query_rows(named, vocabulary, unknown)
    targets = torch.from_numpy(catalog.tokens[split.train_items[keep]])
    if not len(targets):
        raise UsageError("no training query names an item with a Semantic ID: run fit-sids")
    fit_query_model(model, sources, targets, config, seed)
    trie = prefix_trie(catalog)
    out = []
    for start in range(0, len(split.test_queries), 128):
        batch = query_rows(split.test_queries[start : start + 128], vocabulary, unknown)
        sids, scores = constrained_beam_search(model, batch, trie, config.search_beam)
        for row_sids, row_scores in zip(sids, scores, strict=True):
            ranked = [
                item
                for sid, score in zip(row_sids, row_scores, strict=True)
                if np.isfinite(score)
                for item in catalog.items_of.get(tuple(sid), [])
            ]
            out.append(ranked[:depth])
    return out


def fit_query_model(
    model: Tiger, sources: torch.Tensor, targets: torch.Tensor, config, seed: int
) -> list[float]:
    """Teacher-forced cross-entropy of each target SID given its query; the loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.tiger_lr, weight_decay=0.01)
    losses = []
    for _ in range(config.tiger_epochs):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(targets), generator=generator).split(config.batch_size):
            loss = sid_loss(model, sources[batch], targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(targets))
    return losses


def text_map(split: QuerySplit, texts: dict[str, str]) -> dict[int, str]:
    """Item index → its description text."""
    return {i: texts[item] for i, item in enumerate(split.item_ids, start=1) if texts.get(item)}


def retriever_runs(
    retriever: str,
    split: QuerySplit,
    features: ItemFeatures,
    config: EvaluateConfig,
    encode: Callable[[list[str]], np.ndarray] | None,
) -> list[dict]:
    """Metrics per slice for each seed (``bm25`` and ``dense`` are deterministic: one ranking,
    the same figures for every seed)."""
    if retriever == "generative":
        catalog = sid_catalog(split.as_split(), features.codes, features.dedup)
        return [
            score_slices(generative_rankings(split, catalog, config, seed, DEPTH), split)
            for seed in config.seeds
        ]
    if retriever == "bm25":
        rankings = bm25_rankings(text_map(split, features.descriptions), split.test_queries, DEPTH)
    else:
        query_vectors = encode(split.test_queries)
        items = content_matrix(split.as_split(), features.embeddings)
        rankings = dense_rankings(items, query_vectors, DEPTH)
    return [score_slices(rankings, split)] * len(config.seeds)


def score_slices(rankings: list[list[int]], split: QuerySplit) -> dict:
    return {name: search_metrics(rankings, split.relevant[name]) for name in SLICES}


def check_features(retrievers: list[str], features: ItemFeatures) -> None:
    """Fail fast when a retriever's feature is absent from the lake."""
    needs = {
        "bm25": (features.descriptions, "description texts (the descriptions table)"),
        "dense": (features.embeddings, "embeddings (the embeddings table)"),
        "generative": (features.codes, "Semantic IDs (the semantic_ids table; enrich fit-sids)"),
    }
    for retriever in retrievers:
        present, what = needs[retriever]
        if not present:
            raise UsageError(
                f"search retriever '{retriever}' needs {what}, which this lake (or release) "
                "does not have: drop it with --set evaluate.search_retrievers=[...] or enrich "
                "the catalog first"
            )


def search_split(features: ItemFeatures, queries: pa.Table, config: EvaluateConfig) -> QuerySplit:
    """The queries split over the lake's items (checked: a ``UsageError`` says what to fix)."""
    catalog = set(features.embeddings) | set(features.descriptions) | set(features.codes)
    return split_queries(
        queries, catalog, config.query_test_fraction, config.head_share, config.split_seed
    )


def evaluate_search(
    features: ItemFeatures,
    split: QuerySplit,
    config: EvaluateConfig,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> Evaluation:
    """Each configured retriever over the held-out queries, per slice, over the seeds."""
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    cases = {name: split.counts[f"cases_{name}"] for name in SLICES}
    sources = {
        "description_text": features.descriptions,
        "description": features.embeddings,
        "sid": features.codes,
    }
    asked = {READS[r] for r in config.search_retrievers}
    evaluation = Evaluation(
        split.counts, missing_features(split, {k: v for k, v in sources.items() if k in asked})
    )
    for retriever in config.search_retrievers:
        began = time.perf_counter()
        runs = retriever_runs(retriever, split, features, config, encode)
        seconds = (time.perf_counter() - began) / len(config.seeds)
        evaluation.seconds_per_training[f"{retriever}/{READS[retriever]}"] = round(seconds, 2)
        result = aggregate(runs, cases, SEARCH_METRICS)
        evaluation.results[retriever] = {READS[retriever]: result}
        recall = {name: figures["recall@10"]["mean"] for name, figures in result.items()}
        logger.info("search %s Recall@10: %s", retriever, recall)
    evaluation.seconds = round(time.perf_counter() - started, 2)
    return evaluation
