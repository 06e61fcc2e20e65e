"""The codebook registry: the ``codebooks`` table as the one place that answers which codebook
a version names, which one runs pin, whether one serves a config, which embeddings a fit or a
comparison samples, and records a fit or a promotion decision.

"Current" is what a run pins with ``semantic_ids.codebook_version: auto``: the most recently
promoted codebook compatible with the config (method, levels, codebook size, encoder), else the
first compatible one a run fitted (never an unpromoted ``fit-sids`` candidate, never one that
lost a first-fit race). Fitting lives in ``pipelines.sids``, promotion decisions in
``pipelines.promotion``; both read and write codebooks through here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import SemanticIdConfig
from core.errors import UsageError
from schemas.rows import codebook_row as build_codebook_row
from schemas.rows import utc_now
from schemas.store import DeltaStore
from transforms.semantic_ids import Codebook, TooFewEmbeddings

logger = logging.getLogger(__name__)


# -- get ----------------------------------------------------------------------------------------
def find_row(store: DeltaStore, version: str | None) -> dict[str, Any] | None:
    """The full ``codebooks`` row of ``version``, or None if it is not recorded."""
    if version is None:
        return None
    rows = store.read_or_empty("codebooks", keys=[version]).to_pylist()
    return rows[0] if rows else None


def codebook_row(store: DeltaStore, version: str) -> dict[str, Any]:
    """The full ``codebooks`` row of ``version``; a clear error if it is not recorded."""
    row = find_row(store, version)
    if row is None:
        raise UsageError(
            f"codebook '{version}' is not in the codebooks table; known: {known_versions(store)}"
        )
    return row


def known_versions(store: DeltaStore) -> list[str]:
    table = store.read_or_empty("codebooks", columns=["codebook_version"])
    return sorted(table.column("codebook_version").to_pylist())


def latest_version(store: DeltaStore) -> str | None:
    """The most recently written codebook version (None if there is none)."""
    table = store.read_or_empty("codebooks", columns=["codebook_version", "updated_at"])
    rows = table.to_pylist()
    return max(rows, key=lambda r: r["updated_at"])["codebook_version"] if rows else None


def load_codebook(lake: str, version: str) -> Codebook:
    """A recorded codebook by version (engine workers load it through their
    ``pipelines.worker.Worker``, once, instead of receiving it in a closure)."""
    row = find_row(DeltaStore(lake), version)
    if row is None:
        raise ValueError(f"codebook {version} is not in the codebooks table of {lake}")
    return Codebook.from_row(row)


# -- compatible and current ---------------------------------------------------------------------
def settings_mismatch(row: dict[str, Any], config: SemanticIdConfig, encoder: str) -> list[str]:
    """How a codebook row differs from the settings a run with ``config`` pins by."""
    wanted = {
        "method": config.method,
        "levels": config.levels,
        "codebook_size_requested": config.codebook_size,
        "encoder": encoder,
    }
    return [
        f"{key} {row[key]!r} but the config has {value!r}"
        for key, value in wanted.items()
        if row[key] != value
    ]


def compatible(row: dict[str, Any], config: SemanticIdConfig, encoder: str) -> bool:
    """Whether the codebook of ``row`` can code items for ``config`` and ``encoder``."""
    return not settings_mismatch(row, config, encoder)


def auto_choice(
    rows: list[dict[str, Any]], config: SemanticIdConfig, encoder: str
) -> dict[str, Any] | None:
    """The codebooks row ``auto`` pins among ``rows``."""
    matching = [r for r in rows if compatible(r, config, encoder)]
    promoted = [r for r in matching if r.get("promotion_status") == "promoted"]
    if promoted:
        return max(promoted, key=lambda r: r["promoted_at"])
    fitted_by_runs = [r for r in matching if r.get("promotion_status") is None]
    return min(fitted_by_runs, key=lambda r: (r["updated_at"], r["codebook_version"]), default=None)


def pinned_codebook(store: DeltaStore, config: SemanticIdConfig, encoder: str) -> Codebook | None:
    """The codebook named by config; or (``auto``) the current one (see the module doc);
    None if none."""
    if config.codebook_version != "auto":
        row = find_row(store, config.codebook_version)
        if row is None:
            raise UsageError(
                f"semantic_ids.codebook_version '{config.codebook_version}' is not in "
                f"the codebooks table; known: {known_versions(store)}"
            )
        return Codebook.from_row(row)
    row = auto_choice(store.read_or_empty("codebooks").to_pylist(), config, encoder)
    return Codebook.from_row(row) if row else None


def current_codebook(store: DeltaStore, config: SemanticIdConfig, encoder: str) -> Codebook | None:
    """The codebook ``auto`` pins for these settings, whatever version the config names."""
    return pinned_codebook(store, config.model_copy(update={"codebook_version": "auto"}), encoder)


# -- sample -------------------------------------------------------------------------------------
def embeddings_of(
    store: DeltaStore, encoder: str, columns: list[str], keys: list[str] | None = None
) -> pa.Table:
    """The embeddings table rows from ``encoder`` (of ``keys`` if given), in item_id order (so
    a fit never depends on how an engine happened to lay out the files)."""
    columns = list(dict.fromkeys([*columns, "encoder"]))
    table = store.read_or_empty("embeddings", columns=columns, keys=keys)
    return table.filter(pc.equal(table.column("encoder"), encoder)).sort_by("item_id")


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as an (n, dim) float32 array (without a Python list per row)."""
    column = table["embedding"].combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), -1).astype(np.float32, copy=False)


def seeded_positions(rows: int, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``range(rows)``, chosen by ``seed``, in ascending order."""
    return np.sort(np.random.default_rng(seed).permutation(rows)[:limit])


def seeded_sample(table: pa.Table, limit: int, seed: int) -> pa.Table:
    """At most ``limit`` rows of ``table``, the same ones for the same seed, in table order."""
    if table.num_rows <= limit:
        return table
    return table.take(seeded_positions(table.num_rows, limit, seed))


def require_embeddings(table: pa.Table, encoder: str, purpose: str = "fit") -> None:
    """A clear error unless ``table`` holds at least two embeddings."""
    if table.num_rows < 2:
        raise TooFewEmbeddings(
            f"need at least 2 embeddings from encoder {encoder} to {purpose}, have {table.num_rows}"
        )


def sample_keys(keys: pa.Table, config: SemanticIdConfig, encoder: str) -> list[str]:
    """The item_ids ``fit_sample`` picks from ``keys`` (sorted), without reading vectors."""
    require_embeddings(keys, encoder)
    chosen = seeded_positions(keys.num_rows, config.fit_sample, config.seed)
    return keys.take(chosen)["item_id"].to_pylist()


def fit_sample(table: pa.Table, config: SemanticIdConfig, encoder: str) -> np.ndarray:
    """A seeded sample (≤ ``fit_sample``) of the ``embedding`` column of ``table``."""
    require_embeddings(table, encoder)
    keep = seeded_positions(table.num_rows, config.fit_sample, config.seed)
    return embedding_matrix(table.take(keep))


# -- writing codebook rows ---------------------------------------------------------------------
def record_fitted(store: DeltaStore, codebook: Codebook, run_id: str) -> int | None:
    """The codebooks row of a fit; returns the table version of that commit."""
    return store.merge("codebooks", [fitted_row(codebook, run_id)])


def fitted_row(codebook: Codebook, run_id: str) -> dict[str, Any]:
    """The codebooks row of a codebook fitted in ``run_id`` (no promotion status yet)."""
    return build_codebook_row(codebook.to_row(), run_id=run_id, now=utc_now())


def set_promotion_status(store: DeltaStore, row: dict[str, Any], status: str, note: str) -> None:
    """Write a promotion status (candidate, promoted, refused, superseded) and its note to
    the row."""
    promoted_at = utc_now() if status == "promoted" else row.get("promoted_at")
    stamped = build_codebook_row(
        row,
        now=utc_now(),
        promotion_status=status,
        promoted_at=promoted_at,
        promotion_note=note,
    )
    store.merge("codebooks", [stamped])
    logger.info("codebook %s: %s (%s)", row["codebook_version"], status, note)
