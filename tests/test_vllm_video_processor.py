"""The torch-only Qwen video front end the tiny-model tests use (tests/tiny_qwen.py) against
transformers' real ``Qwen2VLVideoProcessor``, run where torchvision loads: the vLLM venv."""

import json
import subprocess

import pytest

from tests.vllm.servers import PYTHON, ROOT, VENV

pytestmark = pytest.mark.vllm


def test_the_torch_copy_gives_the_real_processors_patches_and_grids():
    if not PYTHON.exists():
        pytest.skip(f"no vLLM venv at {VENV}: `make test-vllm` builds it")
    run = subprocess.run(
        [str(PYTHON), "-m", "tests.vllm.video_processor_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 6
    for result in results:
        real, copy = result["grids"]
        assert real == copy and result["shapes"][0] == result["shapes"][1], result
        assert result["max_abs_diff"] < 1e-5, result  # float rounding, not a resize kernel
