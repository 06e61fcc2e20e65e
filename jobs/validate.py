"""``enrich validate``: the quality gate between a run and its publication.

It checks one run (the latest by default) and the lake after it, prints every figure, and
exits 1 when a check fails, so a scheduler stops before ``enrich publish``:

- the run finished (status ``succeeded``);
- error rate = failed / (succeeded + failed) is at most ``--max-error-rate`` (default 0.1;
  ``core.errors.error_rate``, known failures counted: a release lacks them too);
- the run has at least ``--min-rows`` items with rows (enriched + unchanged);
- the descriptions and embeddings tables hold exactly the rows the run reports enriching;
- every embedded item has a Semantic ID (``--min-sid-coverage``);
- the SIDs of the run's codebook are spread out: unique fraction of codes before dedup is at
  least ``--min-unique-fraction``;
- no features are served for input files that vanished (errors code ``missing_input`` on an
  item that still has a description; ``--max-stale-features``, default 0).

The checks read one snapshot of the lake: each table at its version when validate starts. The
verdict and those versions go into the ``validations`` table, and ``enrich publish`` pins
exactly them, whatever lands in between.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import VALIDATE_MAX_ERROR_RATE, UsageError, error_rate

FAILED_EXIT = 1
# The tables a release pins: the versions validate checked.
PINNED_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks", "errors", "runs")


@dataclass
class Check:
    name: str
    value: Any
    limit: str
    ok: bool


def add_parser(commands) -> None:
    """Register ``enrich validate``."""
    from jobs.common import add_config_args, add_json_out, add_lake_arg

    parser = commands.add_parser("validate", help="check a run before publishing it")
    add_lake_arg(parser)
    add_config_args(parser, reads=None)
    add_run_selection(parser)
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=VALIDATE_MAX_ERROR_RATE,
        help="failed / processed, known failures counted",
    )
    parser.add_argument("--min-rows", type=int, default=1, help="items of the run with rows")
    parser.add_argument(
        "--min-sid-coverage", type=float, default=1.0, help="embedded items with a SID"
    )
    parser.add_argument(
        "--min-unique-fraction",
        type=float,
        default=0.05,
        help="unique fraction of SID codes before dedup",
    )
    parser.add_argument(
        "--max-stale-features",
        type=int,
        default=0,
        help="items still described although their input file vanished",
    )
    add_json_out(parser, "the verdict, the checks and the versions checked")
    parser.set_defaults(handler=command_validate)


def add_run_selection(parser: argparse.ArgumentParser) -> None:
    """``--run-id ID|latest`` and ``--for-input TEXT`` (shared with ``enrich publish``)."""
    parser.add_argument("--run-id", default="latest", help="a run id, or 'latest'")
    parser.add_argument(
        "--for-input",
        help="only runs whose input contains this text, e.g. dt=2026-11-01",
    )


def select_run(store, run_id: str = "latest", for_input: str | None = None) -> dict[str, Any]:
    """The ``runs`` row asked for; a clear error when there is none."""
    if not store.exists("runs"):
        raise UsageError(f"no runs table under {store.lake}: nothing has run there yet")
    runs = store.read("runs").to_pylist()
    if for_input:
        runs = [r for r in runs if for_input in (r["input"] or "")]
    if run_id != "latest":
        runs = [r for r in runs if r["run_id"] == run_id]
    if not runs:
        scope = f" with input containing '{for_input}'" if for_input else ""
        raise UsageError(f"no run '{run_id}'{scope} in the runs table of {store.lake}")
    return max(runs, key=lambda r: r["started_at"])


def rows_of_run(store, name: str, run: dict[str, Any]) -> int:
    """Rows of ``name`` tagged with the run, at the version the run recorded."""
    import pyarrow.compute as pc

    version = json.loads(run["table_versions_json"] or "{}").get(name)
    if version is None:
        return 0
    table = store.read(name, version=version, columns=["run_id"])
    return int(pc.sum(pc.equal(table.column("run_id"), run["run_id"])).as_py() or 0)


def snapshot(store) -> dict[str, int | None]:
    """The version of each pinned table now (None: absent)."""
    return {name: store.version(name) for name in PINNED_TABLES}


def read_at(store, name: str, versions: dict[str, int | None], **kwargs: Any):
    """Table ``name`` at its snapshot version (empty if it was absent then)."""
    from schemas.tables import TABLES

    if versions.get(name) is None:
        empty = TABLES[name].schema.empty_table()
        return empty.select(kwargs["columns"]) if kwargs.get("columns") else empty
    return store.read(name, version=versions[name], **kwargs)


def sid_figures(store, codebook_version: str | None, at: dict[str, int | None]) -> dict:
    """SID coverage of embedded items, and the unique fraction of codes of one codebook (the
    given one, else the one most SIDs come from)."""
    embedded = set(read_at(store, "embeddings", at, columns=["item_id"])["item_id"].to_pylist())
    sids = read_at(store, "semantic_ids", at, columns=["item_id", "codes", "codebook_version"])
    rows = sids.to_pylist()
    coded = {r["item_id"] for r in rows}
    versions = Counter(r["codebook_version"] for r in rows)
    version = codebook_version or (versions.most_common(1)[0][0] if versions else None)
    codes = [tuple(r["codes"]) for r in rows if r["codebook_version"] == version]
    return {
        "sid_coverage": round(len(embedded & coded) / len(embedded), 4) if embedded else 1.0,
        "codebook_version": version,
        "unique_fraction": round(len(set(codes)) / len(codes), 4) if codes else None,
        "codebook_versions": dict(versions),
    }


def stale_features(store, versions: dict[str, int | None]) -> int:
    """Items reported ``missing_input`` (their file vanished) that still have a description."""
    import pyarrow.compute as pc

    from pipelines.missing import MISSING_CODE

    errors = read_at(store, "errors", versions, columns=["item_id", "code"])
    gone = errors.filter(pc.equal(errors.column("code"), MISSING_CODE)).column("item_id")
    if not len(gone):
        return 0
    described = read_at(store, "descriptions", versions, columns=["item_id"], keys=gone.to_pylist())
    return described.num_rows


def run_checks(
    store, run: dict[str, Any], args: argparse.Namespace, versions: dict[str, int | None]
) -> list[Check]:
    """The checks of ``run`` against the lake at ``versions``."""
    rate = round(error_rate(run["succeeded"], run["failed"]), 4)  # known failures count
    sids = sid_figures(store, run["codebook_version"], versions)
    written = {name: rows_of_run(store, name, run) for name in ("descriptions", "embeddings")}
    unique = sids["unique_fraction"]
    stale = stale_features(store, versions)
    return [
        Check("status", run["status"], "succeeded", run["status"] == "succeeded"),
        Check("error_rate", rate, f"<= {args.max_error_rate}", rate <= args.max_error_rate),
        Check(
            "rows (enriched + unchanged)",
            run["succeeded"] + run["skipped"],
            f">= {args.min_rows}",
            run["succeeded"] + run["skipped"] >= args.min_rows,
        ),
        *(
            Check(
                f"{name} rows of the run",
                count,
                f"== {run['succeeded']}",
                count == run["succeeded"],
            )
            for name, count in written.items()
        ),
        Check(
            "sid_coverage",
            sids["sid_coverage"],
            f">= {args.min_sid_coverage}",
            sids["sid_coverage"] >= args.min_sid_coverage,
        ),
        Check(
            f"unique_fraction ({sids['codebook_version']})",
            unique,
            f">= {args.min_unique_fraction}",
            unique is not None and unique >= args.min_unique_fraction,
        ),
        Check(
            "stale features (input vanished)",
            stale,
            f"<= {args.max_stale_features}",
            stale <= args.max_stale_features,
        ),
    ]


def command_validate(args: argparse.Namespace) -> int:
    from schemas.store import DeltaStore

    store = DeltaStore(args.lake)
    run = select_run(store, args.run_id, args.for_input)
    versions = snapshot(store)
    checks = run_checks(store, run, args, versions)
    print(
        f"run {run['run_id']} ({run['engine']}, input {run['input']}): {run['items']} items, "
        f"{run['succeeded']} enriched, {run['skipped']} unchanged, {run['failed']} errors"
    )
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"  {mark} {check.name:<34} {check.value!s:<12} (want {check.limit})")
    failed = [c.name for c in checks if not c.ok]
    validation_id = record_validation(store, run, versions, checks)
    if args.json_out:
        write_verdict(args.json_out, run, validation_id, versions, checks)
    if failed:
        print(f"validate: FAILED ({', '.join(failed)}); fix the run or the thresholds first")
        return FAILED_EXIT
    print(f"validate: ok (validation {validation_id}; publish pins {json.dumps(versions)})")
    return 0


def write_verdict(
    path: str, run: dict[str, Any], validation_id: str, versions: dict, checks: list[Check]
) -> None:
    """The verdict as JSON, for schedulers: the same figures as the printed checks."""
    from pathlib import Path

    verdict = {
        "run_id": run["run_id"],
        "validation_id": validation_id,
        "passed": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
        "table_versions": versions,
    }
    Path(path).write_text(json.dumps(verdict, indent=2, default=str))


def record_validation(
    store, run: dict[str, Any], versions: dict[str, int | None], checks: list[Check]
) -> str:
    """The ``validations`` row of this verdict; returns its id."""
    from pipelines.commit import new_run_id
    from schemas.rows import utc_now, validation_row

    validation_id = new_run_id()
    row = validation_row(
        validation_id=validation_id,
        run_id=run["run_id"],
        passed=all(c.ok for c in checks),
        table_versions=versions,
        checks_json=json.dumps([asdict(c) for c in checks], default=str),
        now=utc_now(),
    )
    store.merge("validations", [row])
    return validation_id


def latest_validation(store, run_id: str) -> dict[str, Any] | None:
    """The newest ``validations`` row of run ``run_id`` (None: never validated)."""
    import pyarrow.compute as pc

    table = store.read_or_empty("validations")
    rows = table.filter(pc.equal(table.column("run_id"), run_id)).to_pylist()
    return max(rows, key=lambda r: (r["updated_at"], r["validation_id"]), default=None)
