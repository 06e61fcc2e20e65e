"""The ``enrich`` command line: enrich videos into Delta tables, look at them, release them,
manage their Semantic IDs, measure the features, and maintain the lake."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from core.config import load_config
from core.errors import Interrupted, UsageError, exit_code_of
from core.redact import install_log_redaction, redact_text, shown
from jobs.common import (
    EnrichParser,
    add_config_args,
    add_json_out,
    add_lake_arg,
    add_renamed,
    confine_to,
    forget_warnings,
    offline_env,
    print_deprecations,
)
from pipelines.commit import ErrorRateExceeded, RunFailed
from schemas.store import LakeError, LakeWriteError
from transforms.runner import join_abandoned

logger = logging.getLogger("enrich")
ENGINES = ("local", "beam", "spark")
ABANDONED_WAIT_S = 10.0  # how long an exiting CLI waits for timed-out stage calls to end


# Workflow order: what `enrich --help` lists, and the order a newcomer meets them.
WORKFLOW = """commands in workflow order:
  enrich:        run
  look:          inspect, report
  release:       validate, publish
  Semantic IDs:  fit-sids, promote-sids, assign-sids
  measure, tune: evaluate, fit-encoder, reencode
  operate:       maintain
`enrich COMMAND --help` shows a command's options, their defaults and examples."""
EXAMPLES = {
    "run": """examples:
  enrich run --input demo_media/manifest.jsonl --lake lake
  enrich run --input s3://bucket/videos/ --lake s3://bucket/lake --config prod.yaml \\
      --engine spark --engine-arg master=spark://head:7077 --require-describer
  enrich run --input manifest.jsonl --lake lake --json run.json \\
      --resume 20261101T000000Z-1a2b3c4d   # finish an interrupted run""",
    "inspect": """examples:
  enrich inspect --lake lake
  enrich inspect --lake lake --table descriptions --columns item_id,description --limit 5
  enrich inspect --lake lake --table semantic_ids --table-version 3
  enrich inspect --lake lake --table runs --history""",
    "report": """examples:
  enrich report --lake lake --out report.html
  enrich report --lake lake --run-id 20261101T000000Z-1a2b3c4d --out day.html""",
    "validate": """examples:
  enrich validate --lake lake
  enrich validate --lake lake --for-input dt=2026-11-01 --max-error-rate 0.05 --json checks.json""",
    "publish": """examples:
  enrich publish --lake lake --label 2026-11-01 --for-input dt=2026-11-01 --note "daily\"""",
    "fit-sids": """examples:
  enrich fit-sids --lake lake --promote never        # a candidate codebook
  enrich fit-sids --lake lake --promote if-no-worse --assign --json refit.json""",
    "promote-sids": """examples:
  enrich promote-sids --lake lake --codebook rq_kmeans-20261101T000000-1a2b3c4d \\
      --promote if-no-worse""",
    "assign-sids": """examples:
  enrich assign-sids --lake lake --config prod.yaml""",
    "evaluate": """examples:
  enrich evaluate --lake lake --interactions interactions.parquet
  enrich evaluate --lake lake --release 2026-11-02 --against-release 2026-11-01 --json eval.json""",
    "fit-encoder": """examples:
  enrich fit-encoder --lake lake --interactions interactions.parquet --epochs 2
  enrich reencode --lake lake --set encode.model=lake/_encoders/<version>""",
    "reencode": """examples:
  enrich reencode --lake lake --set encode.model=lake/_encoders/<version>""",
    "maintain": """examples:
  enrich maintain --lake lake --dry-run
  enrich maintain --lake lake --retention-hours 24 --allow-unsafe-retention""",
}


def version_line() -> str:
    """The package version and the ``tool_version`` that runs record in the runs table."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("video-enrich")
    except PackageNotFoundError:  # run from a checkout that was never installed
        tool_version = "dev"
    return f"enrich (video-enrich) {tool_version}; runs record tool_version={tool_version}"


def build_parser() -> argparse.ArgumentParser:
    forget_warnings()  # a new command line: its old spellings warn once each
    parser = EnrichParser(prog="enrich", description=__doc__, epilog=WORKFLOW)
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print the package version (the tool_version runs record) and exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from jobs import encoder_jobs, evaluate, maintain, publish, sid_jobs, validate

    run = commands.add_parser("run", help="enrich a directory of videos or a manifest")
    run.add_argument(
        "--input", required=True, help="media directory, or .jsonl/.csv/.parquet manifest"
    )
    add_run_options(run, default_engine="local")
    run.set_defaults(handler=command_run)
    add_inspect_parser(commands)
    add_report_parser(commands)
    validate.add_parser(commands)
    publish.add_parser(commands)
    add_fit_sids_parser(commands)
    sid_jobs.add_parsers(commands)
    evaluate.add_parser(commands)
    encoder_jobs.add_parsers(commands)
    maintain.add_parser(commands)
    for name, command in commands.choices.items():
        command.epilog = EXAMPLES.get(name, command.epilog)
    return parser


def add_run_options(parser: argparse.ArgumentParser, default_engine: str) -> None:
    """Everything ``enrich run`` takes but its input: the Spark backfill job takes the same."""
    add_lake_arg(parser)
    add_config_args(parser)
    parser.add_argument("--engine", default=default_engine, choices=ENGINES, help="the engine")
    parser.add_argument(
        "--engine-arg",
        dest="engine_args",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to the engine: Beam pipeline options "
        "(--engine-arg=--runner=DataflowRunner) or Spark (master=..., key=value conf)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="finish an interrupted run (same input and settings): tasks it finished are "
        "committed from their staging, not redone",
    )
    parser.add_argument(
        "--refit-sids",
        action="store_true",
        help="allow the run to fit a new codebook (and re-code the lake) when none of the "
        "lake's codebooks fits the config (semantic_ids.refit=allow)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="reprocess every item, even those unchanged since their last run",
    )
    parser.add_argument(
        "--require-describer",
        action="store_true",
        help="refuse (exit 2) to run the demo describer: the config or a --set must name "
        "describe.backend or describe.model (schedulers pass this)",
    )
    add_json_out(parser, "the run summary")
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write the HTML run report here (default: <lake>/_reports/<run_id>.html)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the run report")


def add_fit_sids_parser(commands) -> None:
    fit = commands.add_parser("fit-sids", help="fit a new Semantic-ID codebook version")
    add_lake_arg(fit)
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
        help="make it the codebook runs pin: never (the default without --assign; a "
        "candidate), if-no-worse than the current one on the same embeddings, or always",
    )
    add_json_out(fit, "the version, metrics and decision")
    fit.set_defaults(handler=command_fit_sids)


def add_report_parser(commands) -> None:
    report = commands.add_parser("report", help="write the HTML report of a run")
    add_lake_arg(report)
    add_config_args(report, reads=None)
    report.add_argument("--out", required=True, metavar="FILE", help="HTML file to write")
    report.add_argument("--run-id", help="the run to report on (default: the latest)")
    report.set_defaults(handler=command_report)


def add_inspect_parser(commands) -> None:
    inspect = commands.add_parser("inspect", help="print a table (or list the tables)")
    add_lake_arg(inspect)
    add_config_args(inspect, reads=None)
    inspect.add_argument("--table", help="table name; omit to list tables with versions and rows")
    add_renamed(
        inspect,
        "--table-version",
        "--version",
        type=int,
        metavar="N",
        help="read this table version (time travel)",
    )
    inspect.add_argument("--limit", type=int, default=20, help="rows (or versions) to print")
    inspect.add_argument(
        "--history",
        action="store_true",
        help="list the table's versions: time, operation, changes, rows",
    )
    inspect.add_argument("--columns", help="comma-separated columns to show")
    inspect.set_defaults(handler=command_inspect)


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one ``enrich`` command; its exit code. With ``argv`` None this is the process's
    entry point (the ``enrich`` script, ``python -m jobs.cli``), so it also makes sure that
    work a stage timeout abandoned cannot change that exit code at interpreter exit.
    ``parser``: another entry point's (the Spark backfill job's), whose arguments name their
    ``handler``; the same logging, failures and exit codes apply."""
    try:
        code = _main(argv, parser)
    finally:
        print_deprecations()
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


def _main(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
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
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM: no traceback, how to go on
        command = [parser.prog if parser else "enrich", *(sys.argv[1:] if argv is None else argv)]
        return _fail(interrupted_line(exc, command), exit_code_of(exc), "interrupted")
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


FAIL_CHARS = 4000  # an error message is cut here: a library may echo a huge value in it


def _fail(message: object, code: int, label: str = "error") -> int:
    text = str(message)
    if len(text) > FAIL_CHARS:
        text = f"{text[:FAIL_CHARS]}... ({len(text):,} characters in all)"
    text = shown(redact_text(text), keep="\n")  # its own lines stay
    print(f"enrich: {label}: {text}", file=sys.stderr)
    return code


def interrupted_line(exc: KeyboardInterrupt, command: list[str]) -> str:
    """What a signal stopped, and for a recorded run the command that finishes it: the same
    command line with ``--resume RUN_ID``."""
    name = exc.args[0] if isinstance(exc, Interrupted) else "SIGINT"
    run_id = getattr(exc, "run_id", None)
    if not run_id:
        return f"{name}: stopped (no interrupted run to resume)"
    kept, after_flag = [], False
    for arg in command:  # the command without its own --resume ID
        dropped = after_flag or arg == "--resume" or arg.startswith("--resume=")
        after_flag = arg == "--resume"
        if not dropped:
            kept.append(arg)
    return (
        f"{name}: run {run_id} stopped and is recorded as interrupted; its finished tasks "
        f"stay staged. Finish it with: {shlex.join([*kept, '--resume', run_id])}"
    )


def _fail_with_cause(exc: Exception, message: str, debug: bool) -> int:
    """A failure of the data or the storage: its cause, and with ``-v`` the traceback
    (through logging, so secrets are masked); the exit code its class carries (1)."""
    if debug:
        logger.error("traceback of the failure:", exc_info=exc)
    return _fail(message, exit_code_of(exc))


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "check_config", False):  # one config serves every task: a bad one exits 2
        load_config(args.config, args.overrides)
    return args.handler(args)


def command_run(args: argparse.Namespace) -> int:
    config = run_config(args, args.input)
    run_once(args, config, args.input, str(args.input), args.resume, [])
    return 0


def run_config(args: argparse.Namespace, input_uri: str):
    """The settings of a run (config, ``--set``, ``--refit-sids``, the input's confinement),
    and every check that can refuse it before any work is done (exit 2)."""
    from pipelines.commit import check_run_id

    if args.resume is not None:  # before any path is built from it
        check_run_id(args.resume, "--resume")
    config = load_config(args.config, args.overrides)
    if args.refit_sids:
        config.semantic_ids.refit = "allow"
    if args.require_describer:
        require_describer(config)
    confine_to(config, input_uri)
    check_writable(args.json_out, "--json")
    return config


def require_describer(config) -> None:
    """Refuse the default describer unless the settings chose it: a scheduler must not run
    the offline demo (evidence text, no VLM) over a catalog by accident."""
    if not config.describe.model_fields_set & {"backend", "model"}:
        raise UsageError(
            "--require-describer: no describer is named, so this would run the offline demo "
            "describer; set describe.backend and describe.model in the config (e.g. backend: "
            "openai for a vLLM endpoint)"
        )


def run_once(
    args: argparse.Namespace,
    config,
    inputs,
    input_label: str,
    resume_id: str | None,
    finished: list[dict],
) -> None:
    """One run of ``inputs`` into ``--lake``: the pipeline, then its summary (stdout and
    ``--json``) and run report; ``finished`` collects the summaries of this process's runs.
    ``enrich run`` and the Spark backfill job both run through here."""
    from pipelines.commit import new_run_id
    from pipelines.driver import run_pipeline

    run_id = resume_id or new_run_id()
    logger.info("run %s: %s into %s", run_id, input_label, args.lake)
    started = time.perf_counter()
    try:
        summary = run_pipeline(
            config,
            inputs,
            lake=args.lake,
            run_id=run_id,
            input_label=input_label,
            engine=args.engine,
            force=args.force,
            engine_args=args.engine_args,
            resume=bool(resume_id),
        )
    except ErrorRateExceeded as exc:  # a finished run that failed: its summary still helps
        _finish(args, exc.summary, time.perf_counter() - started, finished)
        raise
    except Exception:
        _run_report(args, run_id)  # what the failed run committed, if the lake is readable
        raise
    _finish(args, summary, time.perf_counter() - started, finished)


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


def _finish(args: argparse.Namespace, summary, elapsed: float, finished: list[dict]) -> None:
    """The summary (stdout and ``--json``: one run's object, or the list of a backfill's
    runs) and the run report."""
    print_summary(summary, args.lake, elapsed)
    finished.append(_summary_dict(summary, elapsed))
    if args.json_out:
        payload = finished if getattr(args, "json_lists_runs", False) else finished[-1]
        Path(args.json_out).write_text(json.dumps(payload, indent=2, default=str))
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
    for row in _sample(store, "errors", 5):
        print(
            f"    {shown(row['item_id'])}: [{row['stage']}/{row['code']}] "
            f"{shown(row['message'][:100])}"
        )
    if descriptions := _sample(store, "descriptions", 3, ["item_id", "description"]):
        print("descriptions (first 3):")
    for row in descriptions:
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
        sids = _sample(store, "semantic_ids", 6, ["item_id", "sid"])
        print("  " + ", ".join(f"{shown(r['item_id'])}={r['sid']}" for r in sids))
    for note in summary.notes:
        print(f"note: {shown(note)}")
    print(
        f"tables under {shown(lake)}: "
        + ", ".join(f"{k} v{v}" for k, v in summary.table_versions.items() if v is not None)
    )


def _sample(store, table: str, rows: int, columns: list[str] | None = None) -> list[dict]:
    """A few rows of ``table`` for the summary. The summary only samples the lake: a table
    that cannot be read now gets a line saying so, and the run's outcome stands."""
    if not store.exists(table):
        return []
    try:
        return store.head(table, rows, columns)
    except (LakeError, OSError) as exc:
        print(f"  ({table} could not be read for this summary: {shown(str(exc)[:300])})")
        return []


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
    check_writable(args.json_out, "--json")
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
            f"enrich promote-sids --codebook {codebook.version}"
        )
    if args.json_out:
        summary = {
            "codebook_version": codebook.version,
            "metrics": codebook.metrics,
            "promoted": bool(decision and decision.promoted),
            "promotion_note": decision.note if decision else None,
            "assigned": assigned,
        }
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str))
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
    data = store.read(args.table, version=args.table_version, columns=columns)
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
    version = args.table_version
    if version is None:
        version = store.version(args.table)
    print(f"({data.num_rows} rows, version {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
