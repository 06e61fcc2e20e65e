"""Codebook promotion, validate, assign-sids and publish through the CLI, on a seeded lake."""

import json
from datetime import UTC, datetime

import pytest
import yaml

from core.config import EncodeConfig, SemanticIdConfig
from jobs.cli import main
from pipelines.sids import fit_codebook, pinned_codebook
from schemas import DeltaStore
from schemas.releases import release_versions
from tests.sid_lake import codebook_rows, seed_lake
from transforms.encode import EncodeStage

pytestmark = pytest.mark.slow


@pytest.fixture
def seeded(tmp_path):
    """A lake with 800 embeddings from the default encoder, and a config with K=16."""
    encoder = EncodeStage(EncodeConfig()).encoder_id
    lake = tmp_path / "lake"
    seed_lake(lake, encoder)
    config = tmp_path / "sids.yaml"
    config.write_text(yaml.safe_dump({"semantic_ids": {"codebook_size": 16}}))
    return lake, ["--lake", str(lake), "--config", str(config)], encoder


def test_auto_pins_the_promoted_codebook_never_a_newer_candidate(seeded):
    lake, base, encoder = seeded
    store, config = DeltaStore(lake), SemanticIdConfig(codebook_size=16)
    run_fitted = fit_codebook(store, config, encoder, "r1")  # as a run fits on first use
    assert main(["fit-sids", *base, "--set", "semantic_ids.seed=5"]) == 0  # a candidate
    assert pinned_codebook(store, config, encoder).version == run_fitted.version
    assert main(["fit-sids", *base, "--promote", "always"]) == 0
    promoted = max(codebook_rows(lake).values(), key=lambda r: r["updated_at"])
    assert promoted["promotion_status"] == "promoted" and promoted["promoted_at"] is not None
    assert main(["fit-sids", *base, "--set", "semantic_ids.seed=6"]) == 0  # newer candidate
    assert pinned_codebook(store, config, encoder).version == promoted["codebook_version"]


def test_a_codebook_fitted_for_other_settings_is_refused(seeded, capsys):
    lake, base, _ = seeded
    assert main(["fit-sids", *base, "--promote", "always"]) == 0
    assert main(["fit-sids", *base, "--set", "semantic_ids.codebook_size=2"]) == 0
    k2 = capsys.readouterr().out.strip().splitlines()[-1]  # the last line is the version
    assert main(["promote-sids", *base, "--version", k2, "--if-no-worse"]) == 3
    out = capsys.readouterr().out
    assert "codebook_size_requested 2 but the config has 16" in out
    assert "unique fraction before dedup" in out
    assert codebook_rows(lake)[k2]["promotion_status"] == "refused"
    assert main(["promote-sids", *base, "--version", k2]) == 2  # even on request
    assert "runs would never pin it" in capsys.readouterr().err
    assert main(["promote-sids", *base, "--version", "nope"]) == 2
    assert main(["fit-sids", *base, "--assign", "--promote", "never"]) == 2


def test_validate_fails_until_items_have_sids_then_publish_records_the_versions(seeded, capsys):
    lake, base, _ = seeded
    store = DeltaStore(lake)
    assert main(["validate", "--lake", str(lake)]) == 2
    assert "nothing has run there yet" in capsys.readouterr().err
    now = datetime.now(UTC)
    store.merge(
        "runs",
        [
            {
                "run_id": "r1",
                "status": "succeeded",
                "engine": "local",
                "input": "dt=2026-11-01",
                "started_at": now,
                "items": 800,
                "succeeded": 0,
                "skipped": 800,
                "failed": 0,
                "table_versions_json": json.dumps({"embeddings": store.version("embeddings")}),
                "updated_at": now,
            }
        ],
    )
    assert main(["validate", "--lake", str(lake), "--for-input", "dt=2026-11-01"]) == 1
    assert "FAIL sid_coverage" in capsys.readouterr().out
    assert main(["assign-sids", *base]) == 0
    assert store.read("semantic_ids").num_rows == 800
    assert main(["validate", "--lake", str(lake), "--min-unique-fraction", "0.99"]) == 1
    assert main(["validate", "--lake", str(lake), "--min-unique-fraction", "0.01"]) == 0
    for _ in range(2):  # publishing a label again replaces it
        assert main(["publish", "--lake", str(lake), "--label", "2026-11-01"]) == 0
    [release] = store.read("releases").to_pylist()
    assert release["run_id"] == "r1"
    versions = release_versions(lake, "2026-11-01")
    assert versions["semantic_ids"] == store.version("semantic_ids")
    assert versions["descriptions"] is None
    assert main(["publish", "--lake", str(lake), "--label", "bad label"]) == 2
