"""The evaluation protocol itself: leave-last-out by time, cold items held out entirely,
long-tail targets outside the head, and the ranking metrics."""

import numpy as np
import pyarrow as pa
import pytest

from evaluation.split import leave_last_out
from evaluation.train import metrics


def log(rows: list[tuple[str, str, int]]) -> pa.Table:
    users, items, times = zip(*rows, strict=True)
    return pa.table({"user_id": list(users), "item_id": list(items), "timestamp": list(times)})


def test_the_last_interaction_by_time_is_the_target_not_the_last_row():
    split = leave_last_out(
        log([("u", "b", 3), ("u", "a", 1), ("u", "c", 2), ("v", "a", 5), ("v", "b", 6)]),
        catalog={"z"},
        cold_fraction=0.0,
        head_share=0.8,
        seed=0,
    )
    ids = ["_", *split.item_ids]
    targets = sorted(ids[t] for t in split.cases["all"].targets)
    assert targets == ["b", "b"]  # u's last by time is b (t=3), v's is b
    assert [ids[i] for i in split.train[0]] == ["a", "c"]
    assert "z" in split.item_ids  # catalog items without interactions are ranked too


def test_cold_items_never_reach_training_and_slices_hold_what_they_say():
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.zipf(1.5) % 60}", t) for u in range(80) for t in range(12)]
    split = leave_last_out(log(rows), set(), cold_fraction=0.2, head_share=0.8, seed=0)
    assert split.counts["cold_items"] == round(0.2 * len({r[1] for r in rows}))
    assert not any(split.cold[seq].any() for seq in split.train)
    assert all(split.cold[t] for t in split.cases["cold_start"].targets)
    assert all(not split.cold[h].any() for h in split.cases["cold_start"].histories)
    assert all(split.tail[t] and not split.cold[t] for t in split.cases["long_tail"].targets)
    head = np.flatnonzero(~split.tail[1:] & ~split.cold[1:]) + 1
    counts = np.bincount(np.concatenate(split.train), minlength=len(split.cold))
    assert counts[head].min() >= counts[split.tail].max()  # the head is the popular end


def test_metrics_for_one_target_per_case():
    figures = metrics(np.array([0, 9, 10, 49, 50]))
    assert figures["hr@10"] == 0.4 and figures["recall@50"] == 0.8
    assert np.isclose(figures["ndcg@10"], (1 + 1 / np.log2(11)) / 5)


def test_csv_interactions_with_iso_times_and_a_rating_threshold(tmp_path):
    from evaluation.data import read_interactions

    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,timestamp,rating\n"
        "007,42,2026-01-02T10:00:00,5\n007,43,2026-01-01 09:00:00,2\n8,42,2026-01-03,4\n"
    )
    table = read_interactions(str(path), min_rating=3)
    assert table.column("user_id").to_pylist() == ["007", "8"]  # ids stay as written
    assert table.column("timestamp").to_pylist()[0] < table.column("timestamp").to_pylist()[1]
    path.write_text("user_id,item_id,timestamp\n1,2,yesterday\n")
    with pytest.raises(ValueError, match="not a number, a date, a timestamp or ISO 8601"):
        read_interactions(str(path))
