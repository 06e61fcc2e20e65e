"""How a run fails: each exception's class carries the ``runs.status`` the driver records for
it (``run_status``), and the CLI exits 1 with its message (``exit_code``)."""

from __future__ import annotations

from core.errors import EnrichError


class RunFailed(EnrichError, RuntimeError):
    """The run ended ``failed``: the CLI exits 1 with this message."""


class SidStepFailed(RunFailed):
    """Fitting the lake's first codebook failed (not for want of embeddings): the enriched
    items are committed, but the run ends ``sids_failed``."""

    run_status = "sids_failed"


class ReconciliationError(RunFailed):
    """Items went missing between the plan and the commit: the run fails, nothing is lost
    silently."""
