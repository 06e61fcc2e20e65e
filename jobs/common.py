"""What every entry point shares: the config arguments, offline defaults, and input
confinement. The ``enrich`` subcommands, the backfill job and the SID jobs import these from
here, so no job module imports the CLI."""

from __future__ import annotations

import argparse
import os


def offline_env() -> None:
    """Never reach for a model hub unless the user explicitly allows it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides."""
    parser.add_argument("--config", help="YAML config; every key has a default")
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
    parser.add_argument("--lake", required=True)
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
