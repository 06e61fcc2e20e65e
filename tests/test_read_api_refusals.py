"""Issue 43 item 10: the read API refuses what it cannot answer as asked, each case with its
own accurate message: ``version`` with ``as_of``, a version that does not exist, a negative
one, a bool or other non-integer one, a lake or table that does not exist, a column the
table never had, columns given as a string. These are usage errors (exit 2 from the CLI),
and an echoed value is cut short, so no message is longer than a few lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main
from schemas.spark import read_spark
from schemas.store import BadTableRequest, DeltaStore, NotALake, read_table
from schemas.tables import DESCRIPTIONS
from tests.test_maintain import typed

MAX_MESSAGE = 1500  # characters: the table's columns and a cut echo fit, a 1 MB name does not
HUGE = "c" * 1_000_000


@pytest.fixture(scope="module")
def versioned_lake(tmp_path_factory):
    """A lake whose descriptions table has versions 0 and 1."""
    lake = tmp_path_factory.mktemp("read") / "lake"
    store = DeltaStore(lake)
    for version, ids in enumerate((["a", "b"], ["c"])):
        now = datetime.now(UTC)
        store.merge(
            "descriptions",
            typed(
                DESCRIPTIONS,
                len(ids),
                item_id=pa.array(ids),
                description=pa.array([f"v{version}"] * len(ids)),
                run_id=pa.array(["r"] * len(ids)),
                updated_at=pa.array([now] * len(ids), DESCRIPTIONS.field("updated_at").type),
            ),
        )
    return lake


FUTURE = datetime.now(UTC) + timedelta(days=365)
# case -> (read_table keywords, error class, words the message must hold)
REFUSED = {
    "version_and_future_as_of": (dict(version=0, as_of=FUTURE), BadTableRequest, "give one"),
    "version_and_past_as_of": (
        dict(version=1, as_of=datetime(2020, 1, 1, tzinfo=UTC)),
        BadTableRequest,
        "give one",
    ),
    "version_past_the_latest": (dict(version=99), BadTableRequest, "versions 0 to 1"),
    "version_just_past": (dict(version=2), BadTableRequest, "version 2 does not exist"),
    "negative_version": (dict(version=-1), BadTableRequest, "count up from 0"),
    "bool_version": (dict(version=True), BadTableRequest, "not a bool"),
    "false_version": (dict(version=False), BadTableRequest, "not a bool"),
    "float_version": (dict(version=1.0), BadTableRequest, "whole number"),
    "string_version": (dict(version="1"), BadTableRequest, "whole number"),
    "string_as_of": (dict(as_of="2026-11-01"), BadTableRequest, "give a datetime"),
    "unknown_column": (dict(columns=["item_id", "nope"]), BadTableRequest, "no column 'nope'"),
    "huge_column": (dict(columns=[HUGE]), BadTableRequest, "characters in all"),
    "columns_as_a_string": (dict(columns="item_id"), BadTableRequest, "a list of column names"),
    "columns_not_strings": (dict(columns=[1, 2]), BadTableRequest, "a list of column names"),
}


@pytest.mark.parametrize("case", REFUSED, ids=[f"item10-{k}" for k in REFUSED])
def test_each_bad_read_gets_its_own_message(case, versioned_lake):
    kwargs, error, words = REFUSED[case]
    with pytest.raises(error) as raised:
        read_table(versioned_lake, "descriptions", **kwargs)
    message = str(raised.value)
    assert words in message and len(message) < MAX_MESSAGE, message
    assert "Restore its _delta_log" not in message
    if "column" in case:
        assert "item_id, uri, title" in message  # names the table's columns


@pytest.mark.parametrize("case", REFUSED, ids=[f"item10-spark-{k}" for k in REFUSED])
def test_read_spark_refuses_the_same_before_spark_is_asked(case, versioned_lake):
    kwargs, error, words = REFUSED[case]
    with pytest.raises(error, match=re.escape(words)):
        read_spark(None, versioned_lake, "descriptions", **kwargs)  # no session: never reached


def test_a_missing_lake_a_missing_table_and_an_unknown_table_say_so(versioned_lake, tmp_path):
    with pytest.raises(NotALake, match="there is no lake at"):
        read_table(tmp_path / "nowhere", "descriptions")
    with pytest.raises(BadTableRequest, match="'runs' under .* does not exist.*descriptions"):
        read_table(versioned_lake, "runs")
    with pytest.raises(BadTableRequest, match="unknown table 'nope'; tables are descriptions"):
        read_table(versioned_lake, "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadTableRequest, match="is the lake path right"):
        read_table(empty, "descriptions")


def test_good_reads_still_read(versioned_lake):
    assert read_table(versioned_lake, "descriptions", version=np.int64(0)).num_rows == 2
    assert read_table(versioned_lake, "descriptions", as_of=FUTURE).num_rows == 3
    assert read_table(versioned_lake, "descriptions", columns=("item_id",)).column_names == [
        "item_id"
    ]


CLI_REFUSED = {
    "version_past_the_latest": (["--table-version", "99"], "versions 0 to 1"),
    "negative_version": (["--table-version", "-1"], "count up from 0"),
    "unknown_column": (["--columns", "item_id,nope"], "no column 'nope'"),
}


@pytest.mark.parametrize("case", CLI_REFUSED, ids=[f"item10-cli-{k}" for k in CLI_REFUSED])
def test_the_cli_exits_2_with_one_line(case, versioned_lake, capsys):
    flags, words = CLI_REFUSED[case]
    assert main(["inspect", "--lake", str(versioned_lake), "--table", "descriptions", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("enrich: error: ") and words in err and len(err.splitlines()) == 1
