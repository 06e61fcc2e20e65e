"""What every entry point shares: the config arguments, offline defaults, and input
confinement, the parser with its help format, and the deprecated spellings of renamed
options. The ``enrich`` subcommands and the SID jobs import these from here (the CLI imports
them to register their subcommands, so they cannot import the CLI)."""

from __future__ import annotations

import argparse
import os


def offline_env() -> None:
    """Never reach for a model hub unless the user explicitly allows it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def add_config_args(parser: argparse.ArgumentParser, reads: str | None = "") -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides. ``reads``: the settings
    the command takes from it, for its help; None: it reads none, but checks the config
    anyway (exit 2 if invalid), so a scheduler can pass one config to every task."""
    if reads is None:
        help = "YAML config: checked (exit 2 if invalid); this command reads no setting from it"
        parser.set_defaults(check_config=True)
    else:
        help = f"YAML config{' (' + reads + ')' if reads else ''}; every key has a default"
    parser.add_argument("--config", metavar="FILE", help=help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set describe.max_new_tokens=64",
    )


def add_lake_command(commands, name: str, help: str, handler) -> argparse.ArgumentParser:
    """A subcommand that works on one lake: ``--lake``, ``--config`` and ``--set``."""
    parser = commands.add_parser(name, help=help)
    add_lake_arg(parser)
    add_config_args(parser)
    parser.set_defaults(handler=handler)
    return parser


def confine_to(config, input_uri: str) -> None:
    """Unless configured, inputs may only come from the ``--input``'s own folder (a local
    folder or a URI prefix), and the ``--input``'s own URI scheme is allowed."""
    from core import storage

    if not config.media.allowed_roots:
        root = storage.normalize(str(input_uri))
        config.media.allowed_roots = [root if storage.is_dir(root) else storage.parent(root)]
    scheme = storage.scheme_of(str(input_uri))
    if scheme not in config.media.allowed_schemes:
        config.media.allowed_schemes = [*config.media.allowed_schemes, scheme]


LAKE_HELP = "directory or URI (s3://, gs://, ...) of the Delta tables"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (unless it has none to show), and the examples
    epilog printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        nothing = action.default is None or action.default is False or action.default in ([], "")
        if nothing or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class EnrichParser(argparse.ArgumentParser):
    """The parser of every entry point: defaults shown in ``--help``, and bad usage as one
    line on stderr with exit 2 (argparse's usage block buries the message in logs)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_deprecated: dict[tuple[str, str], None] = {}  # old spellings used on this command line


def warn_deprecated(old: str, new: str) -> None:
    """Note an old spelling; ``print_deprecations`` warns once for each, after the command's
    own output (the last thing a user reads, and never ahead of an error line)."""
    _deprecated[(old, new)] = None


def deprecations() -> list[str]:
    return [f"enrich: warning: {old} is deprecated; use {new}" for old, new in _deprecated]


def print_deprecations() -> None:
    import sys

    for line in deprecations():
        print(line, file=sys.stderr)
    forget_warnings()


def forget_warnings() -> None:
    _deprecated.clear()


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: warns once, then does what the new option does (with
    ``value``, it stands for ``new value``)."""

    def __init__(self, option_strings, dest, target=None, replacement="", value=None, **_):
        self.target, self.replacement, self.value = target, replacement, value
        takes_value = value is None and target.nargs != 0
        super().__init__(
            option_strings,
            dest,
            nargs=target.nargs if value is None else 0,
            const=target.const,
            type=target.type if takes_value else None,
            choices=target.choices if takes_value else None,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(option_string, self.replacement)
        values = self.value if self.value is not None else values
        self.target(parser, namespace, values, self.target.option_strings[0])


def add_renamed(parser: argparse.ArgumentParser, new: str, old: str, **kwargs) -> argparse.Action:
    """Option ``new`` (``add_argument`` keywords), with ``old`` kept as a deprecated alias
    that still works and warns once. A required option becomes a required group of the two,
    so the old spelling alone satisfies it."""
    if kwargs.pop("required", False):
        parser = parser.add_mutually_exclusive_group(required=True)
    target = parser.add_argument(new, **kwargs)
    parser.add_argument(old, action=_DeprecatedAlias, target=target, replacement=new)
    return target


def add_alias_for_value(parser, old: str, target: argparse.Action, value: str) -> None:
    """``old`` (a flag of its own) kept as a deprecated spelling of ``target value``."""
    parser.add_argument(
        old,
        action=_DeprecatedAlias,
        target=target,
        replacement=f"{target.option_strings[0]} {value}",
        value=value,
    )


def add_json_out(parser: argparse.ArgumentParser, what: str) -> None:
    """The one spelling of a machine-readable output: ``--json FILE`` (``--summary-json``
    is its deprecated alias)."""
    add_renamed(
        parser,
        "--json",
        "--summary-json",
        dest="json_out",
        metavar="FILE",
        help=f"also write {what} to this JSON file",
    )


def add_lake_arg(parser: argparse.ArgumentParser, help: str = LAKE_HELP) -> None:
    parser.add_argument("--lake", required=True, help=help)
