"""The docs site as a contract: generated reference pages match the code, the site builds
with strict warnings, every fenced `enrich` command parses with the real parser, and every
shell block says how it is checked (a test that runs it, or why nothing does)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "docs" / "_gen" / "gen_reference.py"
SHELL_LANGUAGES = {"sh", "bash", "console", "shell"}
MARKER = re.compile(r"<!--\s*(tested|untested):\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```([\w-]*)")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "examples").rglob("*.md")),
    ]


def fenced_blocks(path: Path):
    """(language, the marker comment before the fence or None, code lines, first line no.)."""
    lines = path.read_text().split("\n")
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = MARKER.search(before)
        start = index + 1
        index = start
        while index < len(lines) and not lines[index].strip().startswith("```"):
            index += 1
        code = [line[len(indent) :] for line in lines[start:index]]
        yield language, marker, code, start
        index += 1


def enrich_commands(code: list[str]) -> list[str]:
    """Each `enrich ...` command in a block, continuation lines joined, comments dropped."""
    commands, current = [], ""
    for line in code:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        text = current.strip().removeprefix("$ ")
        current = ""
        words = shlex.split(text, comments=True) if text else []
        if words and Path(words[0]).name == "enrich":
            commands.append(words)
        elif "jobs/backfill.py" in words:  # spark-submit ... jobs/backfill.py ARGS
            commands.append(words[words.index("jobs/backfill.py") :])
    return commands


def test_the_generated_reference_pages_are_up_to_date():
    stale = [
        relative
        for relative, text in _generator().pages().items()
        if not (ROOT / "docs" / relative).exists() or (ROOT / "docs" / relative).read_text() != text
    ]
    assert not stale, (
        f"out of date: {stale}; regenerate with `.venv/bin/python docs/_gen/gen_reference.py` "
        "and commit the pages"
    )


def test_every_table_has_a_purpose_on_the_tables_page():
    from schemas.tables import TABLES

    assert set(_generator().TABLE_PURPOSES) == set(TABLES)


def test_the_configuration_page_lists_every_key():
    from core.config import Config

    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    keys = [
        f"{section}.{name}"
        for section, field in Config.model_fields.items()
        for name in field.annotation.model_fields
    ]
    assert len(keys) > 100
    assert [key for key in keys if f"| `{key}` |" not in page] == []


def test_the_cli_page_documents_every_subcommand():
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    subcommands = re.findall(r"^## enrich (\S+)$", page, re.M)
    assert "run" in subcommands and "evaluate" in subcommands
    assert "--engine-arg" in page and "--resume" in page


def test_every_fenced_enrich_and_backfill_command_parses():
    from jobs.backfill import build_parser as backfill_parser

    parsers = {"enrich": build_parser(), "backfill.py": backfill_parser()}
    failures, checked = [], 0
    for path in doc_files():
        for language, _marker, code, line in fenced_blocks(path):
            if language == "text":  # output and --help pages, not commands
                continue
            for words in enrich_commands(code):
                checked += 1
                errors = io.StringIO()
                try:
                    with contextlib.redirect_stderr(errors):
                        parsers[Path(words[0]).name].parse_args(words[1:])
                except SystemExit:
                    message = errors.getvalue().strip().splitlines()[-1:]
                    failures.append(
                        f"{path.relative_to(ROOT)}:{line}: {shlex.join(words)}: {message}"
                    )
    assert checked > 20, "the commands were not found"
    assert not failures, "\n".join(failures)


def test_every_shell_block_is_tested_or_marked_untested_with_a_reason():
    unmarked, missing = [], []
    for path in doc_files():
        for language, marker, _code, line in fenced_blocks(path):
            if language not in SHELL_LANGUAGES:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if marker is None:
                unmarked.append(where)
            elif marker.group(1) == "tested":
                files = re.findall(r"tests/[\w/]+\.py", marker.group(2))
                if not files or not all((ROOT / name).exists() for name in files):
                    missing.append(f"{where}: {marker.group(2)}")
    assert not unmarked, (
        "shell blocks with no <!-- tested: tests/... --> or <!-- untested: reason --> "
        f"comment on the line before: {unmarked}"
    )
    assert not missing, f"tested by a test file that does not exist: {missing}"


def test_the_site_builds_with_strict_warnings(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (the Makefile installs them)")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "guides" / "production" / "index.html").exists()
