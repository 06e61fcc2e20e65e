"""Codebook promotion: which Semantic-ID codebook new items are coded with.

``enrich fit-sids`` records a *candidate*. It is used only once promoted, explicitly
(``enrich promote-sids``) or when it is no worse than the current one on the same
embeddings (``--promote if-no-worse``). The decision, its figures and its time are written to
the candidate's ``codebooks`` row, so every promotion and refusal is on record.

When ``evaluate.interactions`` is configured, ``if-no-worse`` also runs the evaluation gate:
the small recommenders of ``enrich evaluate`` are trained with SID tokens from the current and
from the candidate codebook on the same interactions, and the candidate is refused when its
``evaluate.gate_metric`` on any of ``evaluate.gate_models`` x ``evaluate.gate_slices`` is
lower than the current codebook's by more than ``evaluate.gate_tolerance`` (absolute; default
HR@10 of the two-tower model on all users and on cold-start items, tolerance 0.01).

"Current" is what a run pins with ``semantic_ids.codebook_version: auto`` (see
``pipelines.codebooks.pinned_codebook``): the most recently promoted codebook compatible with
the config (method, levels, codebook size, encoder), else the first one a run fitted.

``enrich fit-sids`` (``refit``) and ``enrich assign-sids`` (``code_onto_current``) live here
too: they fit through ``pipelines.sids`` and code through a run's own Semantic-ID waves
(``pipelines.sid_waves``), and put codebooks into use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import EvaluateConfig, SemanticIdConfig
from core.errors import UsageError
from pipelines.codebooks import (
    codebook_row,
    current_codebook,
    embedding_matrix,
    embeddings_of,
    fit_sample,
    fitted_row,
    require_embeddings,
    seeded_sample,
    set_promotion_status,
    settings_mismatch,
)
from pipelines.context import RunContext
from pipelines.sid_waves import assign_sids
from pipelines.sids import fit_codebook, fit_codebook_on, uncoded_ids
from schemas.store import DeltaStore
from transforms.semantic_ids import Codebook
from transforms.semantic_ids.churn import churn

logger = logging.getLogger(__name__)

PROMOTE_MODES = ("never", "if-no-worse", "always")
EVAL_MAX_ITEMS = 100_000  # both codebooks are scored on the same seeded sample of this size
# "No worse" tolerances: absolute for the unique fraction, relative for MSE and entropy.
UNIQUE_FRACTION_TOLERANCE = 0.02
MSE_TOLERANCE = 0.02
ENTROPY_TOLERANCE = 0.02


@dataclass
class Decision:
    """The outcome of a promotion request, with the figures it was based on."""

    promoted: bool
    reasons: list[str] = field(default_factory=list)
    candidate: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    current_version: str | None = None
    churn: dict[str, Any] = field(default_factory=dict)  # vs the current codebook, on the sample

    @property
    def note(self) -> str:
        verdict = "promoted" if self.promoted else "refused"
        against = f"vs {self.current_version}" if self.current_version else "(no current codebook)"
        moved = f" [churn {json.dumps(self.churn, sort_keys=True)}]" if self.churn else ""
        return f"{verdict} {against}: " + "; ".join(self.reasons) + moved


def health_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that decide promotion, from a ``codebook_health`` dict: those of the codes
    items are assigned (collisions moved within the codebook's slack)."""
    return {
        "unique_fraction": float(metrics["unique_fraction_assigned"]),
        "reconstruction_mse": float(metrics["reconstruction_mse_assigned"]),
        "entropy_bits": round(float(sum(metrics["per_level_entropy_bits"])), 4),
    }


def worse_than(candidate: dict[str, float], current: dict[str, float]) -> list[str]:
    """Why ``candidate`` is worse than ``current`` beyond the tolerances (empty: no worse)."""
    reasons = []
    if candidate["unique_fraction"] < current["unique_fraction"] - UNIQUE_FRACTION_TOLERANCE:
        reasons.append(
            f"unique fraction before dedup {candidate['unique_fraction']:.4f} < current "
            f"{current['unique_fraction']:.4f} - {UNIQUE_FRACTION_TOLERANCE}"
        )
    if candidate["reconstruction_mse"] > current["reconstruction_mse"] * (1 + MSE_TOLERANCE):
        reasons.append(
            f"reconstruction MSE {candidate['reconstruction_mse']:.6f} > current "
            f"{current['reconstruction_mse']:.6f} x {1 + MSE_TOLERANCE}"
        )
    if candidate["entropy_bits"] < current["entropy_bits"] * (1 - ENTROPY_TOLERANCE):
        reasons.append(
            f"code entropy {candidate['entropy_bits']:.3f} bits < current "
            f"{current['entropy_bits']:.3f} x {1 - ENTROPY_TOLERANCE}"
        )
    return reasons


def evaluation_sample(store: DeltaStore, encoder: str, seed: int) -> np.ndarray:
    """A seeded sample (≤ EVAL_MAX_ITEMS) of the lake's embeddings from ``encoder``."""
    table = embeddings_of(store, encoder, ["item_id", "embedding"])
    require_embeddings(table, encoder, "compare codebooks")
    return embedding_matrix(seeded_sample(table, EVAL_MAX_ITEMS, seed + 1))


def scored(codebook: Codebook, sample: np.ndarray) -> dict[str, float]:
    from transforms.semantic_ids.metrics import codebook_health

    figures = health_figures(codebook_health(codebook, sample))
    return {**figures, "codebook_size": codebook.codebook_size}


def decide(
    store: DeltaStore,
    config: SemanticIdConfig,
    encoder: str,
    candidate_row: dict[str, Any],
    mode: str,
    evaluation: EvaluateConfig | None = None,
) -> Decision:
    """Whether to promote the candidate under ``mode`` (if-no-worse or always); with
    ``evaluation.interactions`` set, if-no-worse also runs the evaluation gate."""
    mismatch = settings_mismatch(candidate_row, config, encoder)
    if mismatch and mode == "always":
        raise UsageError(
            f"codebook {candidate_row['codebook_version']} cannot serve this config "
            f"({'; '.join(mismatch)}); runs would never pin it. Promote it with the config "
            "it was fitted for, or pin it explicitly with semantic_ids.codebook_version"
        )
    current = current_codebook(store, config, encoder)
    if current is None or current.version == candidate_row["codebook_version"]:
        return Decision(not mismatch, mismatch or ["first codebook for these settings"])
    sample = evaluation_sample(store, encoder, config.seed)
    candidate = Codebook.from_row(candidate_row)
    decision = Decision(
        False, [], scored(candidate, sample), scored(current, sample), current.version
    )
    decision.churn = churn(current.encode(sample), candidate.encode(sample))
    if mode == "always":
        decision.promoted, decision.reasons = True, ["promoted on request (no metric check)"]
        return decision
    decision.reasons = mismatch + worse_than(decision.candidate, decision.current)
    if not decision.reasons and evaluation is not None and evaluation.interactions:
        decision.reasons = evaluation_gate(store, evaluation, candidate, current, decision)
    decision.promoted = not decision.reasons
    if decision.promoted:
        decision.reasons = [f"no worse on {len(sample)} embeddings: {decision.candidate}"]
    return decision


def evaluation_gate(
    store: DeltaStore,
    evaluation: EvaluateConfig,
    candidate: Codebook,
    current: Codebook,
    decision: Decision,
) -> list[str]:
    """The recommender check: why the candidate's SIDs serve worse (empty: no worse). Its
    figures join the decision's."""
    from pipelines.evaluation import compare_codebooks, gate_reasons

    old, new = compare_codebooks(store, evaluation, candidate, current)
    metric = evaluation.gate_metric
    for model in evaluation.gate_models:
        for name in evaluation.gate_slices:
            key = f"eval_{model}_{name}_{metric}"
            decision.candidate[key] = new.score(model, "sid", name, metric)
            decision.current[key] = old.score(model, "sid", name, metric)
    return gate_reasons(new, old, evaluation)


def promote(
    store: DeltaStore,
    config: SemanticIdConfig,
    encoder: str,
    version: str,
    mode: str = "always",
    note: str = "",
    evaluation: EvaluateConfig | None = None,
) -> Decision:
    """Decide on codebook ``version`` under ``mode`` and record the outcome in its row."""
    if mode not in PROMOTE_MODES[1:]:
        raise UsageError(f"promotion mode {mode!r}: choose one of {', '.join(PROMOTE_MODES)}")
    row = codebook_row(store, version)
    decision = decide(store, config, encoder, row, mode, evaluation)
    text = decision.note + (f" ({note})" if note else "")
    set_promotion_status(store, row, "promoted" if decision.promoted else "refused", text)
    return decision


def code_onto_current(context: RunContext, run_id: str) -> tuple[str | None, int]:
    """``enrich assign-sids``: give every embedded item a SID from the current codebook (new
    items a run left uncoded, or every item after a promotion). Fits one, as a run would, if
    there is none. Returns (codebook version, items coded)."""
    store, config, encoder = context.store, context.config.semantic_ids, context.encoder
    codebook = context.pinned
    if codebook is None:
        if embeddings_of(store, encoder, ["item_id"]).num_rows < 2:
            return None, 0
        codebook = fit_codebook(store, config, encoder, run_id)
    coded = assign_sids(
        store,
        codebook,
        encoder,
        run_id,
        only=uncoded_ids(store, encoder, codebook.version),
        hash_buckets=config.prefix_hash_buckets,
        staging_uri=context.config.run.staging_uri,
    )
    return codebook.version, coded


def refit(
    store: DeltaStore,
    config: SemanticIdConfig,
    encoder: str,
    run_id: str,
    assign: bool,
    promote_mode: str = "never",
    evaluation: EvaluateConfig | None = None,
    staging_uri: str | None = None,
) -> tuple[Codebook, int, Decision | None]:
    """``enrich fit-sids``: always a new codebook version, recorded as a candidate that runs
    do not pin until it is promoted (``promote_mode``: never, if-no-worse or always;
    ``evaluation`` adds its evaluation gate). ``assign`` re-codes every embedded item with it
    once promoted (staged under ``staging_uri``, default the lake's). Returns the codebook,
    the items re-coded and the promotion decision (None if not asked)."""
    embedded = embeddings_of(store, encoder, ["item_id", "embedding"])
    previous = current_codebook(store, config, encoder)
    codebook = fit_codebook_on(fit_sample(embedded, config, encoder), config, encoder, previous)
    set_promotion_status(
        store,
        fitted_row(codebook, run_id),
        "candidate",
        f"fitted by enrich fit-sids in run {run_id}",
    )
    decision = (
        None
        if promote_mode == "never"
        else promote(store, config, encoder, codebook.version, promote_mode, evaluation=evaluation)
    )
    if not assign or decision is None or not decision.promoted:
        return codebook, 0, decision
    coded = assign_sids(
        store,
        codebook,
        encoder,
        run_id,
        hash_buckets=config.prefix_hash_buckets,
        staging_uri=staging_uri,
    )
    return codebook, coded, decision
