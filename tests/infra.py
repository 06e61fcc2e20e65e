"""Real infrastructure for tests (no mocks): an S3 server and a Spark standalone cluster.

``tests/conftest.py`` registers the fixtures (``pytest_plugins = ("tests.infra",)``).

``moto_s3`` runs moto's S3 server on 127.0.0.1 and points the standard AWS environment
variables at it for the whole session, so pyarrow, delta-rs and every child process (Spark
workers and their executors, Beam workers) reach it without extra settings.

``spark_cluster`` runs a Spark standalone master and workers from the pyspark wheel. Each
worker lives in its own mount namespace with a private tmpfs on ``/tmp``, like a separate
machine: executors cannot see the driver's ``/tmp`` or each other's, so code that passes a
local path between driver and executors fails here as it would on a real cluster. Workers
inherit the environment at start, so the fixture starts ``moto_s3`` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

S3_ENV = {
    "AWS_ALLOW_HTTP": "true",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONDITIONAL_PUT": "etag",
}
# Settings that would send requests elsewhere (or sign them with real credentials).
S3_ENV_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE")
WORKER_TMP_WORK_DIR = "/tmp/spark-work"
FAST_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def tree_rss_mb(pid: int) -> float:
    """The summed resident memory of ``pid`` and its descendants, MB (0 once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    rss = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return rss / 1024 + sum(tree_rss_mb(int(child)) for child in children)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class MotoS3:
    """A running S3 server: ``endpoint`` (http URL) and a ``bucket`` that exists."""

    endpoint: str
    bucket: str = "bucket"

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options`` (delta-rs also reads the same keys from the env)."""
        keys = ("AWS_ALLOW_HTTP", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {"AWS_ENDPOINT_URL": self.endpoint, **{k: S3_ENV[k] for k in keys}}

    def filesystem(self):
        """An explicitly configured ``pyarrow.fs.S3FileSystem`` (paths are ``bucket/key``)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
            secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region=S3_ENV["AWS_REGION"],
        )

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_ENV["AWS_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Object keys under ``prefix``, read from the server itself."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server for the session, with the AWS environment pointing at it.

    It runs in its own process, as a real endpoint does: in a thread of the test process it
    would wait for the GIL while a delta-rs call that holds it waits for the server."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    s3 = MotoS3(endpoint=f"http://127.0.0.1:{port}")
    _wait_for_port(port, server)
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in S3_ENV_CLEARED:
                env.delenv(name, raising=False)
            for name, value in {"AWS_ENDPOINT_URL": s3.endpoint, **S3_ENV}.items():
                env.setenv(name, value)
            s3.client().create_bucket(Bucket=s3.bucket)
            yield s3
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"moto server did not listen on {port} within {timeout:.0f} s")


@dataclass
class SparkCluster:
    """A running standalone cluster: connect with ``master_url`` and ``spark_confs``."""

    master_url: str
    web_ui: str
    spark_confs: list[str]
    log_dir: Path
    worker_namespaces: list[str] = field(default_factory=list)

    def session(self, app_name: str = "tests"):
        """A new SparkSession on this cluster (stopping any other active session first), once
        every worker's executor has registered."""
        from pyspark.sql import SparkSession

        if active := SparkSession.getActiveSession():
            active.stop()
        builder = SparkSession.builder.master(self.master_url).appName(app_name)
        for conf in self.spark_confs:
            key, _, value = conf.partition("=")
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        if spark.sparkContext.master != self.master_url:
            spark.stop()
            raise RuntimeError(f"got a session on {spark.sparkContext.master}, not this cluster")
        wait_for_executors(spark, len(self.worker_namespaces))
        return spark


@contextlib.contextmanager
def local_spark(app_name: str) -> Iterator[Any]:
    """A one-core local SparkSession (UI off, UTC), stopped afterwards."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        yield spark
    finally:
        spark.stop()


def wait_for_executors(spark, count: int, timeout: float = 90.0) -> None:
    """Block until ``count`` executors have registered (the driver is not counted)."""
    context = spark.sparkContext._jsc.sc()
    deadline = time.monotonic() + timeout
    while (found := context.getExecutorMemoryStatus().size() - 1) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{found} of {count} executors registered in {timeout:.0f} s")
        time.sleep(0.25)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"({exc})"
    return "\n".join(text)


def _alive_workers(web_ui: str) -> int:
    try:
        with urllib.request.urlopen(f"{web_ui}/json/", timeout=2) as response:
            state = json.load(response)
    except (OSError, ValueError):
        return 0
    return sum(worker.get("state") == "ALIVE" for worker in state.get("workers", []))


def _leftovers(groups: set[int], namespaces: set[str]) -> list[str]:
    """``pid state comm`` of every process (zombies included) in one of ``groups`` or in one
    of the workers' mount ``namespaces`` (PySpark's daemon moves to a process group of its
    own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
            if int(pgrp) in groups or (
                state != "Z" and os.readlink(stat.parent / "ns" / "mnt") in namespaces
            ):
                found.append(f"{stat.parent.name} {state} {comm}")
    return found


def _stop(
    processes: list[subprocess.Popen], namespaces: set[str], grace: float = 20.0
) -> list[str]:
    """SIGTERM each process group, SIGKILL what outlives ``grace``; returns what remains."""
    groups = {p.pid for p in processes}
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _leftovers(groups, namespaces) and time.monotonic() < deadline:
        for process in processes:
            process.poll()  # reap our direct children
        time.sleep(0.2)
    if _leftovers(groups, namespaces):
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        time.sleep(1)  # orphaned executors are reaped by init
    return _leftovers(groups, namespaces)


def _check_namespaces() -> None:
    """Skip unless this process may create mount namespaces and mount a tmpfs in them."""
    if os.geteuid() != 0:
        pytest.skip("spark_cluster needs root (each worker mounts a private tmpfs on /tmp)")
    if not shutil.which("unshare"):
        pytest.skip("spark_cluster needs util-linux 'unshare' for the workers' private /tmp")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a new mount namespace: {probe.stderr.strip()}")


def installed_under_tmp(spark_home: Path) -> list[Path]:
    """The checkout, venv and Spark install when they lie under /tmp (a CI clone there): the
    workers keep seeing those, as machines of a cluster have the same software installed,
    while the rest of their /tmp is their own."""
    found = [
        path
        for path in (ROOT, Path(sys.prefix).resolve(), spark_home)
        if path.is_relative_to("/tmp")
    ]
    return [p for p in found if not any(p != q and p.is_relative_to(q) for q in found)]


def private_tmp_script(
    keep: list[Path], worker: int, command: str, before: list[str] | None = None
) -> str:
    """sh: a fresh tmpfs on /tmp, with ``keep`` bind-mounted back at the same paths, then the
    ``before`` steps (on the worker's own /tmp) and ``command``."""
    saves = [f"/run/enrich-keep-{worker}-{i}" for i in range(len(keep))]
    steps = ["mount --make-rprivate /"]
    for path, save in zip(keep, saves, strict=True):
        steps += [f"mkdir -p {save}", f"mount --bind {shlex.quote(str(path))} {save}"]
    steps.append("mount -t tmpfs tmpfs /tmp")
    for path, save in zip(keep, saves, strict=True):
        steps += [
            f"mkdir -p {shlex.quote(str(path))}",
            f"mount --bind {save} {shlex.quote(str(path))}",
        ]
    return " && ".join([*steps, *(before or []), f"exec {command}"])


GPU_DISCOVERY_SCRIPT = "/tmp/enrich-gpu-discovery.sh"


def fake_gpu_steps(address: str) -> tuple[list[str], str]:
    """sh steps that write a worker's GPU discovery script on its own /tmp (it reports one
    ``gpu`` at ``address``, as nvidia-smi's script reports a real one), and the worker's
    ``SPARK_WORKER_OPTS`` that advertise it: Spark hands that address to the tasks that ask."""
    found = json.dumps({"name": "gpu", "addresses": [address]})
    script = f"#!/bin/sh\necho {shlex.quote(found)}\n"
    steps = [
        f"printf %s {shlex.quote(script)} > {GPU_DISCOVERY_SCRIPT}",
        f"chmod +x {GPU_DISCOVERY_SCRIPT}",
    ]
    options = (
        "-Dspark.worker.resource.gpu.amount=1 "
        f"-Dspark.worker.resource.gpu.discoveryScript={GPU_DISCOVERY_SCRIPT}"
    )
    return steps, options


@contextlib.contextmanager
def start_spark_cluster(
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    timeout: float = 90.0,
    fake_gpus: bool = False,
) -> Iterator[SparkCluster]:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1, each worker (and so
    its executors and their Python workers) with a private tmpfs on /tmp. ``fake_gpus``: each
    worker offers one ``gpu`` resource, worker i at address "i" (no device behind it), and
    sessions ask one per executor (``spark.executor.resource.gpu.amount=1``)."""
    import pyspark

    _check_namespaces()
    spark_home = Path(pyspark.__file__).resolve().parent
    spark_class = spark_home / "bin" / "spark-class"
    keep = installed_under_tmp(spark_home)
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        # Start-up dominates in tests: C1 only and serial GC start the daemons ~2x faster.
        "SPARK_DAEMON_JAVA_OPTS": os.environ.get("SPARK_DAEMON_JAVA_OPTS", FAST_START_JVM),
    }
    previous_pyspark_python = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    log_dir = Path(tempfile.mkdtemp(prefix="spark-cluster-"))
    port, ui_port = free_port(), free_port()
    master_url, web_ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []
    namespaces: list[str] = []

    def launch(name: str, command: list[str]) -> None:
        logs.append(log_dir / f"{name}.log")
        with open(logs[-1], "wb") as log:
            processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def failure(message: str) -> RuntimeError:
        tails = "\n".join(f"--- {log.name}\n{log_tail(log)}" for log in logs)
        return RuntimeError(f"{message}\n{tails}")

    try:
        launch(
            "master",
            [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
            + ["--port", str(port), "--webui-port", str(ui_port)],
        )
        for index in range(workers):
            worker = [
                str(spark_class),
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--cores", str(cores), "--memory", memory),
                *("--webui-port", str(free_port()), "--work-dir", WORKER_TMP_WORK_DIR),
                master_url,
            ]
            before, command = [], shlex.join(worker)
            if fake_gpus:
                before, options = fake_gpu_steps(str(index))
                command = f"env SPARK_WORKER_OPTS={shlex.quote(options)} {command}"
            script = private_tmp_script(keep, index, command, before)
            launch(f"worker-{index}", ["unshare", "-m", "sh", "-c", script])
        deadline = time.monotonic() + timeout
        while (alive := _alive_workers(web_ui)) < workers:
            if exited := [p.args for p in processes if p.poll() is not None]:
                raise failure(f"spark process exited during start-up: {exited}")
            if time.monotonic() > deadline:
                raise failure(f"{alive} of {workers} workers ALIVE after {timeout:.0f} s")
            time.sleep(0.5)
        namespaces += [os.readlink(f"/proc/{p.pid}/ns/mnt") for p in processes[1:]]
        if len(set(namespaces)) != workers or os.readlink("/proc/self/ns/mnt") in namespaces:
            raise failure(f"workers do not have private mount namespaces: {namespaces}")
        yield SparkCluster(
            master_url=master_url,
            web_ui=web_ui,
            spark_confs=[
                "spark.shuffle.readHostLocalDisk=false",  # every executor reports 127.0.0.1
                "spark.executor.memory=1g",
                f"spark.executor.cores={cores}",
                "spark.driver.host=127.0.0.1",
                "spark.driver.bindAddress=127.0.0.1",
                f"spark.pyspark.python={sys.executable}",
                f"spark.executorEnv.PYSPARK_PYTHON={sys.executable}",
                *(["spark.executor.resource.gpu.amount=1"] if fake_gpus else []),
            ],
            log_dir=log_dir,
            worker_namespaces=namespaces,
        )
    finally:
        if previous_pyspark_python is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous_pyspark_python
        if left := _stop(processes, set(namespaces)):
            raise failure(f"Spark processes outlived the cluster: {left}")
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def spark_cluster(moto_s3: MotoS3) -> Iterator[SparkCluster]:
    """A 2-worker standalone cluster for the session; its executors see ``moto_s3``."""
    with start_spark_cluster(workers=2, cores=1, memory="2g") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark_gpu_cluster() -> Iterator[SparkCluster]:
    """A 2-worker standalone cluster whose workers have 2 cores and one fake GPU each (worker i
    at address "i"): more task slots than GPUs, so placement by GPU address shows."""
    with start_spark_cluster(workers=2, cores=2, memory="2g", fake_gpus=True) as cluster:
        yield cluster
