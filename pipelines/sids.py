"""Semantic IDs against the lake: pin (or fit) a codebook, code items with it, and build the
``semantic_ids`` rows of a dedup group with ranker features (prefix n-grams, SentencePiece
pieces). The waves that assign them are ``pipelines.sid_waves``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import SemanticIdConfig
from core.hashing import stable_hash
from pipelines.codebooks import (
    auto_choice,
    embeddings_of,
    fit_sample,
    fitted_row,
    record_fitted,
    sample_keys,
    set_promotion_status,
)
from pipelines.codebooks import pinned_codebook as pinned_codebook  # callers import it here
from schemas.rows import semantic_id_row, utc_now
from schemas.store import DeltaStore
from schemas.tables import LINEAGE_COLUMNS
from transforms.models import pick_device
from transforms.semantic_ids import Codebook, fit_rq_kmeans, sid_string
from transforms.semantic_ids.churn import aligned
from transforms.semantic_ids.dedup import dedup_group
from transforms.semantic_ids.features import SidPieces, hashed, prefix_ngrams, train_sentencepiece

logger = logging.getLogger(__name__)


def first_codebook(
    store: DeltaStore, config: SemanticIdConfig, encoder: str, run_id: str
) -> Codebook:
    """A run's fit when no compatible codebook exists. Two runs can get here at once; the
    Delta log orders their commits, and the later one adopts the earlier one's codebook and
    marks its own ``superseded``, so every run codes with, and records, the same codebook."""
    codebook = fit_from_lake(store, config, encoder)
    return settle_first_fit(store, config, codebook, record_fitted(store, codebook, run_id), run_id)


def settle_first_fit(
    store: DeltaStore,
    config: SemanticIdConfig,
    codebook: Codebook,
    committed: int | None,
    run_id: str,
) -> Codebook:
    """The codebook a run that committed its fit at table version ``committed`` codes with:
    its own, unless a compatible one was committed before it (then its own is superseded)."""
    if not committed:
        return codebook
    before = store.read("codebooks", version=committed - 1).to_pylist()
    winner = auto_choice(before, config, codebook.encoder)
    if winner is None or winner["codebook_version"] == codebook.version:
        # Same version: both runs fitted the same sample in the same second (a deterministic
        # fit), so they share one codebook and one row; superseding it would retire both.
        return codebook
    note = f"a concurrent run fitted {winner['codebook_version']} first; this run adopted it"
    set_promotion_status(store, fitted_row(codebook, run_id), "superseded", note)
    return Codebook.from_row(winner)


def fit_codebook_on(
    sample: np.ndarray, config: SemanticIdConfig, encoder: str, previous: Codebook | None = None
) -> Codebook:
    """Fit ``config.method`` on ``sample`` and train the SentencePiece model over its SIDs.
    With ``previous`` (the codebook in use), the new codes take its labels where the same
    items share a cluster, so a refit moves only the items it must."""
    fit_settings = config.model_dump(exclude={"codebook_version", "refit"})
    digest = stable_hash([encoder, fit_settings, sample.shape, float(sample.sum())], 8)
    version = f"{config.method}-{utc_now():%Y%m%dT%H%M%S}-{digest}"
    common = {
        "levels": config.levels,
        "codebook_size": config.codebook_size,
        "seed": config.seed,
        "encoder": encoder,
        "version": version,
        "collision_slack": config.collision_slack,
    }
    if config.method == "rq_vae":
        from transforms.semantic_ids.rq_vae import fit_rq_vae

        codebook = fit_rq_vae(
            sample,
            **common,
            latent_dim=config.vae_latent_dim,
            hidden=tuple(config.vae_hidden),
            epochs=config.vae_epochs,
            batch_size=config.vae_batch_size,
            lr=config.vae_lr,
            beta=config.vae_beta,
            device=pick_device(config.device),
        )
    else:
        codebook = fit_rq_kmeans(
            sample,
            **common,
            iters=config.kmeans_iters,
            redo=config.kmeans_redo,
            balanced=config.balanced,
        )
    if previous is not None and previous.encoder == encoder:
        codebook = aligned(codebook, previous.encode(sample), codebook.to_latent(sample))
        codebook.metrics["labels_aligned_to"] = previous.version
    if config.merged_pieces:
        codes = codebook.encode(sample).tolist()
        codebook.sentencepiece_model = train_sentencepiece(
            codes, codebook.codebook_size, config.merged_pieces
        )
    return codebook


def fit_codebook(
    store: DeltaStore,
    config: SemanticIdConfig,
    encoder: str,
    run_id: str,
    embeddings: pa.Table | None = None,
) -> Codebook:
    """Fit a new codebook version on a sample of the embeddings (read from the lake unless
    given) and record it."""
    codebook = fit_from_lake(store, config, encoder, embeddings)
    record_fitted(store, codebook, run_id)
    return codebook


def fit_from_lake(
    store: DeltaStore, config: SemanticIdConfig, encoder: str, embeddings: pa.Table | None = None
) -> Codebook:
    """A codebook fitted on a seeded sample of the embeddings, not yet recorded."""
    if embeddings is None:  # keys first, then only the sampled vectors
        keys = embeddings_of(store, encoder, ["item_id"])
        chosen = sample_keys(keys, config, encoder)
        embeddings = embeddings_of(store, encoder, ["item_id", "embedding"], keys=chosen)
    sample = fit_sample(embeddings, config, encoder)
    codebook = fit_codebook_on(sample, config, encoder)
    logger.info(
        "fitted codebook %s on %d items: %s", codebook.version, len(sample), codebook.metrics
    )
    return codebook


def code_items(codebook: Codebook, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with their ``codes`` (a tuple per item) and last-level ``choices`` in place of
    the embedding."""
    vectors = np.asarray([i["embedding"] for i in items], dtype=np.float32)
    codes, choices = codebook.encode_with_choices(vectors)
    return [
        {
            "item_id": item["item_id"],
            "codes": tuple(int(c) for c in row),
            "choices": item_choices,
            **{k: item.get(k) for k in LINEAGE_COLUMNS},
        }
        for item, row, item_choices in zip(items, codes, choices, strict=True)
    ]


def sid_rows(
    codebook: Codebook,
    coded: list[dict[str, Any]],
    assigned: dict[str, tuple[tuple[int, ...], int]],
    run_id: str,
    hash_buckets: int,
) -> list[dict[str, Any]]:
    """``semantic_ids`` rows for coded items and their ``assigned`` (codes, dedup suffix)."""
    pieces = (
        SidPieces(codebook.sentencepiece_model, codebook.codebook_size)
        if codebook.sentencepiece_model
        else None
    )
    now = utc_now()
    rows = []
    for item in coded:
        codes, suffix = assigned[item["item_id"]]
        ngrams = prefix_ngrams(codes)
        rows.append(
            semantic_id_row(
                item,
                codes=list(codes),
                dedup=suffix,
                sid=sid_string(codes, suffix),
                codebook_version=codebook.version,
                prefix_ngrams=ngrams,
                prefix_hashes=hashed(ngrams, hash_buckets) if hash_buckets else None,
                sid_pieces=pieces.pieces(codes) if pieces else None,
                run_id=run_id,
                now=now,
            )
        )
    return rows


def group_sid_rows(
    codebook: Codebook,
    group: list[tuple[dict[str, Any] | None, dict[str, Any]]],
    run_id: str,
    hash_buckets: int,
) -> list[dict[str, Any]]:
    """The engines' dedup step: one prefix group of (coded item or None, dedup entry) pairs
    → the SID rows of its newly coded items."""
    assigned = dedup_group([entry for _, entry in group])
    coded = sorted((item for item, _ in group if item is not None), key=lambda i: i["item_id"])
    return sid_rows(codebook, coded, assigned, run_id, hash_buckets)


def uncoded_ids(
    store: DeltaStore, encoder: str, version: str, run_id: str | None = None
) -> list[str]:
    """Embedded items of ``encoder`` that hold no SID from codebook ``version``, apart from
    those embedded by run ``run_id`` (it codes its own). Reads key columns only."""
    embedded = store.read_or_empty("embeddings", columns=["item_id", "encoder", "run_id"])
    keep = pc.equal(embedded["encoder"], encoder)
    if run_id is not None:
        keep = pc.and_(keep, pc.not_equal(embedded["run_id"], run_id))
    sids = store.read_or_empty("semantic_ids", columns=["item_id", "codebook_version"])
    coded = sids.filter(pc.equal(sids["codebook_version"], version))["item_id"]
    ids = embedded.filter(keep)["item_id"]
    return sorted(ids.filter(pc.invert(pc.is_in(ids, value_set=coded))).to_pylist())
