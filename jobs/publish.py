"""``enrich publish``: record a release, the table versions downstream readers should use.

A release is one row of the ``releases`` table, keyed by its label (e.g. the day,
``2026-11-01``): the version of every table that ``enrich validate`` checked for the run (its
latest validation, which must have passed; commits that landed since are not in the release),
the run and validation it follows, the codebook versions its SIDs come from, and row counts.
Publishing the same label again replaces the row, so a rerun is safe. Readers pin versions
with ``schemas.releases.release_versions``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

from core.errors import UsageError

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def add_parser(commands) -> None:
    """Register ``enrich publish``."""
    from jobs.common import add_config_args, add_lake_arg
    from jobs.validate import add_run_selection

    parser = commands.add_parser("publish", help="record the table versions of a release")
    add_lake_arg(parser)
    add_config_args(parser, reads=None)
    parser.add_argument("--label", required=True, help="release id, e.g. the day 2026-11-01")
    add_run_selection(parser)
    parser.add_argument("--note", default="", help="free text kept with the release")
    parser.set_defaults(handler=command_publish)


def release_row(
    store, label: str, run: dict[str, Any], validation: dict[str, Any], note: str
) -> dict[str, Any]:
    """The ``releases`` row pinning the table versions ``validation`` checked."""
    from schemas.rows import release_row as build_release_row
    from schemas.rows import utc_now

    versions = json.loads(validation["table_versions_json"])
    counts = {
        name: store.read(name, version=v, columns=[_key(name)]).num_rows
        for name, v in versions.items()
        if v is not None
    }
    codebooks: Counter = Counter()
    if versions["semantic_ids"] is not None:
        sids = store.read(
            "semantic_ids", version=versions["semantic_ids"], columns=["codebook_version"]
        )
        codebooks.update(sids.column("codebook_version").to_pylist())
    return build_release_row(
        release_id=label,
        table_versions=versions,
        codebook_versions=dict(codebooks),
        row_counts=counts,
        note=note,
        run_id=run["run_id"],
        validation_id=validation["validation_id"],
        now=utc_now(),
    )


def passed_validation(store, run_id: str) -> dict[str, Any]:
    """The run's latest validation, which must have passed: a release pins what was checked."""
    from jobs.validate import latest_validation

    validation = latest_validation(store, run_id)
    if validation is None:
        raise UsageError(
            f"run {run_id} has not been validated: run `enrich validate --run-id {run_id}` "
            "first; a release pins the table versions validate checked"
        )
    if not validation["passed"]:
        raise UsageError(
            f"the latest validation of run {run_id} ({validation['validation_id']}) failed: "
            "fix the run or the thresholds and validate it again before publishing"
        )
    return validation


def _key(name: str) -> str:
    from schemas.tables import TABLES

    return TABLES[name].key


def command_publish(args: argparse.Namespace) -> int:
    from jobs.validate import select_run
    from schemas.store import DeltaStore

    if not LABEL.match(args.label):
        raise UsageError(
            f"--label {args.label!r}: use letters, digits and . _ : - (e.g. 2026-11-01)"
        )
    store = DeltaStore(args.lake)
    run = select_run(store, args.run_id, args.for_input)
    if run["status"] != "succeeded":
        raise UsageError(f"run {run['run_id']} has status {run['status']}; publish a good run")
    row = release_row(store, args.label, run, passed_validation(store, run["run_id"]), args.note)
    store.merge("releases", [row])
    print(f"release {args.label} (run {run['run_id']}, validation {row['validation_id']}):")
    print(f"  table versions {row['table_versions_json']}")
    print(f"  rows {row['row_counts_json']}")
    print(f"  codebooks {row['codebook_versions_json']}")
    return 0
