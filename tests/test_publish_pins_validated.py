"""`enrich publish` pins the table versions `enrich validate` checked for the run, not whatever
the lake holds when publish runs (the daily DAG runs assign-sids and other jobs in between)."""

import json

from jobs.cli import main
from schemas.releases import release_versions
from schemas.rows import utc_now
from schemas.store import DeltaStore

LABEL = "2026-11-01"


def item_rows(ids: list[str], run_id: str) -> tuple[list[dict], list[dict]]:
    """embeddings and semantic_ids rows of ``ids`` (distinct codes each)."""
    now = utc_now()
    embeddings = [
        {
            "item_id": item,
            "embedding": [float(n), 1.0],
            "dim": 2,
            "encoder": "enc@1",
            "run_id": run_id,
            "updated_at": now,
        }
        for n, item in enumerate(ids)
    ]
    sids = [
        {
            "item_id": item,
            "codes": [n, 0],
            "dedup": 0,
            "sid": f"{n}-0-0",
            "codebook_version": "cb1",
            "run_id": run_id,
            "updated_at": now,
        }
        for n, item in enumerate(ids)
    ]
    return embeddings, sids


def lake_after_a_run(lake) -> DeltaStore:
    """Three items with SIDs and the succeeded run ``r1`` that left them unchanged."""
    store = DeltaStore(lake)
    embeddings, sids = item_rows(["a", "b", "c"], "seed")
    store.merge("embeddings", embeddings)
    store.merge("semantic_ids", sids)
    now = utc_now()
    run = {
        "run_id": "r1",
        "status": "succeeded",
        "engine": "local",
        "input": "dt=2026-11-01",
        "started_at": now,
        "items": 3,
        "succeeded": 0,
        "skipped": 3,
        "failed": 0,
        "table_versions_json": json.dumps({"embeddings": 0, "semantic_ids": 0}),
        "updated_at": now,
    }
    store.merge("runs", [run])
    return store


def publish(lake) -> int:
    return main(["publish", "--lake", str(lake), "--label", LABEL, "--for-input", "dt=2026-11-01"])


def test_publish_pins_the_versions_validate_checked_not_newer_commits(tmp_path, capsys):
    lake = tmp_path / "lake"
    store = lake_after_a_run(lake)
    assert main(["validate", "--lake", str(lake), "--for-input", "dt=2026-11-01"]) == 0
    validated = {"embeddings": 0, "semantic_ids": 0, "runs": 0, "descriptions": None}
    embeddings, sids = item_rows(["d"], "another-run")  # lands between validate and publish
    store.merge("embeddings", embeddings)
    store.merge("semantic_ids", sids)
    assert store.version("embeddings") == store.version("semantic_ids") == 1

    assert publish(lake) == 0
    pinned = release_versions(lake, LABEL)
    assert {name: pinned[name] for name in validated} == validated
    [release] = store.read("releases").to_pylist()
    assert json.loads(release["row_counts_json"])["semantic_ids"] == 3  # not 4
    [validation] = store.read("validations").to_pylist()
    assert release["validation_id"] == validation["validation_id"] and validation["passed"]
    assert validation["run_id"] == release["run_id"] == "r1"


def test_publish_refuses_a_run_never_validated_or_whose_last_validation_failed(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake_after_a_run(lake)
    assert publish(lake) == 2
    assert "run r1 has not been validated: run `enrich validate" in capsys.readouterr().err
    assert main(["validate", "--lake", str(lake), "--min-rows", "99"]) == 1
    assert publish(lake) == 2
    assert "the latest validation of run r1" in capsys.readouterr().err
    assert main(["validate", "--lake", str(lake)]) == 0
    assert publish(lake) == 0
