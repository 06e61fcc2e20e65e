import ast
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_transforms_import_neither_beam_nor_spark():
    paths = sorted((ROOT / "transforms").rglob("*.py"))
    assert len(paths) > 20  # the package was found
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("apache_beam", "pyspark")), f"{path}: {name}"


def test_importing_the_packages_loads_no_model_or_engine():
    code = (
        "import sys, transforms.pipeline, schemas, pipelines.engines.local, jobs.cli; "
        "heavy = [m for m in ('torch', 'pyspark', 'apache_beam', 'faster_whisper') "
        "if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_override_exits_2_with_the_key_named(tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    code = main(
        [
            "run",
            "--input",
            str(tmp_path),
            "--lake",
            str(tmp_path / "lake"),
            "--set",
            "semantic_ids.levels=0",
        ]
    )
    assert code == 2
    assert "semantic_ids.levels" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_missing_input_exits_2(tmp_path, capsys):
    assert main(["run", "--input", str(tmp_path / "nope.jsonl"), "--lake", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_engine_is_refused_by_the_parser(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--input", str(tmp_path), "--lake", str(tmp_path), "--engine", "dask"])
    assert exc.value.code == 2


def test_inspect_lists_absent_tables_of_a_lake(tmp_path, capsys):
    from schemas.rows import utc_now
    from schemas.store import DeltaStore

    DeltaStore(tmp_path).merge(
        "releases", [{"release_id": "r", "run_id": "x", "updated_at": utc_now()}]
    )
    assert main(["inspect", "--lake", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "descriptions   (absent)" in out and "releases       version    0  rows 1" in out
