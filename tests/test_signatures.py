"""The public API's signatures, as delta-rs writes them: the lake and the table by position,
every setting by keyword. Callers of the older positional forms keep working for now, with a
DeprecationWarning that names what to pass by keyword."""

import inspect
import typing

import pytest

from core.signatures import positional_deprecated
from pipelines.driver import run_pipeline
from schemas import DeltaStore, read_pandas, read_table
from schemas.spark import read_spark
from schemas.tables import TABLES, TableName
from tests.test_store import error_rows


@pytest.mark.parametrize(
    ("func", "positional"),
    [(read_table, 2), (read_pandas, 2), (read_spark, 3), (run_pipeline, 2)],
)
def test_settings_after_the_first_parameters_are_keyword_only(func, positional):
    kinds = [p.kind for p in inspect.signature(func).parameters.values()]
    assert kinds[:positional] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * positional
    assert set(kinds[positional:]) == {inspect.Parameter.KEYWORD_ONLY}


def test_table_names_are_a_literal_type_of_the_tables_there_are():
    assert set(typing.get_args(TableName)) == set(TABLES)
    hints = typing.get_type_hints(read_table.__wrapped__)
    assert hints["name"] == TableName


def test_a_positional_version_still_reads_with_a_warning_that_says_what_to_write(lake):
    store = DeltaStore(lake)
    store.merge("errors", error_rows("r1", {"a": "x", "b": "y"}))
    store.delete_keys("errors", ["a"])
    with pytest.warns(DeprecationWarning, match=r"pass version by keyword \(version=\.\.\.\)"):
        old = read_table(lake, "errors", 0)
    assert old.num_rows == read_table(lake, "errors", version=0).num_rows == 2
    assert read_table(lake, "errors").num_rows == 1
    with pytest.warns(DeprecationWarning, match="pass version, as_of, columns by keyword"):
        frame = read_pandas(lake, "errors", 0, None, ["item_id"])
    assert sorted(frame["item_id"]) == ["a", "b"]


def test_the_shim_refuses_what_python_would():
    @positional_deprecated
    def read(lake, name, *, version=None, columns=None):
        return lake, name, version, columns

    assert read("l", "t", version=1) == ("l", "t", 1, None)
    with pytest.raises(TypeError, match="multiple values"):
        read("l", "t", 1, version=2)
    with pytest.raises(TypeError, match="at most 4 arguments"):
        read("l", "t", 1, ["c"], "extra")
