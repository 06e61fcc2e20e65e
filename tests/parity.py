"""Comparing tables across engines and storages: texts, codes and ids exactly; floats within
a tolerance (CTranslate2's int8 ASR floats vary with thread count and CPU, its texts do not)."""

import math

from schemas import read_table

VOLATILE = {"run_id", "updated_at", "describe_latency_ms", "codebook_version"}
ASR_TOLERANCE = 0.1


def comparable(lake: str, name: str, root: str = "\0") -> dict:
    """Rows by item_id without volatile columns; the input root written as <root>."""

    def clean(value):
        if isinstance(value, str):
            return value.replace(root, "<root>")
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    rows = read_table(lake, name).to_pylist()
    return {r["item_id"]: {k: clean(v) for k, v in r.items() if k not in VOLATILE} for r in rows}


def assert_same(ours, theirs, where: str = "") -> None:
    """Equal texts, codes and ids; floats within ASR_TOLERANCE."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert math.isclose(ours, theirs, abs_tol=ASR_TOLERANCE), f"{where}: {ours} != {theirs}"
    elif isinstance(ours, dict) and isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list) and isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def assert_matches_reference(lake: str, root: str, reference: dict) -> None:
    for name in ("descriptions", "embeddings", "semantic_ids", "errors"):
        ours = comparable(lake, name, root)
        theirs = comparable(reference["lake"], name, reference["root"])
        assert ours.keys() == theirs.keys(), name
        if name == "embeddings":
            for row in (*ours.values(), *theirs.values()):
                row["embedding"] = [round(x, 4) for x in row["embedding"]]
        assert_same(ours, theirs, name)
