"""The ``enrich`` command line: run, report, inspect, fit-sids, promote-sids, assign-sids,
validate, publish, maintain and evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from core.config import load_config
from core.errors import UsageError, exit_code_of
from core.redact import install_log_redaction, redact_text, shown
from jobs.common import add_config_args, confine_to, offline_env
from pipelines.commit import ErrorRateExceeded, RunFailed
from schemas.store import LakeError, LakeWriteError
from transforms.stage import join_abandoned

logger = logging.getLogger("enrich")
ENGINES = ("local", "beam", "spark")
ABANDONED_WAIT_S = 10.0  # how long an exiting CLI waits for timed-out stage calls to end


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enrich", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="enrich a directory of videos or a manifest")
    run.add_argument(
        "--input", required=True, help="media directory, or .jsonl/.csv/.parquet manifest"
    )
    run.add_argument("--lake", required=True, help="directory (or URI) of the Delta tables")
    add_config_args(run)
    run.add_argument("--engine", default="local", choices=ENGINES)
    run.add_argument("--summary-json", help="also write the run summary to this JSON file")
    run.add_argument(
        "--report", help="write the HTML run report here (default: <lake>/_reports/<run_id>.html)"
    )
    run.add_argument("--no-report", action="store_true", help="do not write the run report")
    run.add_argument(
        "--engine-arg",
        dest="engine_args",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to the engine: Beam pipeline options "
        "(--engine-arg=--runner=DataflowRunner) or Spark (master=..., key=value conf)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="finish an interrupted run (same input and settings): tasks it finished are "
        "committed from their staging, not redone",
    )
    run.add_argument(
        "--refit-sids",
        action="store_true",
        help="allow the run to fit a new codebook (and re-code the lake) when none of the "
        "lake's codebooks fits the config (semantic_ids.refit=allow)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="reprocess every item, even those unchanged since their last run",
    )

    fit = commands.add_parser("fit-sids", help="fit a new Semantic-ID codebook version")
    fit.add_argument("--lake", required=True)
    add_config_args(fit)
    fit.add_argument(
        "--assign",
        action="store_true",
        help="also re-code every embedded item with the new version (implies --promote always "
        "unless --promote is given; with if-no-worse, only when it is promoted)",
    )
    fit.add_argument(
        "--promote",
        choices=("never", "if-no-worse", "always"),
        help="make it the codebook runs pin: never (default; a candidate), if-no-worse than the "
        "current one on the same embeddings, or always",
    )
    fit.add_argument("--summary-json", help="also write the version, metrics and decision here")
    from jobs import encoder_jobs, evaluate, maintain, publish, sid_jobs, validate

    validate.add_parser(commands)
    publish.add_parser(commands)
    maintain.add_parser(commands)
    sid_jobs.add_parsers(commands)
    evaluate.add_parser(commands)
    encoder_jobs.add_parsers(commands)

    report = commands.add_parser("report", help="write the HTML report of a run")
    report.add_argument("--lake", required=True)
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument("--run-id", help="the run to report on (default: the latest)")

    inspect = commands.add_parser("inspect", help="print a table (or list the tables)")
    inspect.add_argument("--lake", required=True)
    inspect.add_argument("--table", help="table name; omit to list tables with versions and rows")
    inspect.add_argument("--version", type=int, help="read this table version (time travel)")
    inspect.add_argument("--limit", type=int, default=20)
    inspect.add_argument(
        "--history",
        action="store_true",
        help="list the table's versions: time, operation, changes, rows",
    )
    inspect.add_argument("--columns", help="comma-separated columns to show")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``enrich`` command; its exit code. With ``argv`` None this is the process's
    entry point (the ``enrich`` script, ``python -m jobs.cli``), so it also makes sure that
    work a stage timeout abandoned cannot change that exit code at interpreter exit."""
    code = _main(argv)
    if argv is None:
        _exit_past_abandoned_work(code)
    return code


def _exit_past_abandoned_work(code: int) -> None:
    """A timed-out stage call still inside native code (torch) when the interpreter finalizes
    aborts the process ("terminate called without an active exception", exit 134), whatever
    the run's outcome. Timed-out generates stop within a token, so wait a little; what still
    runs then is not waited for: the process ends now, with ``code``, its output flushed."""
    running = join_abandoned(ABANDONED_WAIT_S)
    if not running:
        return
    logger.warning("%d timed-out stage call(s) still running at exit: not waited for", running)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()
    for noisy in ("httpx", "urllib3", "faster_whisper", "sentence_transformers", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    offline_env()
    try:
        return _dispatch(args)
    except UsageError as exc:  # bad arguments or config: one line, nothing to debug
        return _fail(exc, exc.exit_code)
    except RunFailed as exc:
        return _fail_with_cause(exc, f"the run failed: {exc}", args.verbose)
    except LakeWriteError as exc:
        return _fail_with_cause(
            exc,
            f"{exc}.\nFree space or fix the permissions, then rerun the same command: items "
            "already committed are skipped.",
            args.verbose,
        )
    except Exception as exc:  # noqa: BLE001 - data and storage errors: exit 1 with the cause
        cause = str(exc) if isinstance(exc, LakeError) else f"{type(exc).__name__}: {exc}"
        hint = "" if args.verbose else "\n(rerun with -v for the traceback)"
        return _fail_with_cause(exc, cause + hint, args.verbose)


def _fail(message: object, code: int) -> int:
    text = shown(redact_text(str(message)), keep="\n")  # its own lines stay
    print(f"enrich: error: {text}", file=sys.stderr)
    return code


def _fail_with_cause(exc: Exception, message: str, debug: bool) -> int:
    """A failure of the data or the storage: its cause, and with ``-v`` the traceback
    (through logging, so secrets are masked); the exit code its class carries (1)."""
    if debug:
        logger.error("traceback of the failure:", exc_info=exc)
    return _fail(message, exit_code_of(exc))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return command_run(args)
    if args.command == "report":
        return command_report(args)
    if args.command == "fit-sids":
        return command_fit_sids(args)
    if hasattr(args, "handler"):  # validate, publish, maintain, promote-sids, assign-sids, ...
        return args.handler(args)
    return command_inspect(args)


def command_run(args: argparse.Namespace) -> int:
    from pipelines.commit import new_run_id
    from pipelines.driver import run_pipeline

    config = load_config(args.config, args.overrides)
    if args.refit_sids:
        config.semantic_ids.refit = "allow"
    confine_to(config, args.input)
    check_writable(args.summary_json, "--summary-json")
    run_id = args.resume or new_run_id()
    logger.info("run %s: %s into %s", run_id, args.input, args.lake)
    started = time.perf_counter()
    try:
        summary = run_pipeline(
            config,
            args.input,
            args.lake,
            run_id,
            input_label=str(args.input),
            engine=args.engine,
            force=args.force,
            engine_args=args.engine_args,
            resume=bool(args.resume),
        )
    except ErrorRateExceeded as exc:  # a finished run that failed: its summary still helps
        _finish(args, exc.summary, time.perf_counter() - started)
        raise
    except Exception:
        _run_report(args, run_id)  # what the failed run committed, if the lake is readable
        raise
    _finish(args, summary, time.perf_counter() - started)
    return 0


def check_writable(path: str | None, flag: str) -> None:
    """Refuse an output file that cannot be written before any work is done (exit 2): a
    finished run must not end in exit 1 for want of a place to put its summary."""
    if not path:
        return
    target = Path(path)
    existed = target.exists()
    try:
        with target.open("a"):  # appends nothing: an existing file is left as it is
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        target.unlink()


def _finish(args: argparse.Namespace, summary, elapsed: float) -> None:
    """The summary (stdout and ``--summary-json``) and the run report."""
    print_summary(summary, args.lake, elapsed)
    if args.summary_json:
        Path(args.summary_json).write_text(
            json.dumps(_summary_dict(summary, elapsed), indent=2, default=str)
        )
    _run_report(args, summary.run_id)


def _run_report(args: argparse.Namespace, run_id: str) -> None:
    if args.no_report:
        return
    from jobs.report import write_run_report

    try:
        path = write_run_report(args.lake, run_id, args.report)
    except (LakeError, OSError) as exc:  # the lake may be what failed: keep the first error
        logger.warning("no run report: %s", exc)
        return
    if path:
        print(f"report: {shown(path)}")


def command_report(args: argparse.Namespace) -> int:
    from jobs.report import write_report

    print(f"report: {shown(write_report(args.lake, args.out, args.run_id))}")
    return 0


def _summary_dict(summary, elapsed: float) -> dict:
    from dataclasses import asdict

    return {
        **asdict(summary),
        "elapsed_s": round(elapsed, 2),
        "seconds_per_item": round(elapsed / max(1, summary.items), 2),
    }


def print_summary(summary, lake: str, elapsed: float) -> None:
    """A short human summary: items, errors, a few descriptions, SID stats."""
    from schemas.store import DeltaStore

    store = DeltaStore(lake)
    print(
        f"\nrun {shown(summary.run_id)} {summary.status}: {summary.items} items, "
        f"{summary.succeeded} "
        f"enriched, {summary.skipped} unchanged (skipped), {summary.failed} errors in "
        f"{elapsed:.1f}s"
    )
    if summary.missing_input:
        print(f"  {summary.missing_input} items of the input folder vanished (missing_input)")
    if summary.known_failures:
        print(f"  {summary.known_failures} of the errors repeat an earlier run's (same file, code)")
    for code, count in sorted(summary.errors_by_code.items()):
        print(f"  error {code}: {count}")
    if store.exists("errors"):
        for row in store.head("errors", 5):
            print(
                f"    {shown(row['item_id'])}: [{row['stage']}/{row['code']}] "
                f"{shown(row['message'][:100])}"
            )
    if store.exists("descriptions"):
        print("descriptions (first 3):")
        for row in store.head("descriptions", 3, ["item_id", "description"]):
            print(f"  {shown(row['item_id'])}: {shown(row['description'][:240])}")
    if summary.codebook_version:
        metrics = summary.codebook_metrics
        print(f"semantic IDs: codebook {summary.codebook_version}")
        print(
            f"  unique fraction before dedup {metrics.get('unique_fraction')} (nearest codes), "
            f"{metrics.get('unique_fraction_assigned')} (assigned), "
            f"max items per ID {metrics.get('max_items_per_id')}, "
            f"per-level usage {metrics.get('per_level_usage')}, "
            f"reconstruction MSE {metrics.get('reconstruction_mse')}"
        )
        sids = store.head("semantic_ids", 6, ["item_id", "sid"])
        print("  " + ", ".join(f"{shown(r['item_id'])}={r['sid']}" for r in sids))
    for note in summary.notes:
        print(f"note: {shown(note)}")
    print(
        f"tables under {shown(lake)}: "
        + ", ".join(f"{k} v{v}" for k, v in summary.table_versions.items() if v is not None)
    )


def command_fit_sids(args: argparse.Namespace) -> int:
    from jobs.sid_jobs import REFUSED_EXIT, print_decision
    from pipelines.commit import new_run_id
    from pipelines.promotion import refit
    from schemas.store import DeltaStore
    from transforms.encode import EncodeStage

    promote = args.promote or ("always" if args.assign else "never")
    if args.assign and promote == "never":
        raise UsageError("--assign re-codes every item with the new codebook: drop --promote never")
    config = load_config(args.config, args.overrides)
    check_writable(args.summary_json, "--summary-json")
    encoder = EncodeStage(config.encode).encoder_id
    codebook, assigned, decision = refit(
        DeltaStore(args.lake),
        config.semantic_ids,
        encoder,
        new_run_id(),
        args.assign,
        promote,
        evaluation=config.evaluate,
    )
    print(
        f"codebook {codebook.version} ({codebook.method}, {codebook.levels}x"
        f"{codebook.codebook_size}, fitted on {codebook.n_fit} items of {encoder})"
    )
    print(json.dumps(codebook.metrics, indent=2))
    if decision is not None:
        print_decision(codebook.version, decision)
    if assigned:
        print(f"re-coded {assigned} items with {codebook.version}")
    elif decision is None:
        print(
            "existing SIDs unchanged; a candidate until promoted: "
            f"enrich promote-sids --version {codebook.version}"
        )
    if args.summary_json:
        summary = {
            "codebook_version": codebook.version,
            "metrics": codebook.metrics,
            "promoted": bool(decision and decision.promoted),
            "promotion_note": decision.note if decision else None,
            "assigned": assigned,
        }
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))
    print(codebook.version)  # the last line alone: for scripts and Airflow XCom
    return REFUSED_EXIT if decision is not None and not decision.promoted else 0


def print_history(store, name: str, limit: int) -> int:
    """Versions newest first: when, which operation, what changed, and the row count after."""
    from datetime import UTC, datetime

    from schemas.tables import TABLES
    from schemas.upsert import history_metrics

    print(
        f"{'version':>7}  {'time (UTC)':<19}  {'operation':<10}  {'inserted':>8}  "
        f"{'updated':>7}  {'deleted':>7}  {'rows':>7}"
    )
    history = store.table(name).history(limit)
    for entry in history:
        version = entry.get("version")
        operation, metrics = history_metrics(entry)
        inserted = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows", 0))
        rows = store.read(name, version=version, columns=[TABLES[name].key]).num_rows
        when = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{version:>7}  {when:<19}  {operation:<10}  {inserted:>8}  "
            f"{metrics.get('num_target_rows_updated', 0):>7}  "
            f"{metrics.get('num_target_rows_deleted', metrics.get('num_deleted_rows', 0)):>7}  "
            f"{rows:>7}"
        )
    return 0


def command_inspect(args: argparse.Namespace) -> int:
    from schemas.store import DeltaStore
    from schemas.tables import TABLES

    store = DeltaStore(args.lake)
    store.require_lake()
    if not args.table:
        for name in TABLES:
            if store.exists(name):
                table = store.table(name)
                rows = store.read(name, columns=[TABLES[name].key]).num_rows
                print(f"{name:<14} version {table.version():>4}  rows {rows}")
            else:
                print(f"{name:<14} (absent)")
        return 0
    if args.table not in TABLES:
        raise UsageError(f"--table {args.table!r}: tables are {', '.join(TABLES)}")
    if not store.exists(args.table):
        raise UsageError(f"table '{args.table}' does not exist under {args.lake}")
    if args.history:
        return print_history(store, args.table, args.limit)
    columns = args.columns.split(",") if args.columns else None
    data = store.read(args.table, version=args.version, columns=columns)
    hidden = [
        c
        for c in ("embedding", "weights_npz", "sentencepiece_model", "config_json")
        if c in data.column_names and not columns
    ]
    frame = data.drop_columns(hidden).slice(0, args.limit).to_pandas()
    import pandas as pd

    frame = frame.map(lambda value: shown(value) if isinstance(value, str) else value)
    with pd.option_context(
        "display.max_columns", None, "display.width", 200, "display.max_colwidth", 60
    ):  # lists and dicts print their strings' repr; the last pass catches anything else
        print(shown(frame.to_string(index=False), keep="\n"))
    version = args.version if args.version is not None else store.version(args.table)
    print(f"({data.num_rows} rows, version {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
