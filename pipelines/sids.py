"""Semantic IDs against the lake: pin (or fit) a codebook, then assign SIDs with stable dedup."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.compute as pc

from schemas.rows import utc_now
from schemas.store import DeltaStore
from transforms.config import SemanticIdConfig
from transforms.semantic_ids import Codebook, assign_dedup_suffixes, fit_rq_kmeans, sid_string
from transforms.stage import stable_hash

logger = logging.getLogger(__name__)


def _compatible(row: dict[str, Any], config: SemanticIdConfig, encoder: str) -> bool:
    return (
        row["method"] == config.method
        and row["levels"] == config.levels
        and row["codebook_size_requested"] == config.codebook_size
        and row["encoder"] == encoder
    )


def pinned_codebook(store: DeltaStore, config: SemanticIdConfig, encoder: str) -> Codebook | None:
    """The codebook named by config, or (``auto``) the newest compatible one; None if none."""
    rows = store.read_or_empty("codebooks").to_pylist()
    if config.codebook_version != "auto":
        named = [r for r in rows if r["codebook_version"] == config.codebook_version]
        if not named:
            raise ValueError(
                f"semantic_ids.codebook_version '{config.codebook_version}' is not in "
                f"the codebooks table; known: {sorted(r['codebook_version'] for r in rows)}"
            )
        return Codebook.from_row(named[0])
    compatible = sorted(
        (r for r in rows if _compatible(r, config, encoder)), key=lambda r: r["updated_at"]
    )
    return Codebook.from_row(compatible[-1]) if compatible else None


def fit_codebook(
    store: DeltaStore, config: SemanticIdConfig, encoder: str, run_id: str
) -> Codebook:
    """Fit a new codebook version on a sample of the embeddings table and record it."""
    table = store.read_or_empty("embeddings", columns=["item_id", "embedding", "encoder"])
    table = table.filter(pc.equal(table.column("encoder"), encoder))
    if table.num_rows < 2:
        raise ValueError(
            f"need at least 2 embeddings from encoder {encoder} to fit, have {table.num_rows}"
        )
    rng = np.random.default_rng(config.seed)
    keep = np.sort(rng.permutation(table.num_rows)[: config.fit_sample])
    sample = np.asarray(table.take(keep).column("embedding").to_pylist(), dtype=np.float32)
    digest = stable_hash([encoder, sample.shape, float(sample.sum())], 6)
    version = f"{config.method}-{utc_now():%Y%m%dT%H%M%S}-{digest}"
    codebook = fit_rq_kmeans(
        sample,
        levels=config.levels,
        codebook_size=config.codebook_size,
        iters=config.kmeans_iters,
        redo=config.kmeans_redo,
        seed=config.seed,
        encoder=encoder,
        version=version,
    )
    store.merge("codebooks", [{**codebook.to_row(), "run_id": run_id, "updated_at": utc_now()}])
    logger.info("fitted codebook %s on %d items: %s", version, len(sample), codebook.metrics)
    return codebook


def assign_semantic_ids(
    store: DeltaStore, codebook: Codebook, items: list[dict[str, Any]], run_id: str
) -> list[dict[str, Any]]:
    """SID rows for ``items`` (dicts with item_id, embedding and lineage) under ``codebook``."""
    if not items:
        return []
    codes = codebook.encode(np.asarray([i["embedding"] for i in items], dtype=np.float32))
    new_codes = {
        item["item_id"]: tuple(int(c) for c in row) for item, row in zip(items, codes, strict=True)
    }
    suffixes = assign_dedup_suffixes(new_codes, _existing_assignments(store, codebook.version))
    now = utc_now()
    lineage = (
        "content_sha256",
        "describer",
        "describer_revision",
        "prompt_version",
        "prompt_sha",
        "encoder",
    )
    return [
        {
            "item_id": item["item_id"],
            "codes": list(new_codes[item["item_id"]]),
            "dedup": suffixes[item["item_id"]],
            "sid": sid_string(new_codes[item["item_id"]], suffixes[item["item_id"]]),
            "codebook_version": codebook.version,
            **{k: item.get(k) for k in lineage},
            "run_id": run_id,
            "updated_at": now,
        }
        for item in items
    ]


def _existing_assignments(
    store: DeltaStore, version: str
) -> dict[str, tuple[tuple[int, ...], int]]:
    table = store.read_or_empty(
        "semantic_ids", columns=["item_id", "codes", "dedup", "codebook_version"]
    )
    table = table.filter(pc.equal(table.column("codebook_version"), version))
    return {r["item_id"]: (tuple(r["codes"]), r["dedup"]) for r in table.to_pylist()}
