"""Dedup: items whose codes collide get a last-level suffix 0, 1, 2, … that stays stable.

An item that already holds a suffix for the same codes keeps it; new items take the lowest
free suffix for their codes, in item_id order so reruns are deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def sid_string(codes: Sequence[int], suffix: int) -> str:
    """The string form of a Semantic ID, e.g. ``12-201-33-0``."""
    return "-".join(str(int(c)) for c in (*codes, suffix))


def assign_dedup_suffixes(
    new_codes: dict[str, tuple[int, ...]],
    existing: dict[str, tuple[tuple[int, ...], int]],
) -> dict[str, int]:
    """Suffix per item of ``new_codes``; ``existing`` maps item_id → (codes, suffix) held now."""
    taken: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for item_id, (codes, suffix) in existing.items():
        if item_id not in new_codes or new_codes[item_id] == codes:
            taken[codes].add(suffix)
    suffixes: dict[str, int] = {}
    for item_id in sorted(new_codes):
        codes = new_codes[item_id]
        held = existing.get(item_id)
        if held is not None and held[0] == codes:
            suffixes[item_id] = held[1]
            continue
        suffix = 0
        while suffix in taken[codes]:
            suffix += 1
        taken[codes].add(suffix)
        suffixes[item_id] = suffix
    return suffixes


# -- dedup as a group-by, for the engines ------------------------------------------------------
# Suffixes only compete among items with the same codes, so grouping the entries by codes and
# calling ``assign_dedup_suffixes`` per group gives exactly the global answer, provided an item
# that is being re-coded carries its held (codes, suffix) along instead of holding a suffix in
# its old group.


def dedup_entry(
    item_id: str, codes: Sequence[int] | None, held: tuple[Sequence[int], int] | None
) -> tuple[tuple[int, ...], dict]:
    """(group key, entry) for one item: new ``codes`` (None if not being coded now) and the
    (codes, suffix) it ``held`` before (None if it had none)."""
    entry = {
        "item_id": item_id,
        "codes": tuple(int(c) for c in codes) if codes is not None else None,
        "held": (tuple(int(c) for c in held[0]), int(held[1])) if held is not None else None,
    }
    return (entry["codes"] if entry["codes"] is not None else entry["held"][0]), entry


def dedup_group(entries: Sequence[dict]) -> dict[str, int]:
    """Suffixes for the newly coded items of one codes group."""
    new_codes = {e["item_id"]: e["codes"] for e in entries if e["codes"] is not None}
    existing = {e["item_id"]: e["held"] for e in entries if e["held"] is not None}
    return assign_dedup_suffixes(new_codes, existing)
