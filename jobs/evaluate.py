"""``enrich evaluate``: do the lake's features help a recommender on your interactions?

Trains small SASRec and two-tower models with each item representation (ID only; ID +
description embedding; SID tokens as codes + prefix n-grams, codes alone or SentencePiece
pieces; ID + metadata embedding) over fixed seeds, and with ``evaluate.models`` including
``tiger`` a generative retriever that decodes the next item's SID (``evaluation.generative``);
reports HR@10, nDCG@10 and Recall@50 on all users, cold-start items and long-tail items.
With ``--queries`` it also scores search (``evaluation.search``): BM25, dense and generative
retrievers on held-out queries, Recall@10, Recall@30 and nDCG@10 on the same slices. The
results and their lineage go to the ``evaluations`` table. See ``evaluation``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from core.errors import UsageError


def add_parser(commands) -> None:
    """Register ``enrich evaluate``."""
    from jobs.common import add_config_args

    parser = commands.add_parser(
        "evaluate", help="train small recommenders on the lake's features and score them"
    )
    parser.add_argument("--lake", required=True)
    parser.add_argument(
        "--interactions",
        help="Parquet/CSV with user_id, item_id, timestamp[, rating] (default: "
        "evaluate.interactions of the config)",
    )
    parser.add_argument(
        "--queries",
        help="Parquet/CSV/JSONL with query, item_id[, relevance][, split]: also score search "
        "(default: evaluate.queries of the config); alone, search only",
    )
    add_config_args(parser)
    pinned = parser.add_mutually_exclusive_group()
    pinned.add_argument("--release", help="read the table versions of this release")
    pinned.add_argument(
        "--versions",
        nargs="+",
        default=[],
        metavar="TABLE=N",
        help="read these table versions, e.g. embeddings=3 semantic_ids=2 (others: latest)",
    )
    parser.add_argument(
        "--against-release",
        help="also evaluate this release and print both side by side (e.g. two prompts)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    parser.add_argument(
        "--no-record", action="store_true", help="do not write the evaluations table"
    )
    parser.set_defaults(handler=command_evaluate)


def parse_versions(items: list[str]) -> dict[str, int]:
    """``["embeddings=3", ...]`` → ``{"embeddings": 3}``; a bad item fails fast."""
    out = {}
    for item in items:
        name, _, number = item.partition("=")
        if not name or not number.isdigit():
            raise UsageError(f"--versions {item!r}: write TABLE=N, e.g. embeddings=3")
        out[name] = int(number)
    return out


def fmt(result: dict) -> str:
    if math.isnan(result["mean"]):
        return "       -      "
    return f"{result['mean']:.4f}±{result['std']:.4f}"


def print_table(runs: dict[str, object]) -> None:
    """One line per (model, representation, slice), one column group per evaluated lake."""
    first = next(iter(runs.values()))
    labels = list(runs)
    header = f"{'model':<10} {'representation':<21} {'slice':<11} {'cases':>5}"
    for label in labels:
        header += f"  {label[:14] + ' HR@10':<20} {'nDCG@10':<14} {'Recall@50':<14}"
    print(header)
    for model, representations in first.evaluation.results.items():
        for representation, slices in representations.items():
            for name, result in slices.items():
                line = f"{model:<10} {representation:<21} {name:<11} {result['cases']:>5}"
                for label in labels:
                    other = runs[label].evaluation.results[model][representation][name]
                    line += "  " + "  ".join(
                        fmt(other[m]).ljust(18 if m == "hr@10" else 14)
                        for m in ("hr@10", "ndcg@10", "recall@50")
                    )
                print(line)


SEARCH_COLUMNS = {"recall@10": "Recall@10", "recall@30": "Recall@30", "ndcg@10": "nDCG@10"}


def print_search(runs: dict[str, object]) -> None:
    """One line per (retriever, slice), one column group per evaluated lake."""
    first = next(iter(runs.values()))
    header = f"{'retriever':<11} {'reads':<17} {'slice':<11} {'cases':>5}"
    for label in runs:
        header += "  " + "  ".join(
            f"{(label[:10] + ' ') if i == 0 else ''}{name}".ljust(18 if i == 0 else 14)
            for i, name in enumerate(SEARCH_COLUMNS.values())
        )
    print(header)
    for retriever, representations in first.search.results.items():
        for representation, slices in representations.items():
            for name, result in slices.items():
                line = f"{retriever:<11} {representation:<17} {name:<11} {result['cases']:>5}"
                for run in runs.values():
                    other = run.search.results[retriever][representation][name]
                    line += "  " + "  ".join(
                        fmt(other[m]).ljust(18 if i == 0 else 14)
                        for i, m in enumerate(SEARCH_COLUMNS)
                    )
                print(line)


def print_coverage(run) -> None:
    for kind, figures in run.evaluation.coverage.items():
        if figures["items_without_features"]:
            print(
                f"  {kind}: {figures['items_without_features']} of "
                f"{run.evaluation.counts['items']} items have none "
                f"({figures['cold_items_without_features']} of them cold; e.g. "
                f"{', '.join(figures['example_items_without_features'])}); they are ranked "
                "with an empty feature, not dropped"
            )


def command_evaluate(args: argparse.Namespace) -> int:
    from core.config import load_config
    from pipelines.commit import new_run_id
    from pipelines.evaluation import record, run_evaluation

    config = load_config(args.config, args.overrides)
    queries = args.queries or config.evaluate.queries
    interactions = args.interactions or config.evaluate.interactions
    if not interactions and not queries:
        raise UsageError(
            "give --interactions URI, --queries URI or both (or set evaluate.interactions / "
            "evaluate.queries in the config)"
        )
    versions = parse_versions(args.versions)
    runs = {}
    for label, release in _targets(args):
        run = run_evaluation(
            args.lake,
            interactions,
            config,
            new_run_id(),
            release,
            versions if not release else {},
            queries_uri=queries,
        )
        runs[label] = run
    if not args.no_record:  # every target evaluated first: a failing one writes nothing
        for run in runs.values():
            record(args.lake, run)
    for label, run in runs.items():
        print_summary(label, run)
    if interactions:
        print_table(runs)
    if queries:
        print_search(runs)
    if args.json_out:
        payload = {label: run.to_json() for label, run in runs.items()}
        Path(args.json_out).write_text(json.dumps(payload, indent=2, default=str))
    return 0


def print_summary(label: str, run) -> None:
    """What each task of one evaluation read, its lineage and its time."""
    head = f"evaluation {run.evaluation_id} ({label})"
    lineage = json.dumps(run.lineage, sort_keys=True)
    if run.interactions:
        counts = run.evaluation.counts
        print(
            f"{head}: {counts['users']} users, {counts['items']} items ({counts['cold_items']} "
            f"cold, {counts['long_tail_items']} long-tail), {counts['interactions']} "
            f"interactions; lineage {lineage}; {run.evaluation.seconds}s"
        )
        print_coverage(run)
    else:
        print(f"{head}: lineage {lineage}")
    if run.search is not None:
        counts = run.search.counts
        print(
            f"  search: {counts['train_queries']} training queries ({counts['train_pairs']} "
            f"pairs), {counts['test_queries']} test queries over {counts['items']} items "
            f"({counts['cold_items']} relevant items cold, {counts['long_tail_items']} "
            f"long-tail, {counts['query_items_not_in_lake']} not in the lake); "
            f"{run.search.seconds}s"
        )


def _targets(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(label, release) of each lake state to evaluate: the one asked for, and the other."""
    main = (args.release or ("versions" if args.versions else "latest"), args.release)
    if args.against_release:
        if args.against_release == args.release:
            raise UsageError("--against-release names the same release as --release")
        return [main, (args.against_release, args.against_release)]
    return [main]
