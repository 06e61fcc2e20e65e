"""The command line as a user meets it: every subcommand refuses bad usage with exit 2 and one
line, shows its defaults and examples (which parse), lists in workflow order, and still takes
the old spellings of renamed options, with one warning each."""

import argparse
import shlex
from importlib.metadata import version

import pytest

from jobs import backfill
from jobs.cli import build_parser, main
from jobs.common import deprecations

WORKFLOW_ORDER = [
    "run",
    "inspect",
    "report",
    "validate",
    "publish",
    "fit-sids",
    "promote-sids",
    "assign-sids",
    "evaluate",
    "fit-encoder",
    "reencode",
    "maintain",
]
LAKE = "/nonexistent/lake"

# Refused by the parser: (subcommand, arguments, a fragment of the message).
PARSER_REFUSALS = [
    ("run", ["run", "--lake", LAKE], "--input"),
    ("run", ["run", "--input", "x", "--lake", LAKE, "--engine", "dask"], "invalid choice"),
    ("inspect", ["inspect", "--lake", LAKE, "--table-version", "three"], "invalid int"),
    ("report", ["report", "--lake", LAKE], "--out"),
    ("validate", ["validate", "--lake", LAKE, "--max-error-rate", "high"], "invalid float"),
    ("publish", ["publish", "--lake", LAKE], "--label"),
    ("fit-sids", ["fit-sids", "--lake", LAKE, "--promote", "maybe"], "invalid choice"),
    ("promote-sids", ["promote-sids", "--lake", LAKE], "--codebook"),
    ("assign-sids", ["assign-sids"], "--lake"),
    (
        "evaluate",
        ["evaluate", "--lake", LAKE, "--release", "r", "--versions", "a=1"],
        "not allowed",
    ),
    ("fit-encoder", ["fit-encoder", "--lake", LAKE, "--epochs", "two"], "invalid int"),
    ("reencode", ["reencode", "--lake"], "expected one argument"),
    (None, ["reencode", "--lake", LAKE, "--no-such-flag"], "unrecognized"),
    ("maintain", ["maintain", "--lake", LAKE, "--target-file-mb", "big"], "invalid int"),
    (None, ["no-such-command"], "invalid choice"),
    (None, [], "COMMAND"),
]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_every_subcommand_has_a_bad_usage_case():
    assert {name for name, _, _ in PARSER_REFUSALS if name} == set(subcommands())


@pytest.mark.parametrize(("name", "argv", "fragment"), PARSER_REFUSALS)
def test_bad_arguments_exit_2_with_one_line(name, argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"enrich {name}: error:" if name else "enrich: error:")
    assert fragment in line


# Refused once parsed, before any work (UsageError): the same exit 2, the same one line.
def usage_refusals(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    return [
        (["fit-encoder", "--lake", str(tmp_path)], "--interactions"),
        (["evaluate", "--lake", str(tmp_path)], "--interactions"),
        (["maintain", "--lake", str(tmp_path), "--retention-hours", "1"], "--allow-unsafe"),
        (["validate", "--lake", str(tmp_path), "--config", str(tmp_path / "no.yaml")], "no.yaml"),
        (
            ["run", "--input", str(tmp_path), "--lake", str(tmp_path / "l"), "--require-describer"],
            "describe.backend",
        ),
        (["run", "--input", str(tmp_path), "--lake", str(tmp_path / "l"), "--json", "/"], "--json"),
    ]


def test_bad_usage_found_after_parsing_exits_2_with_one_line(tmp_path, capsys):
    for argv, fragment in usage_refusals(tmp_path):
        assert main(argv) == 2, argv
        line = one_line(capsys.readouterr().err)
        assert line.startswith("enrich: error:") and fragment in line, (argv, line)
    assert not (tmp_path / "l").exists()  # nothing was run


def test_a_command_that_reads_no_setting_still_checks_its_config(tmp_path, capsys):
    # a scheduler passes one config to every task: a typo fails each of them, exit 2
    for command in ("inspect", "report", "validate", "publish"):
        argv = [command, "--lake", str(tmp_path), "--set", "run.no_such_key=1"]
        if command == "report":
            argv += ["--out", str(tmp_path / "r.html")]
        if command == "publish":
            argv += ["--label", "r1"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("enrich: error: invalid config") and "run.no_such_key" in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--start", "2026-11-02", "--end", "2026-11-01"], "before --start"),
        (["--start", "November"], "YYYY-MM-DD"),
        (["--start", "2026-11-01", "--partitions", "2026-11-02"], "not both"),
        ([], "--start"),
        (["--start", "2026-11-01", "--end", "2026-11-02", "--resume", "r1"], "one day"),
        (["--partitions", "2026-11-01", "--engine", "dask"], "invalid choice"),
    ],
)
def test_the_backfill_job_refuses_bad_usage_as_enrich_run_does(argv, fragment, tmp_path, capsys):
    base = ["--manifests", str(tmp_path), "--lake", str(tmp_path / "lake")]
    try:
        code = backfill.main([*base, *argv])
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    assert code == 2
    assert fragment in one_line(capsys.readouterr().err)
    assert not (tmp_path / "lake").exists()


def test_version_names_the_package_and_the_tool_version_runs_record(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"video-enrich) {version('video-enrich')}" in out
    assert f"tool_version={version('video-enrich')}" in out


def test_subcommands_are_listed_in_workflow_order():
    assert list(subcommands()) == WORKFLOW_ORDER
    help_text = build_parser().format_help()
    positions = [help_text.index(f"\n    {name}") for name in WORKFLOW_ORDER]
    assert positions == sorted(positions)


def shown_defaults(parser: argparse.ArgumentParser) -> list[tuple[str, object]]:
    """(option, default) of every visible option with a default worth showing."""
    return [
        (action.option_strings[0], action.default)
        for action in parser._actions
        if action.option_strings
        and action.help is not argparse.SUPPRESS
        and action.default not in (None, False, [], "", argparse.SUPPRESS)
    ]


@pytest.mark.parametrize("name", WORKFLOW_ORDER)
def test_help_shows_every_default(name):
    parser = subcommands()[name]
    text = " ".join(parser.format_help().split())
    defaults = shown_defaults(parser)
    missing = [opt for opt, default in defaults if f"(default: {default})" not in text]
    assert not missing, f"enrich {name} --help hides the defaults of {missing}"


def test_a_command_with_numeric_defaults_shows_them():
    text = " ".join(subcommands()["maintain"].format_help().split())
    assert "(default: 168)" in text and "(default: 128)" in text


def example_commands(epilog: str) -> list[list[str]]:
    """The ``enrich ...`` commands of an examples epilog, continuation lines joined."""
    joined = epilog.replace("\\\n", " ")
    return [
        shlex.split(line, comments=True)[1:]
        for line in joined.splitlines()
        if line.strip().startswith("enrich ")
    ]


@pytest.mark.parametrize("name", WORKFLOW_ORDER)
def test_every_subcommand_has_examples_that_parse(name, capsys):
    epilog = subcommands()[name].epilog or ""
    assert epilog.startswith("examples:")
    commands = example_commands(epilog)
    assert commands and all(argv[0] == name for argv in commands if argv[0] != "reencode")
    for argv in commands:
        build_parser().parse_args(argv)
        assert deprecations() == [], argv  # examples use the current spellings


def test_backfill_examples_parse():
    joined = backfill.EXAMPLES.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if "backfill.py" in line]
    assert lines
    for line in lines:
        argv = shlex.split(line)
        backfill.build_parser().parse_args(argv[argv.index("jobs/backfill.py") + 1 :])


@pytest.mark.parametrize(
    ("argv", "dest", "value", "new"),
    [
        (["run", "--input", "i", "--lake", "l", "--summary-json", "s.json"], "json_out", "s.json",
         "--json"),
        (["fit-sids", "--lake", "l", "--summary-json", "s.json"], "json_out", "s.json", "--json"),
        (["fit-encoder", "--lake", "l", "--summary-json", "s.json"], "json_out", "s.json",
         "--json"),
        (["inspect", "--lake", "l", "--version", "3"], "table_version", 3, "--table-version"),
        (["promote-sids", "--lake", "l", "--version", "v1"], "codebook", "v1", "--codebook"),
        (["promote-sids", "--lake", "l", "--codebook", "v1", "--if-no-worse"], "promote",
         "if-no-worse", "--promote if-no-worse"),
        (["maintain", "--lake", "l", "--force"], "allow_unsafe_retention", True,
         "--allow-unsafe-retention"),
    ],
)  # fmt: skip
def test_old_spellings_still_work_and_warn_once(argv, dest, value, new, capsys):
    old = next(arg for arg in argv if arg in ("--summary-json", "--version", "--if-no-worse",
                                               "--force"))  # fmt: skip
    args = build_parser().parse_args([*argv, *argv[argv.index(old) :]])  # given twice
    assert getattr(args, dest) == value
    assert deprecations() == [f"enrich: warning: {old} is deprecated; use {new}"]


def test_an_old_spelling_warns_once_after_the_commands_output(tmp_path, capsys):
    argv = ["maintain", "--lake", str(tmp_path), "--force", "--retention-hours", "-1", "--force"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "enrich: error: --retention-hours -1: must be 0 or more",
        "enrich: warning: --force is deprecated; use --allow-unsafe-retention",
    ]
    assert deprecations() == []  # printed, and forgotten


def test_the_new_spellings_do_not_warn(capsys):
    build_parser().parse_args(["promote-sids", "--lake", "l", "--codebook", "v1"])
    build_parser().parse_args(["maintain", "--lake", "l", "--allow-unsafe-retention"])
    assert deprecations() == []


def test_an_old_and_a_new_spelling_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["promote-sids", "--lake", "l", "--codebook", "v1", "--version", "v2"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
