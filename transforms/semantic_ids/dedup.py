"""Dedup: items whose codes collide get a last-level suffix 0, 1, 2, … that stays stable.

An item that already holds a suffix for the same codes keeps it; new items take the lowest
free suffix for their codes, in item_id order so reruns are deterministic. Before the suffix,
collisions move to a free nearby last-level code where the codebook allows (collisions.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from transforms.semantic_ids.collisions import Codes, settle_last_level


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


def settle_and_dedup(
    new_codes: dict[str, Codes],
    choices: dict[str, tuple[int, ...]],
    existing: dict[str, tuple[Codes, int]],
) -> dict[str, tuple[Codes, int]]:
    """(final codes, suffix) per item of ``new_codes``: collisions first move within their
    ``choices`` (see collisions.py), then the dedup suffix separates what still collides."""
    held = {item_id: codes for item_id, (codes, _) in existing.items()}
    settled = settle_last_level(new_codes, choices, held)
    suffixes = assign_dedup_suffixes(settled, existing)
    return {item_id: (codes, suffixes[item_id]) for item_id, codes in settled.items()}


# -- dedup as a group-by, for the engines ------------------------------------------------------
# Codes only compete within a prefix (all levels but the last), so grouping the entries by
# prefix and settling each group alone gives exactly the global answer, provided an item that
# is being re-coded carries its held (codes, suffix) along instead of holding them in its old
# group.


def dedup_entry(
    item_id: str,
    codes: Sequence[int] | None,
    held: tuple[Sequence[int], int] | None,
    choices: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], dict]:
    """(group key, entry) for one item: new ``codes`` (None if not being coded now), the
    (codes, suffix) it ``held`` before (None if it had none) and its last-level ``choices``
    (default: only its coded last level)."""
    new = tuple(int(c) for c in codes) if codes is not None else None
    entry = {
        "item_id": item_id,
        "codes": new,
        "held": (tuple(int(c) for c in held[0]), int(held[1])) if held is not None else None,
        "choices": tuple(int(c) for c in choices) if choices else new and new[-1:],
    }
    return (new if new is not None else entry["held"][0])[:-1], entry


def dedup_group(entries: Sequence[dict]) -> dict[str, tuple[Codes, int]]:
    """(final codes, suffix) for the newly coded items of one prefix group."""
    coded = [e for e in entries if e["codes"] is not None]
    return settle_and_dedup(
        {e["item_id"]: e["codes"] for e in coded},
        {e["item_id"]: e["choices"] for e in coded},
        {e["item_id"]: e["held"] for e in entries if e["held"] is not None},
    )
