"""``enrich fit-encoder`` (tune the sentence encoder on co-interactions, save a new encoder
version) and ``enrich reencode`` (re-make the lake's embeddings with the configured encoder).

Switching is explicit: fit-encoder writes a model folder and changes no table; a run or a
codebook uses the tuned encoder once ``encode.model`` names its folder; reencode re-encodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parsers(commands) -> None:
    """Register ``enrich fit-encoder`` and ``enrich reencode``."""
    from evaluation.encoder_tuning import TuningSettings
    from jobs.common import add_config_args, add_json_out, add_lake_arg, add_lake_command

    defaults = TuningSettings()
    fit = commands.add_parser(
        "fit-encoder",
        help="fine-tune the sentence encoder on co-interactions; save a new encoder version",
    )
    add_lake_arg(fit, help="the lake whose descriptions are item text")
    fit.add_argument(
        "--interactions",
        help="Parquet/CSV with user_id, item_id, timestamp (default: evaluate.interactions)",
    )
    fit.add_argument("--queries", help="optional Parquet/CSV of (query, item_id) search pairs")
    fit.add_argument(
        "--out",
        metavar="FOLDER",
        help="folder or storage URI (s3://...) for the tuned model "
        "(default: <lake>/_encoders/<version>)",
    )
    fit.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the pairs")
    fit.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="pairs per training step"
    )
    fit.add_argument("--lr", type=float, default=defaults.lr, help="learning rate")
    fit.add_argument(
        "--window",
        type=int,
        default=defaults.window,
        help="items at most this many steps apart in a user's history form a pair",
    )
    fit.add_argument(
        "--max-pairs", type=int, default=defaults.max_pairs, help="training pairs kept at most"
    )
    fit.add_argument("--seed", type=int, default=defaults.seed, help="sampling and init seed")
    add_json_out(fit, "the version and figures")
    add_config_args(fit)
    fit.set_defaults(handler=command_fit_encoder)

    add_lake_command(
        commands,
        "reencode",
        "re-make every embedding of the lake with the configured encoder",
        command_reencode,
    )


def command_fit_encoder(args: argparse.Namespace) -> int:
    from core.config import load_config
    from core.errors import UsageError
    from evaluation.encoder_tuning import TuningSettings
    from pipelines.encoder_versions import fit_encoder
    from schemas.store import DeltaStore

    config = load_config(args.config, args.overrides)
    interactions = args.interactions or config.evaluate.interactions
    if not interactions:
        raise UsageError("give --interactions URI (or set evaluate.interactions in the config)")
    settings = TuningSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        window=args.window,
        max_pairs=args.max_pairs,
        seed=args.seed,
    )
    tuned = fit_encoder(
        DeltaStore(args.lake), config.encode, interactions, args.out, settings, args.queries
    )
    print(f"encoder {tuned.version}: {tuned.examples} training pairs, losses {tuned.epoch_losses}")
    print(f"saved to {tuned.folder}; lineage id {tuned.encoder_id}")
    print(
        "use it: --set encode.model=" + tuned.folder + " (or encode.model in the config), then "
        f"`enrich reencode --lake {args.lake} --set encode.model={tuned.folder}` and "
        "`enrich fit-sids` for its codebook"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(vars(tuned), indent=2))
    print(tuned.folder)  # the last line alone: for scripts and Airflow XCom
    return 0


def command_reencode(args: argparse.Namespace) -> int:
    from core.config import load_config
    from pipelines.commit import new_run_id
    from pipelines.encoder_versions import reencode
    from schemas.store import DeltaStore

    config = load_config(args.config, args.overrides)
    encoded, failed, encoder = reencode(DeltaStore(args.lake), config, new_run_id())
    print(f"re-encoded {encoded} items with {encoder} ({failed} failed, see the errors table)")
    print("their SIDs still come from the previous encoder's codebook: run `enrich fit-sids`")
    return 1 if failed and not encoded else 0
