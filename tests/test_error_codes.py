"""Error codes as a contract: one documented list (core/errors.py) that the docs' error-code
page matches, every code produced by some path, and no undocumented code can be written."""

import ast
import re
from pathlib import Path

import pytest

from core.config import MediaConfig
from core.errors import ERROR_CODES, INPUT_ERROR_CODES
from transforms.media import check_file
from transforms.stage import StageError, mark_error

ROOT = Path(__file__).resolve().parents[1]
PRODUCERS = ("core", "transforms", "schemas", "evaluation", "pipelines", "jobs")


def test_the_error_codes_page_documents_exactly_the_codes():
    """The page is generated from the registry (docs/_gen/gen_reference.py); this checks the
    committed page, meanings included, so a code added without regenerating fails here."""
    page = (ROOT / "docs" / "reference" / "error-codes.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| \w+ \| (.+) \|$", page, re.M))
    assert set(rows) == set(ERROR_CODES)
    assert all(rows[code] == " ".join(ERROR_CODES[code].split()) for code in ERROR_CODES)
    assert set(ERROR_CODES) >= INPUT_ERROR_CODES


# The calls that write an error code, and which positional argument is the code.
CODE_ARGUMENT = {"StageError": 0, "RowProblem": 0, "mark_error": 2, "checked_code": 0}


def strings_of(node: ast.AST, assigned: dict[str, list[ast.AST]]) -> set[str]:
    """The string constants ``node`` can be: a literal, either branch of ``a if c else b``,
    or what a name is assigned in the same module."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return strings_of(node.body, assigned) | strings_of(node.orelse, assigned)
    if isinstance(node, ast.Name):
        return set().union(*(strings_of(v, assigned) for v in assigned.get(node.id, [])))
    return set()


def produced_codes(source: str) -> set[str]:
    """Every code that a call in ``source`` passes as its error code (``CODE_ARGUMENT``, or a
    ``code=`` keyword)."""
    tree = ast.parse(source)
    assigned: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    codes: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        where = CODE_ARGUMENT.get(name)
        arguments = [node.args[where]] if where is not None and len(node.args) > where else []
        arguments += [k.value for k in node.keywords if k.arg == "code"]
        for argument in arguments:
            codes |= strings_of(argument, assigned)
    return codes


def test_every_code_has_a_producer_and_every_produced_code_is_documented():
    """Read from the calls that write codes, not a grep: a code only named in a comment or a
    table does not count as produced."""
    produced = set().union(
        *(
            produced_codes(path.read_text())
            for folder in PRODUCERS
            for path in (ROOT / folder).rglob("*.py")
        )
    )
    assert sorted(set(ERROR_CODES) - produced) == [], "documented but never produced"
    assert sorted(produced - set(ERROR_CODES)) == [], "produced but not documented"


def test_the_producer_scan_reads_calls_not_mentions():
    source = (
        'CODE = "not_found"\n'
        "raise StageError(CODE, 'm')\n"
        "mark_error(r, 'media', 'a' if x else 'b', 'm')\n"
        "# StageError('in_a_comment')\n"
        "table = {'too_large': 1}\n"
    )
    assert produced_codes(source) == {"not_found", "a", "b"}


def test_an_undocumented_code_is_refused_naming_it():
    with pytest.raises(ValueError, match="unknown error code 'not_fund'"):
        StageError("not_fund", "typo")
    with pytest.raises(ValueError, match="unknown error code 'oops'"):
        mark_error({"item_id": "a"}, "media", "oops", "m")


def test_an_allowed_scheme_no_filesystem_reads_gets_its_own_code():
    config = MediaConfig(allowed_schemes=["file", "nosuchfs"])
    with pytest.raises(StageError) as caught:
        check_file("nosuchfs://bucket/clip.mp4", config)
    assert caught.value.code == "scheme_not_supported"
    assert "nosuchfs" in caught.value.message
