"""Leave-last-out by time, with cold-start and long-tail slices.

- Items are indexed 1..N (0 pads). ``cold_fraction`` of the interacted items, picked with
  ``split_seed``, are *cold*: held out of the training interactions entirely (never a
  training target, input or negative).
- ``all``: each user's last interaction (by time) is the target; the user's earlier warm
  interactions are the history. The training sequence is that same history.
- ``cold_start``: each user's last interaction with a cold item, with the warm interactions
  before it as history.
- ``long_tail``: the ``all`` cases whose target is a warm item outside the head (the most
  popular items holding ``head_share`` of the training interactions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

SLICES = ("all", "cold_start", "long_tail")


@dataclass
class Cases:
    """Test cases of one slice: a history per case and the target item index."""

    histories: list[np.ndarray] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)

    def add(self, history: np.ndarray, target: int) -> None:
        self.histories.append(history)
        self.targets.append(target)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    item_ids: list[str]  # index i + 1 is item_ids[i]
    train: list[np.ndarray]  # per user, warm item indices in time order
    cold: np.ndarray  # bool per index (0..N); True for cold items
    tail: np.ndarray  # bool per index; True for warm long-tail items
    cases: dict[str, Cases]
    counts: dict[str, int]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def item_index(interactions: pa.Table, catalog: set[str]) -> list[str]:
    """Every item a model may rank: the catalog's items and the interacted ones, sorted."""
    return sorted(catalog | set(interactions.column("item_id").to_pylist()))


def user_sequences(interactions: pa.Table, index: dict[str, int]) -> list[np.ndarray]:
    """Per user, item indices ordered by (timestamp, file order)."""
    users = np.asarray(interactions.column("user_id").to_pylist(), dtype=object)
    items = np.fromiter((index[i] for i in interactions.column("item_id").to_pylist()), np.int64)
    times = interactions.column("timestamp").to_numpy()
    order = np.lexsort((np.arange(len(items)), times, users.astype(str)))
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return np.split(items, starts[1:]) if len(items) else []


def pick_cold(interacted: list[str], index: dict[str, int], fraction: float, seed: int):
    """A seeded choice among the interacted item ids: the same whatever the catalog holds,
    so two lake versions are compared on the same cold items."""
    cold = np.zeros(len(index) + 1, dtype=bool)
    count = int(round(fraction * len(interacted)))
    chosen = np.random.default_rng(seed).choice(len(interacted), size=count, replace=False)
    cold[[index[interacted[i]] for i in chosen]] = True
    return cold


def long_tail(train: list[np.ndarray], cold: np.ndarray, head_share: float) -> np.ndarray:
    """Warm items outside the head (the most popular items with ``head_share`` of training)."""
    counts = np.bincount(np.concatenate([*train, [0]]), minlength=len(cold))
    counts[0] = 0
    order = np.argsort(-counts, kind="stable")
    covered = np.cumsum(counts[order]) / max(1, counts.sum())
    head = order[: int(np.searchsorted(covered, head_share)) + 1]
    tail = ~cold
    tail[0] = False
    tail[head] = False
    return tail


def leave_last_out(
    interactions: pa.Table, catalog: set[str], cold_fraction: float, head_share: float, seed: int
) -> Split:
    """The split described in the module docstring."""
    item_ids = item_index(interactions, catalog)
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    sequences = [s for s in user_sequences(interactions, index) if len(s) >= 2]
    interacted = sorted({item_ids[i - 1] for seq in sequences for i in seq})
    cold = pick_cold(interacted, index, cold_fraction, seed)
    cases = {name: Cases() for name in SLICES}
    train = []
    for sequence in sequences:
        history = sequence[:-1][~cold[sequence[:-1]]]
        train.append(history)
        if len(history):
            cases["all"].add(history, int(sequence[-1]))
        cold_at = np.flatnonzero(cold[sequence])
        if len(cold_at):
            before = sequence[: cold_at[-1]]
            if len(before := before[~cold[before]]):
                cases["cold_start"].add(before, int(sequence[cold_at[-1]]))
    tail = long_tail(train, cold, head_share)
    for history, target in zip(cases["all"].histories, cases["all"].targets, strict=True):
        if tail[target]:
            cases["long_tail"].add(history, target)
    counts = {
        "users": len(sequences),
        "users_dropped_under_2_interactions": interactions.num_rows
        and len(set(interactions.column("user_id").to_pylist())) - len(sequences),
        "items": len(item_ids),
        "interactions": interactions.num_rows,
        "cold_items": int(cold.sum()),
        "long_tail_items": int(tail.sum()),
        **{f"cases_{name}": len(c) for name, c in cases.items()},
    }
    return Split(item_ids, train, cold, tail, cases, counts)


def training_log(split: Split) -> pa.Table:
    """The interactions the split's models learn from, as ``user_id, item_id, timestamp``:
    per user the warm history before the held-out last item, in time order (cold items and
    test targets never appear). For anything else trained on the same data without leakage,
    e.g. ``enrich fit-encoder``. User ids are the users' positions, timestamps the steps."""
    users, items, steps = [], [], []
    for position, history in enumerate(split.train):
        users += [f"user-{position}"] * len(history)
        items += [split.item_ids[i - 1] for i in history]
        steps += range(len(history))
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "timestamp": pa.array(steps, pa.int64()),
        }
    )
