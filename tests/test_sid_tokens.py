"""The SID tokenizations ``enrich evaluate`` compares (sid_codes, sid = codes + prefix n-grams,
sid_pieces), SentencePiece sized by an embedding-table budget, and the leakage-free training
log of the evaluation split."""

import numpy as np
import pyarrow as pa
import pytest

from core.config import ConfigError, EvaluateConfig, SemanticIdConfig, load_config
from core.errors import UsageError
from evaluation.data import (
    ItemFeatures,
    sid_code_tokens,
    sid_ngram_tokens,
    sid_piece_tokens,
)
from evaluation.harness import item_inputs
from evaluation.split import leave_last_out, training_log
from pipelines.evaluation import check_sid_pieces, sid_tokens_by_representation
from transforms.semantic_ids.features import SidPieces, train_sentencepiece


def test_codes_give_one_token_per_level_and_ngrams_add_the_longer_prefixes():
    assert sid_code_tokens([12, 201, 33]) == ["L0:12", "L1:201", "L2:33"]
    assert sid_ngram_tokens([12, 201, 33], None) == [
        "L0:12",
        "L1:201",
        "L2:33",
        "P:12_201",
        "P:12_201_33",
    ]
    assert sid_code_tokens(None) == [] and sid_ngram_tokens([], None) == []


def test_pieces_are_tagged_with_the_level_they_start_at():
    assert sid_piece_tokens([12, 201, 33], ["12_201", "33"]) == ["L0:12_201", "L2:33"]
    # the same code at two levels stays two tokens, though the stored pieces read alike
    assert sid_piece_tokens([5, 5, 5], ["5", "5", "5"]) == ["L0:5", "L1:5", "L2:5"]


def test_a_piece_after_a_dropped_unknown_code_keeps_its_level():
    assert sid_piece_tokens([4, 9, 7], ["4", "7"]) == ["L0:4", "L2:7"]
    assert sid_piece_tokens([4, 9, 7], ["8"]) == ["L?:8"]
    assert sid_piece_tokens([4, 9, 7], None) == []


def test_real_sentencepiece_pieces_cover_each_items_codes_level_by_level():
    rng = np.random.default_rng(0)
    prefixes = rng.integers(0, 8, size=(20, 2))
    codes = [[*prefixes[i % 20], int(rng.integers(0, 8))] for i in range(400)]
    model = train_sentencepiece(codes, codebook_size=8, vocab_size=32)
    pieces = SidPieces(model, 8)
    merged = 0
    for item in codes[:100]:
        tokens = sid_piece_tokens(item, pieces.pieces(item))
        rebuilt = [code for token in tokens for code in token.split(":")[1].split("_")]
        assert rebuilt == [str(c) for c in item] and tokens[0].startswith("L0:")
        merged += len(tokens) < 3
    assert merged > 50  # frequent prefixes became one piece


def test_each_sid_representation_has_its_own_tokens_per_item():
    rows = [
        {"item_id": "a", "codes": [1, 2], "prefix_ngrams": ["1", "1_2"], "sid_pieces": ["1_2"]},
        {"item_id": "b", "codes": [1, 3], "prefix_ngrams": ["1", "1_3"], "sid_pieces": None},
    ]
    tokens = sid_tokens_by_representation(rows)
    assert tokens["sid_codes"] == {"a": ["L0:1", "L1:2"], "b": ["L0:1", "L1:3"]}
    assert tokens["sid"]["a"] == ["L0:1", "L1:2", "P:1_2"]
    assert tokens["sid_pieces"] == {"a": ["L0:1_2"], "b": []}


def test_item_inputs_share_a_token_only_where_items_share_it():
    interactions = pa.table({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]})
    split = leave_last_out(interactions, {"a", "b", "c"}, 0.0, 0.8, 0)
    features = ItemFeatures(
        sid_tokens={
            "sid_codes": {"a": ["L0:1", "L1:2"], "b": ["L0:1", "L1:3"]},
            "sid_pieces": {"a": ["L0:1_2"], "b": ["L0:1", "L1:3"]},
        }
    )
    codes = item_inputs("sid_codes", split, features, {}, 0)
    pieces = item_inputs("sid_pieces", split, features, {}, 0)
    assert codes.tokens == [[], [0, 1], [0, 2], []] and codes.vocab == 3  # c: no tokens
    assert pieces.tokens == [[], [0], [1, 2], []] and not pieces.use_id


def test_sid_pieces_on_a_lake_without_pieces_fails_fast():
    config = EvaluateConfig(representations=["sid_codes", "sid_pieces"])
    features = ItemFeatures(sid_tokens={"sid_pieces": {"a": [], "b": []}})
    with pytest.raises(UsageError, match="sentencepiece_vocab .or sentencepiece_budget. > 0"):
        check_sid_pieces(config, features)
    check_sid_pieces(EvaluateConfig(representations=["sid_codes"]), features)


def test_a_budget_chooses_the_pieces_left_after_the_single_codes():
    config = SemanticIdConfig(levels=3, codebook_size=32, sentencepiece_budget=1120)
    assert config.single_code_rows == 96 and config.merged_pieces == 1024
    assert SemanticIdConfig().merged_pieces == 256  # the default is unchanged
    assert SemanticIdConfig(sentencepiece_vocab=0).merged_pieces == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["semantic_ids.sentencepiece_budget=768"], "leaves no room for merged pieces"),
        (
            ["semantic_ids.sentencepiece_budget=2000", "semantic_ids.sentencepiece_vocab=64"],
            "not both",
        ),
        (["semantic_ids.sentencepiece_budget=-1"], "sentencepiece_budget"),
    ],
)
def test_a_bad_budget_fails_fast_with_what_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_budget_sized_codebook_learns_at_most_that_many_pieces(tmp_path):
    from pipelines.sids import fit_codebook_on
    from tests.sid_lake import clustered_embeddings

    config = SemanticIdConfig(
        levels=2, codebook_size=8, kmeans_redo=1, sentencepiece_budget=16 + 24
    )
    codebook = fit_codebook_on(clustered_embeddings(n=400, dim=16), config, "enc@1")
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_proto=codebook.sentencepiece_model).get_piece_size()
    assert 16 < size <= 16 + 24 + 1  # single codes + at most 24 merges (+ <unk>)


def test_the_training_log_is_each_users_warm_history_before_the_held_out_item():
    rng = np.random.default_rng(0)
    rows = [(f"u{u:02d}", f"i{rng.integers(0, 40)}", t) for u in range(30) for t in range(8)]
    users, items, times = zip(*rows, strict=True)
    log = pa.table({"user_id": list(users), "item_id": list(items), "timestamp": list(times)})
    split = leave_last_out(log, set(), cold_fraction=0.2, head_share=0.8, seed=0)
    cold = {split.item_ids[i - 1] for i in np.flatnonzero(split.cold)}
    train = training_log(split)
    got = {}
    pairs = zip(train["user_id"].to_pylist(), train["item_id"].to_pylist(), strict=True)
    for user, item in pairs:
        got.setdefault(user, []).append(item)
    for position, user in enumerate(sorted(set(users))):
        sequence = [item for u, item, _ in rows if u == user]  # rows are in time order
        expected = [item for item in sequence[:-1] if item not in cold]
        assert got.get(f"user-{position}", []) == expected
    assert cold and not cold & set(train["item_id"].to_pylist())
