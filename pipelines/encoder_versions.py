"""Encoder versions on a lake: tune one on the lake's descriptions and an interactions table
(``enrich fit-encoder``), and re-encode the lake with a chosen encoder (``enrich reencode``).

Fitting never touches the tables: switching encoders is explicit. ``reencode`` rewrites every
described item's embedding with ``encode.model`` and its lineage (``encoder`` =
``model@revision``); codebooks are per encoder, so SIDs follow with ``enrich fit-sids``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core import storage
from core.config import Config, EncodeConfig
from evaluation.data import read_interactions
from evaluation.encoder_tuning import (
    TuningSettings,
    co_interaction_pairs,
    fine_tune,
    read_query_pairs,
    save_encoder,
    training_examples,
    tuned_manifest,
    tuned_version,
)
from pipelines.incremental import pipeline_fingerprint
from schemas.rows import embedding_row, error_row, utc_now
from schemas.store import DeltaStore
from transforms.encode import EncodeStage, encoded_text
from transforms.models import resolve_model
from transforms.pipeline import build_stages, stage_fingerprints
from transforms.stage import has_error

logger = logging.getLogger(__name__)

REENCODE_BATCH_ROWS = 512  # items encoded together
REENCODE_COMMIT_ROWS = 20_000  # items committed together
ENCODERS_FOLDER = "_encoders"  # tuned encoders of a lake, one folder per version
DESCRIPTION_COLUMNS = ["item_id", "title", "description"]


@dataclass
class TunedEncoder:
    version: str
    folder: str
    encoder_id: str  # the lineage id embeddings and codebooks made with it carry
    examples: int
    epoch_losses: list[float]


def item_texts(store: DeltaStore, mode: str) -> dict[str, str]:
    """item_id → the text the encode stage sees, for every described item of the lake."""
    if not store.exists("descriptions"):
        raise ValueError(f"lake {store.lake} has no descriptions table: run `enrich run` first")
    rows = store.read("descriptions", columns=DESCRIPTION_COLUMNS).to_pylist()
    texts = {row["item_id"]: encoded_text(row, mode) for row in rows}
    return {item: text for item, text in texts.items() if text.strip()}


def fit_encoder(
    store: DeltaStore,
    encode: EncodeConfig,
    interactions_uri: str,
    out: str | None,
    settings: TuningSettings,
    queries_uri: str | None = None,
) -> TunedEncoder:
    """Fine-tune ``encode.model`` on co-interaction (and query) pairs; save it to ``out``
    (default: ``<lake>/_encoders/<version>``), a local folder or a storage URI."""
    from sentence_transformers import SentenceTransformer

    from transforms.models import pick_device

    texts = item_texts(store, encode.text)
    item_pairs = co_interaction_pairs(read_interactions(interactions_uri), settings.window)
    query_pairs = read_query_pairs(queries_uri) if queries_uri else []
    examples = training_examples(item_pairs, query_pairs, texts, settings)
    base = EncodeStage(encode).encoder_id
    logger.info("fit-encoder: %d training pairs, base %s", len(examples), base)
    model = SentenceTransformer(resolve_model(encode.model), device=pick_device(encode.device))
    losses = fine_tune(model, examples, settings)
    counts = {
        "item_pairs": len(item_pairs),
        "query_pairs": len(query_pairs),
        "examples": len(examples),
    }
    manifest = tuned_manifest(base, settings, counts, losses)
    folder = save_encoder(model, manifest, out, storage.join(store.lake, ENCODERS_FOLDER))
    tuned = EncodeConfig(**{**encode.model_dump(), "model": folder})
    version = tuned_version(folder)
    return TunedEncoder(version, folder, EncodeStage(tuned).encoder_id, len(examples), losses)


def reencode(store: DeltaStore, config: Config, run_id: str) -> tuple[int, int, str]:
    """(encoded, failed, encoder id): every described item's embedding, re-made with
    ``encode.model`` and MERGEd into ``embeddings``; failures go to ``errors``. Items whose
    description was made under this config apart from the encoder also take the config's
    pipeline fingerprint, so later runs with it skip them instead of redoing them in full."""
    if not store.exists("descriptions"):
        raise ValueError(f"lake {store.lake} has no descriptions table: run `enrich run` first")
    stage = EncodeStage(config.encode)
    stage.setup()
    carried = CarriedFingerprints(store, config)
    pending = PendingWrites(store, run_id)
    for batch in store.batches("descriptions", REENCODE_BATCH_ROWS):
        descriptions = batch.to_pylist()
        refreshed = carried.refresh(descriptions)
        records = stage.process_batch([dict(row) for row in descriptions])
        pending.add(records, refreshed)
    pending.commit()
    return pending.encoded, pending.failed, stage.encoder_id


class PendingWrites:
    """A re-encode's rows, committed every ``REENCODE_COMMIT_ROWS`` items: a few commits per
    million items, not three per encoding batch."""

    def __init__(self, store: DeltaStore, run_id: str):
        self.store, self.run_id = store, run_id
        self.rows: dict[str, list[dict]] = {"embeddings": [], "errors": [], "descriptions": []}
        self.encoded = self.failed = 0

    def add(self, records: list[dict], refreshed: list[dict]) -> None:
        now = utc_now()
        good = [r for r in records if not has_error(r)]
        bad = [r for r in records if has_error(r)]
        self.rows["embeddings"] += [embedding_row(r, self.run_id, now) for r in good]
        self.rows["errors"] += [error_row(r, self.run_id, now) for r in bad]
        done = {r["item_id"] for r in good}
        self.rows["descriptions"] += [row for row in refreshed if row["item_id"] in done]
        self.encoded, self.failed = self.encoded + len(good), self.failed + len(bad)
        if len(self.rows["embeddings"]) + len(self.rows["errors"]) >= REENCODE_COMMIT_ROWS:
            self.commit()

    def commit(self) -> None:
        for table, rows in self.rows.items():
            if rows:
                self.store.merge(table, rows)
            rows.clear()


class CarriedFingerprints:
    """Which description rows a re-encode brings up to the config's pipeline fingerprint: those
    whose fingerprint is what the same config gives with their previous encoder."""

    def __init__(self, store: DeltaStore, config: Config):
        self.config = config
        self.target = config_fingerprint(config)
        previous = store.read_or_empty("embeddings", columns=["item_id", "encoder"])
        self.previous_encoder = dict(
            zip(previous["item_id"].to_pylist(), previous["encoder"].to_pylist(), strict=True)
        )
        self._by_encoder: dict[str, str] = {}

    def refresh(self, descriptions: list[dict]) -> list[dict]:
        """Set ``pipeline_fingerprint`` to the target on the rows that qualify (in place);
        returns those rows."""
        refreshed = []
        for row in descriptions:
            encoder = self.previous_encoder.get(row["item_id"])
            if encoder and row["pipeline_fingerprint"] == self._fingerprint_with(encoder):
                row["pipeline_fingerprint"] = self.target
                refreshed.append(row)
        return refreshed

    def _fingerprint_with(self, encoder: str) -> str:
        """The pipeline fingerprint of the config with ``encode.model`` = the model of
        ``encoder`` (``model@revision``; a changed revision no longer matches)."""
        if encoder not in self._by_encoder:
            model = encoder.rsplit("@", 1)[0]
            other = self.config.model_copy(deep=True)
            other.encode.model = model
            self._by_encoder[encoder] = config_fingerprint(other)
        return self._by_encoder[encoder]


def config_fingerprint(config: Config) -> str:
    """What an incremental run compares: the hash of every stage's fingerprint."""
    return pipeline_fingerprint(stage_fingerprints(build_stages(config)))
