"""Inputs that vanished: a media-folder input is the whole catalog, so an item an earlier run
enriched from that folder whose file is gone now is reported (an ``errors`` row with code
``missing_input`` and the ``runs.missing_input`` count) and, with
``run.on_missing_input=delete``, its features are deleted. A manifest names only the items
to process (daily manifests list new items), so it never makes an item missing.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.commit import RunSummary
from schemas.rows import error_row, utc_now
from schemas.store import DeltaStore
from transforms.manifest import TaskInput
from transforms.stage import mark_error

logger = logging.getLogger(__name__)
MISSING_CODE = "missing_input"
RETIRED_TABLES = ("descriptions", "embeddings", "semantic_ids")


def listed_media(tasks: list[TaskInput]) -> dict[str, set[str]]:
    """Media folder → the URIs this run listed in it."""
    folders: dict[str, set[str]] = {}
    for task in tasks:
        if task.fmt == "media":
            folders.setdefault(task.source, set()).update(task.names)
    return folders


def under_folder(table: pa.Table, folder: str) -> pa.Table:
    prefix = folder.rstrip("/") + "/"
    return table.filter(pc.fill_null(pc.starts_with(table.column("uri"), prefix), False))


def vanished(store: DeltaStore, folders: dict[str, set[str]]) -> pa.Table:
    """(item_id, uri) of described items whose file was under a folder and is not listed."""
    described = store.read_or_empty("descriptions", columns=["item_id", "uri"])
    gone = []
    for folder, names in folders.items():
        rows = under_folder(described, folder)
        listed = pc.is_in(rows.column("uri"), pa.array(sorted(names), pa.string()))
        gone.append(rows.filter(pc.invert(listed)))
    return pa.concat_tables(gone) if gone else described.slice(0, 0)


def reappeared(store: DeltaStore, folders: dict[str, set[str]]) -> list[str]:
    """Items reported missing earlier whose file is listed again."""
    errors = store.read_or_empty("errors", columns=["item_id", "uri", "code"])
    errors = errors.filter(pc.equal(errors.column("code"), MISSING_CODE))
    back = []
    for folder, names in folders.items():
        rows = under_folder(errors, folder)
        listed = pc.is_in(rows.column("uri"), pa.array(sorted(names), pa.string()))
        back += rows.filter(listed).column("item_id").to_pylist()
    return back


def missing_rows(ids: list[str], uris: list[str], what: str, run_id: str) -> list[dict]:
    """One ``errors`` row (code ``missing_input``) per vanished item."""
    now = utc_now()
    return [
        error_row(
            mark_error(
                {"item_id": item_id, "uri": uri},
                "input",
                MISSING_CODE,
                f"{uri} is no longer in the input folder; {what}",
            ),
            run_id,
            now,
        )
        for item_id, uri in zip(ids, uris, strict=True)
    ]


def handle_missing_inputs(
    store: DeltaStore, tasks: list[TaskInput], summary: RunSummary, action: str
) -> None:
    """Report (and with ``action == "delete"`` retire) the vanished items of media folders."""
    folders = listed_media(tasks)
    if not folders:
        return
    store.delete_keys("errors", reappeared(store, folders))
    gone = vanished(store, folders)
    summary.missing_input = gone.num_rows
    if not gone.num_rows:
        return
    ids = gone.column("item_id").to_pylist()
    if action == "delete":
        for name in RETIRED_TABLES:
            store.delete_keys(name, ids)
        what = "its features were deleted (run.on_missing_input=delete)"
    else:
        what = "its features are still served; run.on_missing_input=delete retires them"
    store.merge("errors", missing_rows(ids, gone.column("uri").to_pylist(), what, summary.run_id))
    summary.notes.append(
        f"{len(ids)} items of the input folder are gone since earlier runs: {what}"
    )
    logger.warning("%d input files vanished since earlier runs (%s)", len(ids), what)
