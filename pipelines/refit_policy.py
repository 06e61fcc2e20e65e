"""Refits are explicit: a routine run never fits a new codebook on a lake that has codebooks,
because a new codebook re-codes every item of the lake. The lake's very first run fits one."""

from __future__ import annotations

from typing import Any

from core.config import SemanticIdConfig
from core.errors import UsageError
from pipelines.codebooks import auto_choice
from schemas.store import DeltaStore

SHOWN = 3  # codebooks named in the refusal, newest first


class RefitRefused(UsageError):
    """The config needs a codebook the lake does not have, and refits are not allowed."""


def check_refit_allowed(store: DeltaStore, config: SemanticIdConfig, encoder: str) -> None:
    """Fail fast when the run would fit a new codebook on a lake that already has codebooks
    (none of them pinnable for ``config`` and ``encoder``), unless ``refit`` is ``allow``."""
    if config.refit == "allow" or config.codebook_version != "auto":
        return  # an explicit name is pinned as it is (an unknown one fails there)
    rows = store.read_or_empty("codebooks").to_pylist()
    if not rows or auto_choice(rows, config, encoder) is not None:
        return
    raise RefitRefused(refusal(rows, config, encoder))


def refusal(rows: list[dict[str, Any]], config: SemanticIdConfig, encoder: str) -> str:
    """What the config asks for, what the lake has, and the three ways forward."""
    wanted = f"{config.method} {config.levels}x{config.codebook_size} on {encoder}"
    newest = sorted(rows, key=lambda r: r["updated_at"], reverse=True)
    have = "; ".join(describe(r) for r in newest[:SHOWN])
    if len(rows) > SHOWN:
        have += f"; and {len(rows) - SHOWN} older"
    return (
        f"no codebook of this lake fits the config ({wanted}); it has {have}. A run would fit "
        "a new codebook and re-code every item of the lake. Refit explicitly with `enrich "
        "fit-sids --promote always --assign` (same config), pin one with "
        "--set semantic_ids.codebook_version=VERSION, or let this run refit with --refit-sids "
        "(semantic_ids.refit=allow)"
    )


def describe(row: dict[str, Any]) -> str:
    status = row.get("promotion_status") or "fitted by a run"
    return (
        f"{row['codebook_version']} ({row['method']} {row['levels']}x"
        f"{row['codebook_size_requested']} on {row['encoder']}, {status})"
    )
