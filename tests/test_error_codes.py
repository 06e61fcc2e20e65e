"""Error codes as a contract: one documented list (core/errors.py) that the docs' error-code
page matches, every code produced by some path, and no undocumented code can be written."""

import re
from pathlib import Path

import pytest

from core.config import MediaConfig
from core.errors import ERROR_CODES, INPUT_ERROR_CODES
from transforms.media import check_file
from transforms.stage import StageError, mark_error

ROOT = Path(__file__).resolve().parents[1]
PRODUCERS = ("transforms", "pipelines", "jobs", "schemas")


def test_the_error_codes_page_documents_exactly_the_codes():
    """The page is generated from the registry (docs/_gen/gen_reference.py); this checks the
    committed page, meanings included, so a code added without regenerating fails here."""
    page = (ROOT / "docs" / "reference" / "error-codes.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| \w+ \| (.+) \|$", page, re.M))
    assert set(rows) == set(ERROR_CODES)
    assert all(rows[code] == " ".join(ERROR_CODES[code].split()) for code in ERROR_CODES)
    assert set(ERROR_CODES) >= INPUT_ERROR_CODES


def test_every_code_has_a_producer():
    sources = "".join(
        path.read_text()
        for folder in PRODUCERS
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "errors.py"
    )
    unused = [code for code in ERROR_CODES if f'"{code}"' not in sources]
    assert not unused, f"documented but never produced: {unused}"


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
