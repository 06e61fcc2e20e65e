"""Benchmark: what `enrich evaluate` says about (i) a behaviour-aligned encoder against the
frozen one and (ii) SID tokenizations, on MovieLens-100K, under 25 minutes on 2 CPU cores.

Data and items: as bench/evaluate.py (its loader and lake writer are imported): 943 users,
1,682 text-only movies whose "description" is a template of title, year and genres, encoded by
the pipeline's encode stage into a real Delta lake. Codebooks: `enrich fit-sids --assign`,
3 levels x 32 codes (as bench/evaluate.py), SentencePiece sized by
`semantic_ids.sentencepiece_budget`.

(i) Frozen vs aligned. The aligned encoder is `enrich fit-encoder` (MultipleNegativesRanking
loss on co-interaction pairs) trained on the evaluation's TRAINING interactions only: the
split is rebuilt with the evaluation's own code (`evaluation.split`) and
`training_log` keeps each user's warm history before the held-out last item, so no test
target and no cold item's interaction reaches the encoder; the bench checks that every
evaluation reports the same split. `enrich reencode` re-makes a copy of the lake with it and
`enrich fit-sids` codes each lake; `enrich evaluate` scores `description` and `sid` on both.

(ii) SID tokenizations on the frozen lake: `sid_codes` (one token per level and code), `sid`
(codes + prefix n-grams) and `sid_pieces` at three SentencePiece sizes. Each size is its own
copy of the lake with the same k-means fit (the fit is seeded, so the codes are identical) and
only the SentencePiece model differs. 1,682 items x 3 codes hold about 3,100 distinct runs of
2 or 3 codes (level-0/1 pairs, level-1/2 pairs, full SIDs); SentencePiece learns no more
than that, whatever it is asked, and at that size every item is one piece.

Every figure is the median over 3 seeds with min and max; wall time is one run. Writes
bench/results/sid_eval.json; ratio = wall time / 1500 s.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.evaluate import EVALUATE, movielens, table_of, write_lake  # noqa: E402

BUDGET_S = 1500.0
SIDS = {"levels": 3, "codebook_size": 32}
SINGLE_CODES = SIDS["levels"] * SIDS["codebook_size"]
PIECE_VOCABS = (256, 1024, 4096)  # merged pieces; the budget adds the 96 single codes
TUNING = {"max-pairs": 2048, "lr": 1e-4, "epochs": 1, "batch-size": 32, "window": 3, "seed": 0}
ALIGNED_REPRESENTATIONS = ["description", "sid"]
FROZEN_REPRESENTATIONS = ["description", "sid", "sid_codes", "sid_pieces"]
METRICS = ("hr@10", "ndcg@10")
SLICES = ("all", "cold_start")


def config_file(path: Path, vocab: int, representations: list[str], model: str | None) -> Path:
    """A bench config: the evaluation settings, a SentencePiece budget, optionally an encoder."""
    settings = {
        "semantic_ids": {**SIDS, "sentencepiece_budget": SINGLE_CODES + vocab},
        "evaluate": {**EVALUATE, "representations": representations},
    }
    if model:
        settings["encode"] = {"model": model}
    path.write_text(yaml.safe_dump(settings))
    return path


def training_interactions(interactions, item_ids: list[str], out: Path) -> dict[str, int]:
    """Write the evaluation split's training log (no held-out or cold interaction) to
    ``out``; the split's counts, which every evaluation must report too."""
    from core.config import EvaluateConfig
    from evaluation.split import leave_last_out, training_log

    settings = EvaluateConfig(**EVALUATE)
    split = leave_last_out(
        interactions,
        set(item_ids),
        settings.cold_fraction,
        settings.head_share,
        settings.split_seed,
    )
    pq.write_table(training_log(split), out)
    return split.counts


def evaluate(enrich, lake: Path, config: Path, interactions: Path, out: Path) -> dict:
    argv = ["evaluate", "--lake", str(lake), "--config", str(config)]
    argv += ["--interactions", str(interactions), "--json", str(out), "--no-record"]
    assert enrich(argv) == 0
    [evaluation] = json.loads(out.read_text()).values()
    return evaluation


def piece_stats(lake: Path) -> dict[str, float]:
    """What SentencePiece learned on a lake: merged pieces and pieces per item."""
    import sentencepiece as spm

    from schemas import DeltaStore

    store = DeltaStore(lake)
    [codebook] = store.read("codebooks", columns=["sentencepiece_model"]).to_pylist()
    size = spm.SentencePieceProcessor(model_proto=codebook["sentencepiece_model"]).get_piece_size()
    pieces = store.read("semantic_ids", columns=["sid_pieces"])["sid_pieces"].to_pylist()
    return {
        "merged_pieces_learned": size - SINGLE_CODES - 1,  # minus the single codes and <unk>
        "pieces_per_item": round(float(np.mean([len(p) for p in pieces])), 3),
    }


def cells(evaluation: dict, representation: str) -> dict:
    """model → slice → metric → median/min/max over seeds, for one representation."""
    table = table_of(evaluation["results"])
    return {
        model: {
            name: {metric: reps[representation][name][metric] for metric in METRICS}
            for name in SLICES
        }
        for model, reps in table.items()
    }


def markdown(rows: dict[str, dict]) -> str:
    """One line per label and model: HR@10 and nDCG@10 on all and cold-start cases."""
    lines = [
        "| variant | model | all HR@10 | all nDCG@10 | cold-start HR@10 | cold-start nDCG@10 |",
        "|---|---|---|---|---|---|",
    ]
    for label, models in rows.items():
        for model, slices in models.items():
            figures = [slices[s][m] for s in SLICES for m in METRICS]
            text = " | ".join(
                f"{f['median']:.4f} [{f['min']:.4f}, {f['max']:.4f}]" for f in figures
            )
            lines.append(f"| {label} | {model} | {text} |")
    return "\n".join(lines)


def main() -> None:
    from jobs.cli import main as enrich

    started, stages = time.perf_counter(), {}

    def lap(name: str, began: float) -> None:
        stages[name] = round(time.perf_counter() - began, 1)

    interactions, items = movielens()
    with tempfile.TemporaryDirectory(prefix="bench-sid-eval-") as tmp:
        root = Path(tmp)
        frozen = root / "frozen"
        began = time.perf_counter()
        write_lake(frozen, items)
        lap("encode_frozen_s", began)
        lakes = {f"pieces_{v}": root / f"pieces_{v}" for v in PIECE_VOCABS[1:]}
        lakes["aligned"] = root / "aligned"
        for lake in lakes.values():
            shutil.copytree(frozen, lake)
        pq.write_table(interactions, root / "interactions.parquet")
        split_counts = training_interactions(
            interactions, [i["item_id"] for i in items], root / "train.parquet"
        )

        began = time.perf_counter()
        encoder = root / "aligned-encoder"
        tuning = [f"--{k}={v}" for k, v in TUNING.items()]
        assert (
            enrich(
                [
                    "fit-encoder",
                    "--lake",
                    str(frozen),
                    "--interactions",
                    str(root / "train.parquet"),
                    "--out",
                    str(encoder),
                    "--summary-json",
                    str(root / "tuned.json"),
                    *tuning,
                ]
            )  # fmt: skip
            == 0
        )
        tuned = json.loads((root / "tuned.json").read_text())
        lap("fit_encoder_s", began)
        began = time.perf_counter()
        model = ["--set", f"encode.model={encoder}"]
        assert enrich(["reencode", "--lake", str(lakes["aligned"]), *model]) == 0
        lap("reencode_s", began)

        configs = {
            "frozen": config_file(
                root / "frozen.yaml", PIECE_VOCABS[0], FROZEN_REPRESENTATIONS, None
            ),
            "aligned": config_file(
                root / "aligned.yaml", PIECE_VOCABS[0], ALIGNED_REPRESENTATIONS, str(encoder)
            ),
            **{
                f"pieces_{v}": config_file(root / f"pieces_{v}.yaml", v, ["sid_pieces"], None)
                for v in PIECE_VOCABS[1:]
            },
        }
        paths = {"frozen": frozen, **lakes}
        began = time.perf_counter()
        for label, lake in paths.items():
            assert (
                enrich(
                    ["fit-sids", "--lake", str(lake), "--config", str(configs[label]), "--assign"]
                )
                == 0
            )
        lap("fit_sids_s", began)
        pieces = {
            PIECE_VOCABS[0]: piece_stats(frozen),
            **{v: piece_stats(paths[f"pieces_{v}"]) for v in PIECE_VOCABS[1:]},
        }

        evaluations = {}
        for label, lake in paths.items():
            began = time.perf_counter()
            evaluations[label] = evaluate(
                enrich, lake, configs[label], root / "interactions.parquet", root / f"{label}.json"
            )
            lap(f"evaluate_{label}_s", began)
            assert evaluations[label]["counts"] == split_counts, (label, split_counts)

    wall = round(time.perf_counter() - started, 1)
    frozen_eval, aligned_eval = evaluations["frozen"], evaluations["aligned"]
    aligned_rows = {
        f"{which} {rep}": cells(evaluations[which], rep)
        for rep in ALIGNED_REPRESENTATIONS
        for which in ("frozen", "aligned")
    }
    token_rows = {
        "sid_codes": cells(frozen_eval, "sid_codes"),
        "sid (codes + prefix n-grams)": cells(frozen_eval, "sid"),
        f"sid_pieces {PIECE_VOCABS[0]}": cells(frozen_eval, "sid_pieces"),
        **{
            f"sid_pieces {v}": cells(evaluations[f"pieces_{v}"], "sid_pieces")
            for v in PIECE_VOCABS[1:]
        },
    }
    rows_used = {
        "sid_codes": frozen_eval["sid_vocabulary"]["sid_codes"],
        "sid (codes + prefix n-grams)": frozen_eval["sid_vocabulary"]["sid"],
        f"sid_pieces {PIECE_VOCABS[0]}": frozen_eval["sid_vocabulary"]["sid_pieces"],
        **{
            f"sid_pieces {v}": evaluations[f"pieces_{v}"]["sid_vocabulary"]["sid_pieces"]
            for v in PIECE_VOCABS[1:]
        },
    }
    result = {
        "benchmark": "sid_eval",
        "data": "MovieLens-100K (recbole==1.2.1 wheel): 943 users, 1,682 text-only items, "
        "100,000 interactions, all implicit; items as in bench/evaluate.py",
        "protocol": "enrich evaluate: leave-last-out by time, 10% of items cold (held out of "
        "training entirely), HR@10 and nDCG@10 over all items, history masked; SASRec "
        f"({EVALUATE['layers']} block) and two-tower, dim {EVALUATE['dim']}, "
        f"{EVALUATE['epochs']} epochs, negatives {EVALUATE.get('negatives', 'by catalogue')}",
        "config": {
            "evaluate": EVALUATE,
            "semantic_ids": SIDS,
            "sentencepiece_vocabs": PIECE_VOCABS,
            "fit_encoder": TUNING,
        },
        "split_counts": split_counts,
        "aligned_encoder": {
            "trained_on": "training_log of the evaluation split: each user's warm history before "
            "the held-out last item; no cold item, no test target",
            "training_pairs": tuned["examples"],
            "epoch_losses": tuned["epoch_losses"],
            "encoder": aligned_eval["lineage"]["encoder"],
        },
        "aligned_vs_frozen": aligned_rows,
        "tokenizations": token_rows,
        "token_table_rows": rows_used,
        "sentencepiece": {str(v): stats for v, stats in pieces.items()},
        "lineage": {label: e["lineage"] for label, e in evaluations.items()},
        "cores": 2,
        "seeds": EVALUATE["seeds"],
        "figures": "median over 3 seeds [min, max]; wall time from one run",
        "markdown_aligned": markdown(aligned_rows),
        "markdown_tokenizations": markdown(token_rows),
        "stages_s": stages,
        "wall_s": wall,
        "goal": f"frozen vs aligned and 5 SID tokenizations under {BUDGET_S:.0f} s on 2 CPU cores",
        "headline": headline_keys(),
        "ratio": round(wall / BUDGET_S, 3),
    }
    path = ROOT / "bench" / "results" / "sid_eval.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown_aligned"], result["markdown_tokenizations"], sep="\n\n")
    print(f"token rows {rows_used}; pieces {pieces}")
    print(f"wall {wall}s ({stages}); ratio {result['ratio']}; wrote {path}")


def headline_keys() -> list[str]:
    """SUMMARY.md's figures: cold-start HR@10 of two-tower, frozen vs aligned, and wall time."""
    cold = "two_tower.cold_start.hr@10.median"
    return [
        "wall_s",
        f"aligned_vs_frozen.frozen description.{cold}",
        f"aligned_vs_frozen.aligned description.{cold}",
        f"aligned_vs_frozen.frozen sid.{cold}",
        f"aligned_vs_frozen.aligned sid.{cold}",
        f"tokenizations.sid_pieces {PIECE_VOCABS[0]}.{cold}",
    ]


if __name__ == "__main__":
    main()
