"""``enrich evaluate`` over the three SID tokenizations of one real codebook, whose
SentencePiece model is sized by ``semantic_ids.sentencepiece_budget``."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from jobs.cli import main
from schemas import DeltaStore
from tests.eval_data import catalog, interactions, write_lake

pytestmark = pytest.mark.slow
SIDS = {"levels": 2, "codebook_size": 8, "sentencepiece_budget": 16 + 16}
EVAL = {
    "representations": ["sid_codes", "sid", "sid_pieces"],
    "models": ["two_tower"],
    "seeds": [0],
    "cold_fraction": 0.2,
    "dim": 16,
    "epochs": 3,
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sid-variants")
    items = catalog(items_per_topic=10)
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump({"semantic_ids": SIDS, "evaluate": EVAL}))
    write_lake(root / "lake", items)
    base = ["--lake", str(root / "lake"), "--config", str(config)]
    assert main(["fit-sids", *base, "--assign"]) == 0
    pq.write_table(interactions(items, users=80, length=8), root / "interactions.parquet")
    return {"root": root, "base": base, "interactions": str(root / "interactions.parquet")}


def test_each_sid_tokenization_is_scored_and_recorded(lake):
    out = lake["root"] / "evaluation.json"
    argv = ["evaluate", *lake["base"], "--interactions", lake["interactions"]]
    assert main([*argv, "--json", str(out)]) == 0
    [result] = json.loads(out.read_text()).values()
    assert set(result["results"]["two_tower"]) == {"sid_codes", "sid", "sid_pieces"}
    rows = result["sid_vocabulary"]
    assert rows["sid_codes"] <= 16 < rows["sid"]  # n-grams add the level-2 prefixes
    assert rows["sid_codes"] < rows["sid_pieces"] <= 32  # the budget bounds the pieces' rows
    for kind in ("sid_codes", "sid", "sid_pieces"):
        assert result["coverage"][kind]["items_without_features"] == 0
    recorded = DeltaStore(lake["root"] / "lake").read("evaluations").to_pylist()
    assert {r["representation"] for r in recorded} == {"sid_codes", "sid", "sid_pieces"}


def test_sid_pieces_on_sids_without_pieces_fails_fast(lake, tmp_path, capsys):
    copy = tmp_path / "lake"
    shutil.copytree(lake["root"] / "lake", copy)
    store = DeltaStore(copy)
    store.merge(
        "semantic_ids",
        [{**row, "sid_pieces": None} for row in store.read("semantic_ids").to_pylist()],
    )
    argv = ["evaluate", "--lake", str(copy), *lake["base"][2:]]
    assert main([*argv, "--interactions", lake["interactions"], "--no-record"]) == 2
    assert "representation 'sid_pieces' needs SentencePiece pieces" in capsys.readouterr().err


def test_enrich_evaluate_runs_the_generative_retriever_on_the_lakes_sids(lake, capsys):
    out = lake["root"] / "tiger.json"
    settings = [
        "--set", "evaluate.models=[tiger]",
        "--set", "evaluate.representations=[sid,sid_codes,id]",
        "--set", "evaluate.tiger_epochs=1",
        "--set", "evaluate.tiger_dim=16",
    ]  # fmt: skip
    argv = ["evaluate", *lake["base"], "--interactions", lake["interactions"], *settings]
    assert main([*argv, "--no-record", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text()).values()
    assert set(result["results"]["tiger"]) == {"sid", "sid_codes"}  # it decodes SIDs only
    figures = result["results"]["tiger"]["sid"]["all"]["hr@10"]
    assert len(figures["seeds"]) == 1 and 0 <= figures["mean"] <= 1
    assert "tiger" in capsys.readouterr().out
