"""The run report: one self-contained HTML file (plots and frames inlined) about a run and the
lake it left behind. ``enrich report --lake DIR --out report.html``; ``enrich run`` writes one too.

Sections: run summary and lineage, per-stage counts and throughput, errors by code, description
lengths with sample descriptions beside their first frame, Semantic-ID health, and a 2-D
projection of the embeddings coloured by level-1 code.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import storage
from core.config import MediaConfig
from core.errors import UsageError
from pipelines.codebooks import (
    embedding_matrix,
    embeddings_of,
    find_row,
    latest_version,
    seeded_sample,
)
from pipelines.crosswalk import churn_summary
from schemas.store import DeltaStore
from transforms.stage import StageError

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"
REPORTS_DIR = "_reports"
SAMPLE_DESCRIPTIONS = 5
EXAMPLES_PER_ERROR = 3
PROJECTION_MAX_POINTS = 5000
HEALTH_MAX_ITEMS = 50_000  # SID health metrics re-encode a seeded sample of this many items
THUMBNAIL_MAX_SIDE = 320
STAGE_ORDER = ("media", "asr", "ocr", "visual", "describe", "encode")
SAMPLE_TAGS = 5
REPORT_SECTIONS = (
    "run",
    "stages",
    "errors",
    "descriptions",
    "sids",
    "projection",
    "evaluation",
)


# -- entry points ------------------------------------------------------------------------------
def write_report(lake: str | Path, out: str | Path, run_id: str | None = None) -> str:
    """Render the report for ``run_id`` (default: the latest run) into ``out`` (a path or
    URI)."""
    started = time.perf_counter()
    html = render_report(lake, run_id)
    path = storage.normalize(str(out))
    storage.write_bytes(path, html.encode("utf-8"))
    logger.info("report %s written in %.1fs", path, time.perf_counter() - started)
    return path


def default_report_path(lake: str | Path, run_id: str) -> str:
    """``<lake>/_reports/<run_id>.html``, on the lake's storage (``PathEscape`` for a run id
    that would put it elsewhere)."""
    return storage.join_under(str(lake), REPORTS_DIR, f"{run_id}.html")


def write_run_report(lake: str | Path, run_id: str, out: str | Path | None = None) -> str | None:
    """The end-of-run report: never fails the run, only logs why there is none."""
    path = str(out) if out else default_report_path(lake, run_id)
    try:
        return write_report(lake, path, run_id)
    except Exception as exc:  # noqa: BLE001 - the run's tables are committed; the report is extra
        logger.warning("run report not written: %s: %s", type(exc).__name__, exc)
        return None


def render_report(lake: str | Path, run_id: str | None = None) -> str:
    """The report as one HTML string."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE_NAME).render(**report_context(DeltaStore(lake), run_id))


def report_context(store: DeltaStore, run_id: str | None = None) -> dict[str, Any]:
    """Everything the template shows, read from the lake."""
    run = pick_run(store, run_id)
    config = json.loads(run.get("config_json") or "{}")
    run_descriptions = _rows(store, "descriptions", run_id=run["run_id"])
    codebook_version = run.get("codebook_version") or latest_version(store)
    return {
        "lake": store.lake,
        "run": run_summary(run, run_descriptions),
        "stages": stage_rows(run, run_descriptions),
        "errors": error_groups(store),
        "descriptions": description_section(store, run_media_config(config)),
        "sids": sid_section(store, codebook_version),
        "projection": projection_section(store, codebook_version),
        "evaluation": evaluation_section(store),
        "sections": REPORT_SECTIONS,
    }


def run_media_config(config: dict[str, Any]) -> MediaConfig:
    """The run's media settings (so the sample frame is the one the describer saw); the
    defaults, confined to nothing, when a config from another tool version does not parse."""
    from pydantic import ValidationError

    try:
        return MediaConfig(**config.get("media", {}))
    except ValidationError as exc:
        logger.warning("report: run's media config not usable (%s); using defaults", exc)
        return MediaConfig()


# -- reading the lake --------------------------------------------------------------------------
def pick_run(store: DeltaStore, run_id: str | None) -> dict[str, Any]:
    """The ``runs`` row for ``run_id``, or the latest started one."""
    runs = store.read_or_empty("runs").to_pylist()
    if not runs:
        raise UsageError(f"no runs recorded under {store.lake}: run `enrich run` first")
    if run_id is None:
        return max(runs, key=lambda r: (r["started_at"] is not None, r["started_at"]))
    for run in runs:
        if run["run_id"] == run_id:
            return run
    raise UsageError(f"run '{run_id}' is not in the runs table of {store.lake}")


def _rows(store: DeltaStore, name: str, run_id: str | None = None, columns=None) -> list[dict]:
    table = store.read_or_empty(name, columns=columns)
    if run_id is not None:
        table = table.filter(pc.equal(table.column("run_id"), run_id))
    return table.to_pylist()


# -- run summary and lineage -------------------------------------------------------------------
def run_summary(run: dict[str, Any], run_descriptions: list[dict]) -> dict[str, Any]:
    """Counts, timing and lineage of one run (models and prompt from its description rows)."""
    started, finished = run.get("started_at"), run.get("finished_at")
    lineage_keys = ("describer", "describer_revision", "prompt_version", "prompt_sha")
    return {
        **{k: run.get(k) for k in ("run_id", "status", "engine", "input", "tool_version")},
        **{k: run.get(k) or 0 for k in ("items", "succeeded", "skipped", "failed")},
        "started_at": f"{started:%Y-%m-%d %H:%M:%S} UTC" if started else None,
        "finished_at": f"{finished:%Y-%m-%d %H:%M:%S} UTC" if finished else None,
        "seconds": round((finished - started).total_seconds(), 1) if started and finished else None,
        "config_fingerprint": run.get("config_fingerprint"),
        "codebook_version": run.get("codebook_version"),
        "stage_fingerprints": json.loads(run.get("stage_fingerprints_json") or "{}"),
        "table_versions": json.loads(run.get("table_versions_json") or "{}"),
        "models": {k: _distinct(run_descriptions, k) for k in lineage_keys},
        "config_json": json.dumps(json.loads(run.get("config_json") or "{}"), indent=2),
    }


def _distinct(rows: list[dict], key: str) -> str:
    values = sorted({str(r[key]) for r in rows if r.get(key) is not None})
    return ", ".join(values) if values else "—"


# -- stages ------------------------------------------------------------------------------------
def stage_rows(run: dict[str, Any], run_descriptions: list[dict]) -> list[dict[str, Any]]:
    """Per stage: processed, skipped (unchanged or after an earlier failure), failed, seconds,
    items/s, and tokens/s for the describer. Empty when the engine recorded no counters."""
    stats = json.loads(run.get("stage_stats_json") or "{}")
    order = [s for s in STAGE_ORDER if s in stats] + sorted(set(stats) - set(STAGE_ORDER))
    items = run.get("items") or 0
    rows = []
    for name in order:
        stage = stats[name]
        processed, failed = stage.get("processed", 0), stage.get("failed", 0)
        seconds = float(stage.get("seconds") or 0.0)
        rows.append(
            {
                "stage": name,
                "processed": processed,
                "skipped": max(0, items - processed - failed),
                "failed": failed,
                "seconds": round(seconds, 2),
                "items_per_s": _rate(processed + failed, seconds),
                "tokens_per_s": _describe_tokens_rate(run_descriptions, seconds)
                if name == "describe"
                else None,
                "errors_by_code": stage.get("errors_by_code") or {},
            }
        )
    return rows


def _rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


def _describe_tokens_rate(run_descriptions: list[dict], seconds: float) -> float | None:
    tokens = sum(r.get("description_tokens") or 0 for r in run_descriptions)
    return _rate(tokens, seconds) if tokens else None


# -- errors ------------------------------------------------------------------------------------
def error_groups(store: DeltaStore) -> list[dict[str, Any]]:
    """Open errors grouped by (stage, code), largest first, with a few example items."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in sorted(_rows(store, "errors"), key=lambda r: r["item_id"]):
        groups.setdefault((row["stage"], row["code"]), []).append(row)
    return [
        {
            "stage": stage,
            "code": code,
            "count": len(rows),
            "examples": [
                {"item_id": r["item_id"], "uri": r.get("uri"), "message": r["message"][:300]}
                for r in rows[:EXAMPLES_PER_ERROR]
            ],
        }
        for (stage, code), rows in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


# -- descriptions ------------------------------------------------------------------------------
def description_section(store: DeltaStore, media: MediaConfig) -> dict[str, Any]:
    """Length distribution of every description, and samples beside their first frame."""
    columns = ["item_id", "uri", "title", "description", "description_tokens", "media_kind"]
    columns += [c for c in ("visual_tags", "grounding") if _has_column(store, "descriptions", c)]
    rows = [r for r in _rows(store, "descriptions", columns=columns) if r["description"]]
    if not rows:
        return {"count": 0}
    words = [len(r["description"].split()) for r in rows]
    tokens = [r["description_tokens"] for r in rows if r["description_tokens"] is not None]
    grounding = [r["grounding"] for r in rows if r.get("grounding") is not None]
    return {
        "count": len(rows),
        "grounding": _spread_stats(grounding) if grounding else None,
        "words": _spread_stats(words),
        "tokens": _spread_stats(tokens) if tokens else None,
        "histogram": length_histogram_png(words),
        "samples": [_sample(row, media) for row in pick_samples(rows)],
    }


def _has_column(store: DeltaStore, name: str, column: str) -> bool:
    """Whether table ``name`` has ``column`` (lakes written before it was added do not)."""
    return store.exists(name) and column in store.table(name).schema().to_arrow().names


def _spread_stats(values: list[int]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 1),
        "p95": float(np.percentile(values, 95)),
        "max": max(values),
    }


def pick_samples(rows: list[dict], count: int = SAMPLE_DESCRIPTIONS) -> list[dict]:
    """``count`` rows spread evenly over item_id order (the same picks on every render)."""
    ordered = sorted(rows, key=lambda r: r["item_id"])
    if len(ordered) <= count:
        return ordered
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def _sample(row: dict, media: MediaConfig) -> dict[str, Any]:
    frame, reason = first_frame(row.get("uri"), row.get("media_kind"), media)
    return {
        "item_id": row["item_id"],
        "uri": row.get("uri"),
        "title": row.get("title"),
        "description": row["description"],
        "visual_tags": [
            f"{t['label']} ({t['score']:.2f}, {t['share']:.0%})"
            for t in (row.get("visual_tags") or [])[:SAMPLE_TAGS]
        ],
        "grounding": row.get("grounding"),
        "frame": frame,
        "frame_missing": reason,
    }


def first_frame(
    uri: str | None, media_kind: str | None, media: MediaConfig
) -> tuple[str | None, str | None]:
    """(JPEG data URI of the first sampled frame, None), or (None, why there is no frame)."""
    from PIL import Image

    from transforms.media import (
        check_file,
        confine,
        fetch_input,
        probe_file,
        read_frames,
        release_input,
    )

    if media_kind == "text":
        return None, "text only (no media)"
    if not uri:
        return None, "no uri"
    if media_kind == "audio":
        return None, "audio only"
    record = {"uri": uri}
    try:
        fetch_input(record, media)
        if not record["local_path"]:
            check_file(confine(uri, media), media)  # raises with the reason
            return None, "unreadable"
        path = Path(record["local_path"])
        probe = probe_file(path, media.max_pixels)
        if not probe.has_video:
            return None, "audio only"
        # read_frames refuses what the run refuses (max_pixels, max_duration_s) before decoding
        frames = read_frames(path, probe, media.model_copy(update={"max_side": THUMBNAIL_MAX_SIDE}))
    except StageError as exc:
        return None, f"{exc.code}: {exc.message[:120]}"
    except OSError as exc:  # e.g. no ffmpeg binary, or a file that vanished mid-read
        return None, f"unreadable: {exc}"[:140]
    finally:
        release_input(record)
    buffer = io.BytesIO()
    Image.fromarray(frames["frames"][0]).save(buffer, format="JPEG", quality=80)
    return _data_uri(buffer.getvalue(), "image/jpeg"), None


# -- Semantic IDs ------------------------------------------------------------------------------
def sid_section(store: DeltaStore, codebook_version: str | None) -> dict[str, Any]:
    """Health of one codebook's assignments: the fit-time metrics, the same metrics over the
    items coded now, collisions, and per-level code usage."""
    from transforms.semantic_ids import Codebook
    from transforms.semantic_ids.metrics import codebook_health

    row = find_row(store, codebook_version)
    sids = _sid_rows(store, codebook_version)
    if row is None or not sids:
        return {"codebook_version": codebook_version, "count": 0}
    codebook = Codebook.from_row(row)
    codes = np.asarray([r["codes"] for r in sids], dtype=np.int64)
    coded = seeded_sample(encoder_embeddings(store, codebook.encoder), HEALTH_MAX_ITEMS, 0)
    coded = coded.filter(pc.is_in(coded["item_id"], pa.array([r["item_id"] for r in sids])))
    vectors = embedding_matrix(coded)
    lake_health = codebook_health(codebook, vectors) if len(vectors) > 1 else {}
    dedup = np.asarray([r["dedup"] or 0 for r in sids])
    return {
        "codebook_version": codebook_version,
        "method": codebook.method,
        "levels": codebook.levels,
        "codebook_size": codebook.codebook_size,
        "n_fit": codebook.n_fit,
        "count": len(sids),
        "health_items": len(vectors),
        "fit_metrics": codebook.metrics,
        "lake_metrics": lake_health,
        "unique_fraction": round(len({tuple(c) for c in codes.tolist()}) / len(codes), 4),
        "items_with_dedup_suffix": int((dedup > 0).sum()),
        "max_dedup": int(dedup.max()),
        "top_collisions": _top_collisions(codes),
        "usage_png": code_usage_png(codes, codebook.codebook_size),
        "churn": churn_summary(store, codebook_version),
    }


def _sid_rows(store: DeltaStore, codebook_version: str | None) -> list[dict]:
    rows = _rows(store, "semantic_ids", columns=["item_id", "codes", "dedup", "codebook_version"])
    return sorted(
        (r for r in rows if r["codebook_version"] == codebook_version and r["codes"]),
        key=lambda r: r["item_id"],
    )


def encoder_embeddings(store: DeltaStore, encoder: str | None) -> pa.Table:
    """item_id and embedding rows of one encoder (the most common one when not given), in
    item_id order: vectors of different encoders do not share a space, or even a size."""
    if encoder is None:
        encoders = store.read_or_empty("embeddings", columns=["encoder"])["encoder"].to_pylist()
        encoder = Counter(encoders).most_common(1)[0][0] if encoders else ""
    return embeddings_of(store, encoder, ["item_id", "embedding"])


def _top_collisions(codes: np.ndarray, limit: int = 5) -> list[dict[str, Any]]:
    counts = Counter(map(tuple, codes.tolist()))
    return [
        {"codes": "-".join(map(str, key)), "count": n}
        for key, n in counts.most_common(limit)
        if n > 1
    ]


# -- projection --------------------------------------------------------------------------------
def projection_section(store: DeltaStore, codebook_version: str | None) -> dict[str, Any]:
    """PCA of the embeddings to 2-D, coloured by level-1 code (grey: no SID yet)."""
    row = find_row(store, codebook_version)
    table = encoder_embeddings(store, row["encoder"] if row else None)
    if table.num_rows < 2:
        return {"count": table.num_rows}
    table = seeded_sample(table, PROJECTION_MAX_POINTS, 0)
    first_code = {r["item_id"]: r["codes"][0] for r in _sid_rows(store, codebook_version)}
    item_ids = table["item_id"].to_pylist()
    points, explained = pca_2d(embedding_matrix(table))
    colours = np.asarray([first_code.get(i, -1) for i in item_ids])
    return {
        "count": len(item_ids),
        "explained": [round(float(e), 3) for e in explained],
        "png": projection_png(points, colours),
    }


def evaluation_section(store: DeltaStore) -> dict[str, Any]:
    """The latest ``enrich evaluate``: its recommendation rows (HR@10, nDCG@10, Recall@50
    mean ± std) with a bar chart of HR@10 per representation and slice, and its search rows
    (Recall@10, Recall@30, nDCG@10)."""
    if not store.exists("evaluations"):
        return {"rows": [], "search_rows": []}
    table = store.read("evaluations")
    if not table.num_rows:
        return {"rows": [], "search_rows": []}
    rows = table.to_pylist()
    latest = max(rows, key=lambda r: r["updated_at"])
    rows = sorted(
        (r for r in rows if r["evaluation_id"] == latest["evaluation_id"]),
        key=lambda r: (r["model"], r["representation"], r["slice"]),
    )
    search = [r for r in rows if r.get("task") == "search"]
    rows = [r for r in rows if r.get("task") != "search"]  # null: written before search
    return {
        "rows": rows,
        "search_rows": search,
        "evaluation_id": latest["evaluation_id"],
        "lineage": {
            key: latest[key]
            for key in ("codebook_version", "describer", "prompt_version", "encoder", "config_hash")
        },
        "table_versions": json.loads(latest["table_versions_json"] or "{}"),
        "interactions": next((r["interactions"] for r in rows), None),
        "queries": next((r.get("queries") for r in search), None),
        "png": evaluation_png(rows) if rows else None,
    }


def evaluation_png(rows: list[dict]) -> str:
    """One panel per model: HR@10 bars per representation, one colour per slice, ± std."""
    models = sorted({r["model"] for r in rows})
    slices = [s for s in ("all", "cold_start", "long_tail") if any(r["slice"] == s for r in rows)]
    figure = _figure(5.5 * len(models), 3.2)
    for axes, model in zip(figure.subplots(1, len(models), squeeze=False)[0], models, strict=True):
        ours = [r for r in rows if r["model"] == model]
        representations = list(dict.fromkeys(r["representation"] for r in ours))
        width = 0.8 / max(1, len(slices))
        for i, name in enumerate(slices):
            found = {r["representation"]: r for r in ours if r["slice"] == name}
            means = [found[x]["hr_at_10_mean"] if x in found else 0 for x in representations]
            stds = [found[x]["hr_at_10_std"] if x in found else 0 for x in representations]
            positions = np.arange(len(representations)) + i * width
            axes.bar(positions, np.nan_to_num(means), width, yerr=stds, label=name)
        axes.set_xticks(np.arange(len(representations)) + width * (len(slices) - 1) / 2)
        axes.set_xticklabels(representations, rotation=20, fontsize=8)
        axes.set_title(model, fontsize=9)
        axes.set_ylabel("HR@10")
        axes.legend(fontsize=7)
    return _png(figure)


def pca_2d(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) principal-component coordinates and the variance fraction each explains."""
    centred = data - data.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return centred @ components[:2].T, variance[:2] / max(variance.sum(), 1e-12)


# -- plots -------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return _data_uri(buffer.getvalue(), "image/png")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def length_histogram_png(words: list[int]) -> str:
    figure = _figure(6, 2.6)
    axes = figure.add_subplot()
    axes.hist(words, bins=min(30, max(5, len(set(words)))), color="#4c72b0")
    axes.set_xlabel("description length (words)")
    axes.set_ylabel("items")
    return _png(figure)


def code_usage_png(codes: np.ndarray, codebook_size: int) -> str:
    """One bar chart per level: items per code, codes sorted by use."""
    levels = codes.shape[1]
    figure = _figure(3.2 * levels, 2.6)
    for level, axes in enumerate(figure.subplots(1, levels, squeeze=False)[0]):
        counts = np.sort(np.bincount(codes[:, level], minlength=codebook_size))[::-1]
        used = int((counts > 0).sum())
        axes.bar(np.arange(codebook_size), counts, width=1.0, color="#55a868")
        axes.set_title(f"level {level + 1}: {used}/{codebook_size} codes used", fontsize=9)
        axes.set_xlabel("code rank")
        axes.set_ylabel("items")
    return _png(figure)


def projection_png(points: np.ndarray, colours: np.ndarray) -> str:
    figure = _figure(6, 5)
    axes = figure.add_subplot()
    coded = colours >= 0
    axes.scatter(*points[~coded].T, s=8, c="#bbbbbb", label="no SID")
    scatter = axes.scatter(*points[coded].T, s=8, c=colours[coded], cmap="turbo")
    if coded.any():
        figure.colorbar(scatter, ax=axes, label="level-1 code")
    if (~coded).any():
        axes.legend(loc="best", fontsize=8)
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    return _png(figure)
