"""``enrich evaluate`` over a lake: read the features at pinned versions, train the small
recommenders of ``evaluation`` (on an interactions table) and score the search retrievers of
``evaluation.search`` (on a queries table), and record the results with their lineage in the
``evaluations`` table.

The codebook gate (``pipelines.promotion``) uses ``compare_codebooks``: the same evaluation
with the SID representation coded by the current and by the candidate codebook.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from core.config import Config, EvaluateConfig
from core.errors import UsageError
from core.hashing import stable_hash
from evaluation.data import (
    ItemFeatures,
    embedding_map,
    encode_texts,
    metadata_text,
    read_interactions,
    read_queries,
    sid_ngram_tokens,
    sid_representation_tokens,
)
from evaluation.harness import Evaluation, evaluate
from evaluation.search import SEARCH_METRICS, check_features, evaluate_search, search_split
from evaluation.train import METRIC_NAMES
from schemas.rows import evaluation_row, utc_now
from schemas.store import DeltaStore

logger = logging.getLogger(__name__)
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks")
NEEDS = {  # the table each representation reads
    "description": "embeddings",
    "description_shuffled": "embeddings",
    "sid": "semantic_ids",
    "sid_codes": "semantic_ids",
    "sid_pieces": "semantic_ids",
    "metadata": "descriptions",
}


@dataclass
class EvaluationRun:
    """One ``enrich evaluate``: its id, inputs, lineage and results (``evaluation``: the
    recommenders', empty without interactions; ``search``: the retrievers', None without
    queries)."""

    evaluation_id: str
    interactions: str | None
    release: str | None
    lineage: dict[str, Any]
    config: EvaluateConfig
    evaluation: Evaluation
    queries: str | None = None
    search: Evaluation | None = None

    @property
    def config_hash(self) -> str:
        return stable_hash(self.config.model_dump(mode="json"))

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluation_id": self.evaluation_id,
            "interactions": self.interactions,
            "release": self.release,
            "lineage": self.lineage,
            "config_hash": self.config_hash,
            "config": self.config.model_dump(mode="json"),
            "counts": self.evaluation.counts,
            "coverage": self.evaluation.coverage,
            "results": self.evaluation.results,
            "seconds": self.evaluation.seconds,
            "seconds_per_training": self.evaluation.seconds_per_training,
            "sid_vocabulary": self.evaluation.sid_vocabulary,
            "queries": self.queries,
            "search": _search_json(self.search) if self.search else None,
        }


def _search_json(search: Evaluation) -> dict[str, Any]:
    """The search task's part of the JSON report."""
    return {
        "counts": search.counts,
        "coverage": search.coverage,
        "results": search.results,
        "seconds": search.seconds,
        "seconds_per_training": search.seconds_per_training,
    }


def resolve_versions(store, release: str | None, versions: dict[str, int]) -> dict[str, int | None]:
    """The table versions to read: a release's, explicit ones, else each table's latest."""
    unknown = sorted(set(versions) - set(FEATURE_TABLES))
    if unknown:
        raise UsageError(f"--versions {unknown}: tables are {', '.join(FEATURE_TABLES)}")
    if release:
        from schemas.releases import release_versions

        pinned = release_versions(store.lake, release)
        return {name: pinned.get(name) for name in FEATURE_TABLES}
    chosen = {name: versions.get(name, store.version(name)) for name in FEATURE_TABLES}
    for name, version in versions.items():
        latest = store.version(name)
        if latest is None or not 0 <= version <= latest:
            raise UsageError(
                f"--versions {name}={version}: table '{name}' has versions 0..{latest} "
                f"under {store.lake}"
            )
    return chosen


def load_features(
    store, versions: dict[str, int | None], *, descriptions: bool = False
) -> ItemFeatures:
    """Read embeddings, SIDs and title/tags at ``versions`` (absent tables give no features),
    and with ``descriptions`` the description texts (for search)."""
    features = ItemFeatures(lineage={"table_versions": versions})
    if versions.get("embeddings") is not None:
        table = store.read(
            "embeddings",
            version=versions["embeddings"],
            columns=["item_id", "embedding", "encoder"],
        )
        features.embeddings = embedding_map(table)
        features.lineage["encoder"] = _values(table, "encoder")
    if versions.get("semantic_ids") is not None:
        table = store.read(
            "semantic_ids",
            version=versions["semantic_ids"],
            columns=[
                "item_id",
                "codes",
                "dedup",
                "prefix_ngrams",
                "sid_pieces",
                "codebook_version",
            ],
        )
        rows = table.to_pylist()
        features.sid_tokens = sid_tokens_by_representation(rows)
        features.codes = {r["item_id"]: list(r["codes"]) for r in rows if r["codes"]}
        features.dedup = {r["item_id"]: int(r["dedup"] or 0) for r in rows if r["codes"]}
        features.lineage["codebook_version"] = _values(table, "codebook_version")
    if versions.get("descriptions") is not None:
        table = store.read(
            "descriptions",
            version=versions["descriptions"],
            columns=["item_id", "title", "tags", "describer", "prompt_version"]
            + (["description"] if descriptions else []),
        )
        features.texts = {r["item_id"]: metadata_text(r) for r in table.to_pylist()}
        if descriptions:
            features.descriptions = {
                r["item_id"]: r["description"] for r in table.to_pylist() if r["description"]
            }
        features.texts = {k: v for k, v in features.texts.items() if v}
        features.lineage["describer"] = _values(table, "describer")
        features.lineage["prompt_version"] = _values(table, "prompt_version")
    return features


def sid_tokens_by_representation(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``semantic_ids`` rows → SID representation → item_id → tokens."""
    out: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        for representation, tokens in sid_representation_tokens(row).items():
            out.setdefault(representation, {})[row["item_id"]] = tokens
    return out


def _values(table: pa.Table, column: str) -> str | None:
    """The distinct values of a lineage column, most common first, comma-joined."""
    counts = Counter(v for v in table.column(column).to_pylist() if v)
    return ",".join(v for v, _ in counts.most_common()) or None


def check_representations(config: EvaluateConfig, versions: dict[str, int | None]) -> None:
    """Fail fast when a representation needs a table the lake (at these versions) lacks."""
    for representation in config.representations:
        table = NEEDS.get(representation)
        if table and versions.get(table) is None:
            raise UsageError(
                f"representation '{representation}' needs the '{table}' table, which this lake "
                f"(or release) does not have: drop it with --set evaluate.representations=[...] "
                f"or enrich the catalog first"
            )


def check_sid_pieces(config: EvaluateConfig, features: ItemFeatures) -> None:
    """Fail fast when ``sid_pieces`` is asked for but no SID row carries pieces."""
    if "sid_pieces" not in config.representations:
        return
    if not any(features.sid_tokens.get("sid_pieces", {}).values()):
        raise UsageError(
            "representation 'sid_pieces' needs SentencePiece pieces, but no semantic_ids row "
            f"(codebook {features.lineage.get('codebook_version')}) has sid_pieces: fit the "
            "codebook with semantic_ids.sentencepiece_vocab (or sentencepiece_budget) > 0, or "
            "drop sid_pieces from evaluate.representations"
        )


def metadata_vectors(features: ItemFeatures, config: Config) -> dict[str, np.ndarray]:
    """The metadata baseline's vectors, when it is asked for."""
    if "metadata" not in config.evaluate.representations:
        return {}
    return encode_texts(features.texts, config.encode)


def run_evaluation(
    lake: str,
    interactions_uri: str | None,
    config: Config,
    evaluation_id: str,
    release: str | None = None,
    versions: dict[str, int] | None = None,
    queries_uri: str | None = None,
) -> EvaluationRun:
    """Evaluate the lake's features (a release, explicit versions, or the latest): the
    recommenders on ``interactions_uri``, the search retrievers on ``queries_uri``. Every
    input is read and checked before any training."""
    if not interactions_uri and not queries_uri:
        raise UsageError("give --interactions URI, --queries URI or both")
    store = DeltaStore(lake)
    store.require_lake()
    pinned = resolve_versions(store, release, versions or {})
    if interactions_uri:
        check_representations(config.evaluate, pinned)
        interactions = read_interactions(interactions_uri, config.evaluate.min_rating)
    queries = read_queries(queries_uri) if queries_uri else None
    features = load_features(store, pinned, descriptions=queries is not None)
    encode = split = None
    if queries is not None:
        check_features(config.evaluate.search_retrievers, features)
        split = search_split(features, queries, config.evaluate)
        if "dense" in config.evaluate.search_retrievers:
            encode = query_encoder(config, features.lineage.get("encoder"))
    evaluation = Evaluation(counts={}, coverage={})
    if interactions_uri:
        check_sid_pieces(config.evaluate, features)
        metadata = metadata_vectors(features, config)
        if metadata:
            features.lineage["metadata_encoder"] = _encoder_id(config)
        evaluation = evaluate(features, interactions, config.evaluate, metadata)
    search = evaluate_search(features, split, config.evaluate, encode) if split else None
    return EvaluationRun(
        evaluation_id,
        interactions_uri,
        release,
        features.lineage,
        config.evaluate,
        evaluation,
        queries_uri,
        search,
    )


def query_encoder(config: Config, recorded: str | None) -> Callable[[list[str]], np.ndarray]:
    """Encodes texts with the encoder that made the lake's embeddings (``encode.model`` set to
    the model its lineage id names), refusing one that would encode otherwise."""
    from transforms.encode import encoder_id

    if not recorded or "," in recorded:
        raise UsageError(
            f"dense search encodes queries with the encoder that made the lake's embeddings, "
            f"but they record {recorded or 'none'}: re-encode the lake with one encoder "
            "(enrich reencode) or drop dense from evaluate.search_retrievers"
        )
    encode_config = config.encode.model_copy(update={"model": recorded.rpartition("@")[0]})
    if encoder_id(encode_config) != recorded:
        raise UsageError(
            f"the lake's embeddings were made by {recorded}, but this machine has "
            f"{encoder_id(encode_config)}: install that version, or re-encode the lake"
        )

    def encode(texts: list[str]) -> np.ndarray:
        vectors = encode_texts({str(i): text for i, text in enumerate(texts)}, encode_config)
        return np.stack([vectors[str(i)] for i in range(len(texts))])

    return encode


def _encoder_id(config: Config) -> str:
    from transforms.encode import encoder_id

    return encoder_id(config.encode)


def evaluation_rows(run: EvaluationRun) -> list[dict[str, Any]]:
    """``evaluations`` rows: one per task, model, representation and slice."""
    now = utc_now()
    rows = task_rows(run, "recommendation", run.evaluation, METRIC_NAMES, now)
    if run.search is not None:
        rows += task_rows(run, "search", run.search, SEARCH_METRICS, now)
    return rows


def task_rows(
    run: EvaluationRun, task: str, evaluation: Evaluation, metrics: tuple[str, ...], now
) -> list[dict[str, Any]]:
    """The rows of one task's results (columns of metrics it does not measure are null)."""
    lineage, prefix = run.lineage, "search/" if task == "search" else ""
    rows = []
    for model, representations in evaluation.results.items():
        for representation, slices in representations.items():
            missing = evaluation.coverage.get(representation.replace("_shuffled", ""), {})
            for name, result in slices.items():
                key = f"{run.evaluation_id}/{prefix}{model}/{representation}/{name}"
                fields = {
                    "evaluation_key": key,
                    "evaluation_id": run.evaluation_id,
                    "task": task,
                    "model": model,
                    "representation": representation,
                    "slice": name,
                    **_mean_std(result, metrics),
                    "per_seed_json": json.dumps({m: result[m]["seeds"] for m in metrics}),
                    "seeds": list(run.config.seeds),
                    "cases": result["cases"],
                    "items_without_features": missing.get("items_without_features"),
                    "cold_items_without_features": missing.get("cold_items_without_features"),
                    "interactions": run.interactions if task == "recommendation" else None,
                    "queries": run.queries if task == "search" else None,
                    "release_id": run.release,
                    "table_versions_json": json.dumps(lineage["table_versions"]),
                    "codebook_version": lineage.get("codebook_version"),
                    "describer": lineage.get("describer"),
                    "prompt_version": lineage.get("prompt_version"),
                    "encoder": lineage.get("encoder"),
                    "config_hash": run.config_hash,
                    "config_json": json.dumps(run.config.model_dump(mode="json")),
                    "counts_json": json.dumps(evaluation.counts),
                }
                rows.append(evaluation_row(fields, run_id=run.evaluation_id, now=now))
    return rows


def _mean_std(result: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, float | None]:
    """Mean and std columns of every metric the table has: null where ``metrics`` lacks it."""
    out = {}
    for metric in (*METRIC_NAMES, *SEARCH_METRICS):
        column = metric.replace("@", "_at_")
        measured = metric in metrics
        out[f"{column}_mean"] = result[metric]["mean"] if measured else None
        out[f"{column}_std"] = result[metric]["std"] if measured else None
    return out


def record(lake: str, run: EvaluationRun) -> int | None:
    """MERGE the run's rows into ``evaluations``; the new table version."""
    return DeltaStore(lake).merge("evaluations", evaluation_rows(run))


def with_codebook(features: ItemFeatures, codebook) -> ItemFeatures:
    """The same features with every embedded item's SID tokens from ``codebook``."""
    items = sorted(features.embeddings)
    codes = codebook.encode(np.stack([features.embeddings[i] for i in items]))
    tokens = {
        "sid": {
            item: sid_ngram_tokens([int(c) for c in row], None)
            for item, row in zip(items, codes, strict=True)
        }
    }
    lineage = {**features.lineage, "codebook_version": codebook.version}
    return ItemFeatures(features.embeddings, tokens, features.texts, lineage=lineage)


def compare_codebooks(
    store: DeltaStore, config: EvaluateConfig, candidate, current
) -> tuple[Evaluation, Evaluation]:
    """The gate's evaluations: SID tokens from ``current`` and from ``candidate``, same data."""
    if not config.interactions:
        raise UsageError("evaluate.interactions is not set: the evaluation gate is off")
    gate = config.model_copy(update={"representations": ["sid"], "models": config.gate_models})
    interactions = read_interactions(config.interactions, config.min_rating)
    features = load_features(store, {"embeddings": store.version("embeddings")})
    return (
        evaluate(with_codebook(features, current), interactions, gate),
        evaluate(with_codebook(features, candidate), interactions, gate),
    )


def gate_reasons(candidate: Evaluation, current: Evaluation, config: EvaluateConfig) -> list[str]:
    """Why the candidate's SIDs serve the recommender worse (empty: no worse)."""
    reasons = []
    metric, tolerance = config.gate_metric, config.gate_tolerance
    for model in config.gate_models:
        for name in config.gate_slices:
            new = candidate.score(model, "sid", name, metric)
            old = current.score(model, "sid", name, metric)
            if new < old - tolerance:
                reasons.append(
                    f"evaluation {model} {name} {metric} {new:.4f} < current {old:.4f} - "
                    f"{tolerance}"
                )
    return reasons
