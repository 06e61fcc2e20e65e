"""The crosswalk of a re-coding: when items move onto a new codebook, each one's SID before and
after goes to the ``sid_crosswalk`` table, with the churn figures of the move."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from schemas.rows import crosswalk_row, utc_now
from schemas.store import DeltaStore
from transforms.semantic_ids.churn import CHURN_LEVELS, churn, crosswalk_rows

SID_COLUMNS = ["item_id", "codes", "sid", "codebook_version"]


def record_crosswalk(
    store: DeltaStore, new_rows: list[dict[str, Any]], run_id: str
) -> dict[str, Any] | None:
    """Before ``new_rows`` (semantic_ids rows of one new codebook) replace the items' SIDs,
    write a crosswalk row for every item that held a SID from another codebook. Returns the
    churn figures of those items (None when no item changed codebook)."""
    if not new_rows:
        return None
    keys = [row["item_id"] for row in new_rows]
    held = store.read_or_empty("semantic_ids", columns=SID_COLUMNS, keys=keys).to_pylist()
    before = {row["item_id"]: row for row in held}
    moved = [
        row
        for row in new_rows
        if row["item_id"] in before
        and before[row["item_id"]]["codebook_version"] != row["codebook_version"]
    ]
    if not moved:
        return None
    old = [before[row["item_id"]] for row in moved]
    rows = crosswalk_rows([row["item_id"] for row in moved], old, moved)
    now = utc_now()
    store.merge("sid_crosswalk", [crosswalk_row(row, run_id=run_id, now=now) for row in rows])
    return churn(codes_of(old), codes_of(moved))


def codes_of(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([row["codes"] for row in rows], dtype=np.int64)


def churn_summary(store: DeltaStore, version: str) -> dict[str, Any] | None:
    """The churn of the items re-coded onto codebook ``version`` (None if none was)."""
    flags = [f"level_{depth}_changed" for depth in CHURN_LEVELS]
    columns = ["new_codebook_version", "old_codebook_version", *flags]  # not the SID strings
    table = store.read_or_empty("sid_crosswalk", columns=columns)
    if table.num_rows == 0:
        return None
    table = table.filter(pc.equal(table.column("new_codebook_version"), version))
    if table.num_rows == 0:
        return None
    summary: dict[str, Any] = {
        "items": table.num_rows,
        "from_codebooks": sorted(set(table.column("old_codebook_version").to_pylist())),
    }
    for depth in CHURN_LEVELS:
        changed = table.column(f"level_{depth}_changed")
        summary[f"level_{depth}_prefix_changed"] = round(
            pc.sum(changed).as_py() / table.num_rows, 4
        )
    return summary
