"""``enrich promote-sids`` and ``enrich assign-sids``: put a codebook into use, and code the
items onto it. The rules live in ``pipelines.promotion``."""

from __future__ import annotations

import argparse
import json

REFUSED_EXIT = 3  # a refusal is a decision, not an error; schedulers may treat it as a skip


def add_parsers(commands) -> None:
    """Register ``enrich promote-sids`` and ``enrich assign-sids``."""
    from jobs.common import (
        add_alias_for_value,
        add_config_args,
        add_lake_arg,
        add_lake_command,
        add_renamed,
    )

    promote = commands.add_parser(
        "promote-sids", help="make a codebook version the one runs pin (recorded)"
    )
    add_lake_arg(promote)
    add_renamed(
        promote,
        "--codebook",
        "--version",
        required=True,
        metavar="VERSION",
        help="the codebook version to promote",
    )
    add_config_args(promote)
    when = promote.add_argument(
        "--promote",
        choices=("if-no-worse", "always"),
        default="always",
        help=f"always, or if-no-worse: only if its health metrics are no worse than the "
        f"current codebook's on the same embeddings, and, with evaluate.interactions set, its "
        f"SIDs serve the evaluation's recommenders no worse (exit {REFUSED_EXIT} if refused); "
        f"the same choice as fit-sids --promote",
    )
    add_alias_for_value(promote, "--if-no-worse", when, "if-no-worse")
    promote.add_argument("--note", default="", help="why; kept in the codebooks row")
    promote.set_defaults(handler=command_promote_sids)

    add_lake_command(
        commands,
        "assign-sids",
        "give every embedded item a SID from the current codebook",
        command_assign_sids,
    )


def _settings(args: argparse.Namespace):
    from core.config import load_config
    from transforms.encode import EncodeStage

    config = load_config(args.config, args.overrides)
    return config, EncodeStage(config.encode).encoder_id


def print_decision(version: str, decision) -> None:
    """The verdict and the figures of both codebooks."""
    print(f"codebook {version}: {decision.note}")
    if decision.candidate:
        print(f"  candidate {json.dumps(decision.candidate)}")
        print(f"  current   {json.dumps(decision.current)} ({decision.current_version})")


def command_promote_sids(args: argparse.Namespace) -> int:
    from pipelines.promotion import promote
    from schemas.store import DeltaStore

    config, encoder = _settings(args)
    decision = promote(
        DeltaStore(args.lake),
        config.semantic_ids,
        encoder,
        args.codebook,
        args.promote,
        args.note,
        evaluation=config.evaluate,
    )
    print_decision(args.codebook, decision)
    if not decision.promoted:
        return REFUSED_EXIT
    print("runs now pin it; `enrich assign-sids` re-codes the existing items onto it")
    return 0


def command_assign_sids(args: argparse.Namespace) -> int:
    from core.config import load_config
    from pipelines.commit import new_run_id
    from pipelines.context import RunContext
    from pipelines.crosswalk import churn_summary
    from pipelines.promotion import code_onto_current
    from pipelines.refit_policy import check_refit_allowed
    from schemas.store import DeltaStore

    context = RunContext(load_config(args.config, args.overrides), DeltaStore(args.lake))
    encoder = context.encoder
    # routine: never a surprise refit
    check_refit_allowed(context.store, context.config.semantic_ids, encoder)
    version, coded = code_onto_current(context, new_run_id())
    if version is None:
        print(f"no codebook and fewer than 2 embeddings from {encoder}: nothing to code")
    else:
        print(f"coded {coded} items with codebook {version}; every embedded item now has one")
        moved = churn_summary(DeltaStore(args.lake), version)
        if moved:
            print(f"churn vs the SIDs they replaced (table sid_crosswalk): {json.dumps(moved)}")
    return 0
