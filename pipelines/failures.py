"""How a run fails: each exception carries the ``runs.status`` the driver records for it, and
the CLI exits 1 with its message."""

from __future__ import annotations


class RunFailed(RuntimeError):
    """The run ended ``failed``: the CLI exits 1 with this message."""

    run_status = "failed"


class SidStepFailed(RunFailed):
    """Fitting the lake's first codebook failed (not for want of embeddings): the enriched
    items are committed, but the run ends ``sids_failed``."""

    run_status = "sids_failed"


class ReconciliationError(RunFailed):
    """Items went missing between the plan and the commit: the run fails, nothing is lost
    silently."""
