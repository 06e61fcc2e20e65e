"""Stage resources that engines use: the enrich wave asks for a GPU when a configured stage
runs its model on a GPU inside the task (never for a served describer, never for the Semantic
ID waves); Spark places those tasks one per GPU address through stage-level scheduling and
each task sees only its GPU; Beam's enrich step carries accelerator and min_ram hints."""

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from apache_beam.transforms.resources import AcceleratorHint, MinRamHint

from core.config import load_config
from jobs.cli import main
from pipelines.engines.base import WaveResources, wave_resources
from pipelines.engines.beam import BeamEngine, task_step
from pipelines.engines.spark import gpu_profile, pin_gpus
from pipelines.tasks import EnrichJob, SidWaveJob, enrich_task
from pipelines.worker import Worker
from schemas import read_table
from tests.cli_helpers import run_argv

SERVED = ["describe.backend=openai", "describe.model=served-vlm"]


def enrich_job(*overrides: str) -> EnrichJob:
    """The enrich wave's job for a config (what the driver hands every engine)."""
    config = load_config("configs/demo.yaml", list(overrides))
    return EnrichJob(
        config_json=config.model_dump_json(),
        lake="/unused/lake",
        staging="/unused/staging",
        run_id="r1",
        fingerprint="f",
        force=False,
        descriptions_version=None,
    )


# -- which waves need a GPU ----------------------------------------------------------------------
def test_in_process_models_on_gpu_make_the_enrich_wave_ask_for_a_gpu_per_task():
    needs = wave_resources(enrich_job())
    assert needs.gpu_stages == ("visual", "describe") and needs.gpus == 1.0
    vlm = wave_resources(enrich_job("describe.backend=transformers", "visual.device=cpu"))
    assert vlm.gpu_stages == ("describe",) and vlm.gpus == 1.0
    shared = wave_resources(enrich_job("run.gpus_per_task=0.5"))
    assert shared.gpus == 0.5


def test_a_served_describer_leaves_the_enrich_wave_on_cpus():
    assert wave_resources(enrich_job(*SERVED, "visual.enabled=false")) == WaveResources()
    with_tags = wave_resources(enrich_job(*SERVED, "visual.device=cpu"))
    assert with_tags.gpu_stages == () and with_tags.gpus == 0.0


def test_semantic_id_waves_and_gpus_per_task_zero_never_ask_for_gpus():
    sid_wave = SidWaveJob("lake", "staging", "r1", "cb", "enc", buckets=2, hash_buckets=0)
    assert wave_resources(sid_wave) == WaveResources()
    off = wave_resources(enrich_job("run.gpus_per_task=0"))
    assert off.gpu_stages == ("visual", "describe") and off.gpus == 0.0


# -- Spark: the profile, and the GPU a task's models see -----------------------------------------
GPU_NEEDS = WaveResources(gpu_stages=("describe",), gpus=1.0)
CLUSTER = {"spark.master": "spark://10.0.0.1:7077"}


def test_spark_local_masters_and_executors_without_gpus_get_no_profile():
    profile, why = gpu_profile({"spark.master": "local[2]"}, GPU_NEEDS)
    assert profile is None and "local master" in why
    profile, why = gpu_profile(CLUSTER, GPU_NEEDS)
    assert profile is None and "spark.executor.resource.gpu.amount" in why


def test_spark_executors_with_gpus_take_a_task_only_profile():
    conf = {**CLUSTER, "spark.executor.resource.gpu.amount": "1"}
    profile, why = gpu_profile(conf, GPU_NEEDS)
    assert profile.taskResources["gpu"].amount == 1.0
    assert profile.taskResources["cpus"].amount == 1.0
    assert profile.executorResources == {}  # the executors started with their GPUs
    assert "describe run on GPUs" in why


def test_spark_dynamic_allocation_gets_gpu_executors_of_its_own():
    conf = {
        **CLUSTER,
        "spark.dynamicAllocation.enabled": "true",
        "spark.executor.resource.gpu.discoveryScript": "/opt/spark/getGpusResources.sh",
        "spark.executor.cores": "4",
    }
    profile, _ = gpu_profile(conf, WaveResources(gpu_stages=("describe",), gpus=0.25))
    gpu = profile.executorResources["gpu"]
    assert (gpu.amount, gpu.discoveryScript) == (1, "/opt/spark/getGpusResources.sh")
    assert profile.executorResources["cores"].amount == 4
    assert profile.taskResources["gpu"].amount == 0.25


def test_a_python_worker_sees_only_the_gpu_of_its_first_gpu_task(monkeypatch, caplog):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    worker = Worker()
    assert pin_gpus(worker, []) is None
    assert pin_gpus(worker, ["1"]) == "1"
    with caplog.at_level(logging.WARNING, logger="pipelines.engines.spark"):
        assert pin_gpus(worker, ["0"]) == "1"  # its models are on GPU 1 already: said
    assert "models are on GPU 1" in caplog.text
    assert pin_gpus(Worker(), ["0"]) == "0"  # another Python worker, its own GPU


# -- Beam: resource hints on the enrich step -----------------------------------------------------
T4 = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def test_beam_enrich_step_carries_accelerator_and_min_ram_hints():
    hinted = enrich_job(f"run.gpu_accelerator={T4}", "run.min_ram_gb=16")
    hints = task_step(enrich_task, hinted).get_resource_hints()
    assert hints[AcceleratorHint.urn] == T4.encode()
    assert hints[MinRamHint.urn] == str(16 * 10**9).encode()
    served = enrich_job(*SERVED, "visual.enabled=false", f"run.gpu_accelerator={T4}")
    assert AcceleratorHint.urn not in task_step(enrich_task, served).get_resource_hints()
    assert task_step(enrich_task, enrich_job()).get_resource_hints() == {}  # none configured


@dataclass(frozen=True)
class FolderJob:
    config_json: str
    folder: str


def touch_task(job: FolderJob, task: str, attempt: int, worker: Worker) -> dict:
    (Path(job.folder) / task).write_text(str(attempt))
    return {"task_id": task}


def test_beam_runs_the_hinted_step_on_fnapirunner(tmp_path):
    config = load_config(None, [f"run.gpu_accelerator={T4}", "run.min_ram_gb=2"])
    job = FolderJob(config.model_dump_json(), str(tmp_path))
    BeamEngine([]).run(touch_task, job, ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# -- Spark standalone: tasks placed one per GPU address ------------------------------------------
TEXT_ITEMS = [
    {"item_id": f"text-{n}", "title": f"Lesson {n}", "text": f"A short guide number {n}."}
    for n in range(12)
]
CHEAP = (  # on top of tests.cli_helpers.QUICK (no visual tags: the describer alone asks for a GPU)
    "describe.max_new_tokens=8",
    "describe.batch_size=1",  # 4 items a task at most: 4 tasks of 3, 2 GPU addresses
    "media.batch_size=1",
)


def overlapping(placements: list[dict]) -> list[tuple[str, str]]:
    """Pairs of tasks that ran at the same time on the same GPU address."""
    return [
        (a["task_id"], b["task_id"])
        for i, a in enumerate(placements)
        for b in placements[i + 1 :]
        if a["gpus"] == b["gpus"] and a["started"] < b["ended"] and b["started"] < a["ended"]
    ]


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    if active := SparkSession.getActiveSession():
        active.stop()


@pytest.mark.slow
@pytest.mark.cluster
def test_spark_standalone_places_enrich_tasks_one_per_gpu_address(spark_gpu_cluster, caplog):
    shared = Path(tempfile.mkdtemp(prefix="enrich-gpus-", dir="/var/tmp"))  # workers see it
    manifest = shared / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in TEXT_ITEMS))
    engine = ["--engine", "spark", "--config", "configs/demo.yaml", "--no-report"]
    engine += [f"--engine-arg=master={spark_gpu_cluster.master_url}"]
    engine += [f"--engine-arg={conf}" for conf in spark_gpu_cluster.spark_confs]
    argv = run_argv(manifest, shared / "lake", *CHEAP, extra=engine)
    caplog.set_level(logging.DEBUG, logger="pipelines.engines.spark")
    stop_spark()
    try:
        assert main(argv) == 0
        [run] = read_table(str(shared / "lake"), "runs").to_pylist()
    finally:
        stop_spark()
        shutil.rmtree(shared, ignore_errors=True)
    assert (run["status"], run["succeeded"]) == ("succeeded", len(TEXT_ITEMS))
    waves = {
        record.args[0]: record.args[1]
        for record in caplog.records
        if record.msg.startswith("spark placements of")
    }
    enrich = waves.pop("enrich_task")
    assert len(enrich) == 4  # up to 4 at once on the cores (2 workers x 2), but 2 GPUs
    assert sorted({address for p in enrich for address in p["gpus"]}) == ["0", "1"]
    assert all(len(p["gpus"]) == 1 and p["visible_gpus"] == p["gpus"][0] for p in enrich)
    assert overlapping(enrich) == []  # without GPU requests, two ran at once on each worker
    assert waves and all(p["gpus"] == [] for wave in waves.values() for p in wave)  # SID waves
