"""Every (model, representation) over the configured seeds: mean ± std per slice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from core.config import EvaluateConfig
from core.errors import UsageError
from evaluation.data import SID_REPRESENTATIONS, ItemFeatures
from evaluation.models import ItemInputs, build_model
from evaluation.split import SLICES, Split, leave_last_out
from evaluation.train import METRIC_NAMES, fit, metrics, ranks

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Results per model, representation and slice, plus what the data held."""

    counts: dict[str, int]
    coverage: dict[str, dict[str, int]]
    results: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)
    seconds: float = 0.0
    seconds_per_training: dict[str, float] = field(default_factory=dict)  # "model/representation"
    sid_vocabulary: dict[str, int] = field(default_factory=dict)  # distinct tokens (table rows)

    def score(self, model: str, representation: str, slice_: str, metric: str) -> float:
        return self.results[model][representation][slice_][metric]["mean"]


def content_matrix(split: Split, vectors: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N + 1, D) with the item's vector, zero where it has none; None with no vectors."""
    if not vectors:
        return None
    dim = len(next(iter(vectors.values())))
    matrix = np.zeros((split.n_items + 1, dim), dtype=np.float32)
    for i, item in enumerate(split.item_ids, start=1):
        if item in vectors:
            matrix[i] = vectors[item]
    return matrix


def shuffled(vectors: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The same vectors given to other items: the control that content, not capacity, helps."""
    items = sorted(vectors)
    order = np.random.default_rng(seed).permutation(len(items))
    return {item: vectors[items[j]] for item, j in zip(items, order, strict=True)}


def token_lists(split: Split, tokens: dict[str, list[str]]) -> tuple[list[list[int]], int]:
    """Per item index, ids of its SID tokens (vocabulary over every item's tokens)."""
    vocab: dict[str, int] = {}
    lists = [[]]
    for item in split.item_ids:
        lists.append([vocab.setdefault(t, len(vocab)) for t in tokens.get(item, [])])
    return lists, len(vocab)


def item_inputs(
    representation: str, split: Split, features: ItemFeatures, metadata: dict, seed: int
) -> ItemInputs:
    """The ``ItemInputs`` of one representation: id, description, a SID tokenization (sid,
    sid_codes, sid_pieces), metadata (or the description_shuffled control)."""
    n = split.n_items
    if representation == "id":
        return ItemInputs(n, use_id=True)
    if representation in ("description", "description_shuffled", "metadata"):
        vectors = {
            "description": features.embeddings,
            "description_shuffled": shuffled(features.embeddings, seed),
            "metadata": metadata,
        }[representation]
        return ItemInputs(n, use_id=True, content=content_matrix(split, vectors))
    if representation in SID_REPRESENTATIONS:
        lists, vocab = token_lists(split, features.sid_tokens.get(representation, {}))
        return ItemInputs(n, use_id=False, tokens=lists, vocab=vocab)
    raise ValueError(f"unknown representation {representation!r}")


def coverage(
    split: Split, features: ItemFeatures, metadata: dict, representations: list[str]
) -> dict[str, dict[str, int]]:
    """Items (and cold items) that have no feature of each kind asked for: ranked all the
    same."""
    sources = {
        "description": features.embeddings,
        **{name: features.sid_tokens.get(name, {}) for name in SID_REPRESENTATIONS},
        "metadata": metadata,
    }
    asked = {name.replace("_shuffled", "") for name in representations}
    return missing_features(split, {k: v for k, v in sources.items() if k in asked})


def missing_features(split, sources: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Per feature kind (item_id → feature), the items of ``split`` (anything with
    ``item_ids`` and a ``cold`` mask) that have none, how many of them are cold, and a few."""
    cold = set(np.flatnonzero(split.cold[1:]))
    out = {}
    for name, present in sources.items():
        missing = [i for i, item in enumerate(split.item_ids) if not _has(present.get(item))]
        out[name] = {
            "items_without_features": len(missing),
            "cold_items_without_features": sum(1 for i in missing if i in cold),
            "example_items_without_features": [split.item_ids[i] for i in missing[:5]],
        }
    return out


def _has(feature) -> bool:
    """An embedding or a non-empty token list."""
    return feature is not None and len(feature) > 0


def train_and_rank(model_name: str, inputs: ItemInputs, split: Split, config, seed: int) -> dict:
    """One training run: metrics per slice."""
    import torch

    torch.manual_seed(seed)
    model = build_model(model_name, inputs, config)
    trainable = ~split.cold
    trainable[0] = False  # the padding index
    fit(
        model,
        split.train,
        trainable,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        max_len=config.max_len,
        seed=seed,
        negatives=config.negatives,
    )
    return {name: metrics(ranks(model, split.cases[name], config.max_len)) for name in SLICES}


TIGER_REPRESENTATIONS = {"sid": True, "sid_codes": False}  # representation → dedup token?


def fit_tiger(catalog, split: Split, config, seed: int):
    """A decoder-only generative retriever trained on ``split.train`` with each user's last
    training item held out for validation (epochs chosen on it; the test cases are never
    read): (model, per epoch loss and validation HR@10)."""
    import torch

    from evaluation.generative import SidDecoder, fit_decoder, holdout_last

    torch.manual_seed(seed)
    model = SidDecoder(
        catalog,
        config.tiger_history,
        config.tiger_dim,
        config.tiger_layers,
        config.dropout,
        prefix_ngrams=config.tiger_prefix_ngrams,
    )
    fitted, validation = holdout_last(split.train)
    log = fit_decoder(
        model,
        fitted,
        catalog,
        epochs=config.tiger_epochs,
        batch_size=config.batch_size,
        lr=config.tiger_lr,
        max_len=config.tiger_history,
        seed=seed,
        validation=validation,
        patience=config.tiger_patience,
    )
    return model, log


def tune_tiger(catalog, split: Split, config, grid: list[dict], seed: int = 0) -> list[dict]:
    """Each ``grid`` point (``tiger_*`` settings over ``config``) trained once; its best
    validation HR@10 and epoch, best first. Only the validation split decides."""
    rows = []
    for point in grid:
        began = time.perf_counter()
        _, log = fit_tiger(catalog, split, config.model_copy(update=point), seed)
        best = max(range(len(log)), key=lambda e: log[e]["val_hr@10"])
        rows.append(
            {
                **point,
                "val_hr@10": log[best]["val_hr@10"],
                "best_epoch": best + 1,
                "epochs_run": len(log),
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
    return sorted(rows, key=lambda row: -row["val_hr@10"])


def tiger_train_and_rank(catalog, split: Split, config, seed: int) -> dict:
    """One generative retriever (``fit_tiger``): metrics per slice (Recall@50 only with a
    beam of 50 or more, else NaN), plus ``fit`` (per epoch: loss and validation HR@10)."""
    from evaluation.generative import prefix_trie, tiger_ranks

    model, log = fit_tiger(catalog, split, config, seed)
    slots = round(config.tiger_cold_share * 10)
    seen = set(np.flatnonzero(catalog.seen).tolist()) if slots else None
    trie = prefix_trie(catalog, seen)
    out = {}
    for name in SLICES:
        rank = tiger_ranks(
            model,
            split.cases[name],
            catalog,
            trie,
            max_len=config.tiger_history,
            width=config.tiger_beam,
            cold_slots=slots,
        )
        out[name] = metrics(rank)
        if config.tiger_beam < 50:
            out[name]["recall@50"] = float("nan")
    out["fit"] = log
    return out


def tiger_runs(representation: str, split: Split, features: ItemFeatures, config) -> list[dict]:
    """The generative retriever over one SID representation, one run per seed."""
    from evaluation.generative import sid_catalog

    dedup = features.dedup if TIGER_REPRESENTATIONS[representation] else None
    catalog = sid_catalog(split, features.codes, dedup)
    return [tiger_train_and_rank(catalog, split, config, seed) for seed in config.seeds]


def aggregate(
    per_seed: list[dict], cases: dict[str, int], metric_names: tuple[str, ...] = METRIC_NAMES
) -> dict[str, dict[str, Any]]:
    """Per slice and metric: mean, std (population) and the per-seed values."""
    out = {}
    for name in SLICES:
        out[name] = {"cases": cases[name]}
        for metric in metric_names:
            values = [run[name][metric] for run in per_seed]
            out[name][metric] = {
                "mean": round(float(np.mean(values)), 5),
                "std": round(float(np.std(values)), 5),
                "seeds": [round(v, 5) for v in values],
            }
    return out


def representations_of(model_name: str, config: EvaluateConfig) -> list[str]:
    """The configured representations a model reads (tiger: only the SID ones it decodes)."""
    if model_name != "tiger":
        return list(config.representations)
    chosen = [r for r in config.representations if r in TIGER_REPRESENTATIONS]
    if not chosen:
        raise UsageError(
            "model 'tiger' decodes Semantic IDs: add sid (with the dedup token) or sid_codes "
            "(codes only) to evaluate.representations"
        )
    return chosen


def evaluate(
    features: ItemFeatures,
    interactions: pa.Table,
    config: EvaluateConfig,
    metadata: dict[str, np.ndarray] | None = None,
) -> Evaluation:
    """Train each configured model on each representation for each seed; report slices."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    metadata = metadata or {}
    catalog = set(features.embeddings) | set(features.texts)
    catalog |= {item for tokens in features.sid_tokens.values() for item in tokens}
    split = leave_last_out(
        interactions, catalog, config.cold_fraction, config.head_share, config.split_seed
    )
    if not len(split.cases["all"]):
        raise UsageError("no user has 2 or more interactions: nothing to evaluate")
    cases = {name: len(c) for name, c in split.cases.items()}
    evaluation = Evaluation(
        split.counts, coverage(split, features, metadata, config.representations)
    )
    for model_name in config.models:
        evaluation.results[model_name] = {}
        for representation in representations_of(model_name, config):
            began = time.perf_counter()
            if model_name == "tiger":
                runs = tiger_runs(representation, split, features, config)
            else:
                inputs = item_inputs(representation, split, features, metadata, config.split_seed)
                if representation in SID_REPRESENTATIONS:
                    evaluation.sid_vocabulary[representation] = inputs.vocab
                runs = [train_and_rank(model_name, inputs, split, config, s) for s in config.seeds]
            per_run = (time.perf_counter() - began) / len(config.seeds)
            evaluation.seconds_per_training[f"{model_name}/{representation}"] = round(per_run, 2)
            result = aggregate(runs, cases)
            evaluation.results[model_name][representation] = result
            hr = {name: figures["hr@10"]["mean"] for name, figures in result.items()}
            logger.info("%s/%s HR@10: %s", model_name, representation, hr)
    evaluation.seconds = round(time.perf_counter() - started, 2)
    return evaluation
