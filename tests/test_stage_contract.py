import dataclasses
import pickle
import time

import pyarrow as pa
import pytest

from core.config import Config, FaultSpec
from transforms.faults import FaultInjector
from transforms.pipeline import build_stages
from transforms.stage import Stage, StageError, StageRuntime


class Doubler(Stage):
    """A toy stage: doubles ``x``; x < 0 is a coded failure, x == 13 is a bug."""

    name = "doubler"

    def load(self):
        self._model = object()  # stands in for a heavy model
        self.loads = getattr(self, "loads", 0) + 1

    def process_item(self, record):
        if record["x"] < 0:
            raise StageError("encode_failed", f"x={record['x']}")
        if record["x"] == 13:
            raise KeyError("unlucky")
        record["y"] = record["x"] * 2


class BatchDoubler(Doubler):
    def run_batch(self, records):
        if any(r["x"] == 13 for r in records):
            raise RuntimeError("the whole batch call blew up")
        for r in records:
            r["y"] = r["x"] * 2


def test_failing_items_are_marked_not_raised_and_others_finish():
    stage = Doubler(config={}, batch_size=4)
    out = stage.process_batch(
        [
            {"item_id": "a", "x": 1},
            {"item_id": "b", "x": -1},
            {"item_id": "c", "x": 13},
            {"item_id": "d", "x": 4},
        ]
    )
    assert [r.get("y") for r in out] == [2, None, None, 8]
    assert out[1]["error"] == {"stage": "doubler", "code": "encode_failed", "message": "x=-1"}
    assert out[2]["error"]["code"] == "internal_error"
    assert "KeyError" in out[2]["error"]["message"]
    assert stage.stats.processed == 2 and stage.stats.failed == 2


def test_a_batch_level_failure_is_isolated_to_the_bad_item():
    stage = BatchDoubler(config={}, batch_size=4)
    out = stage.process_batch([{"item_id": "a", "x": 1}, {"item_id": "c", "x": 13}])
    assert out[0]["y"] == 2
    assert out[1]["error"]["code"] == "internal_error"


def test_records_with_an_earlier_error_pass_through_untouched():
    stage = Doubler(config={})
    earlier = {
        "item_id": "a",
        "x": 1,
        "error": {"stage": "media", "code": "not_found", "message": "m"},
    }
    out = stage.process_batch([earlier])
    assert "y" not in out[0] and out[0]["error"]["stage"] == "media"
    assert stage.stats.processed == 0 and stage.stats.failed == 0
    # nothing to run on: the model is not loaded (a rerun whose only work is retrying known
    # bad inputs used to load every model, 40 s, for items that fail at decode)
    assert getattr(stage, "loads", 0) == 0


def test_setup_loads_once_and_pickling_drops_the_model():
    stage = Doubler(config={})
    stage.process_batch([{"item_id": "a", "x": 1}])
    stage.process_batch([{"item_id": "b", "x": 2}])
    assert stage.loads == 1
    clone = pickle.loads(pickle.dumps(stage))
    assert not hasattr(clone, "_model") and clone._ready is False


def test_record_batches_are_accepted():
    stage = Doubler(config={})
    out = stage.process_batch(pa.RecordBatch.from_pylist([{"item_id": "a", "x": 3}]))
    assert out[0]["y"] == 6


def test_fingerprint_depends_on_fingerprint_fields():
    class Tunable(Doubler):
        def fingerprint_fields(self):
            return {"k": self.config["k"]}

    assert Tunable({"k": 1}).fingerprint() == Tunable({"k": 1}).fingerprint()
    assert Tunable({"k": 1}).fingerprint() != Tunable({"k": 2}).fingerprint()


# -- run settings: one frozen StageRuntime, given at construction -------------------------------
class Flaky(Doubler):
    """Raises on its first ``failures`` calls, then doubles."""

    failures = 1

    def process_item(self, record):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls <= self.failures:
            raise RuntimeError("transient")
        super().process_item(record)


def test_retries_come_from_the_runtime_given_at_construction():
    assert Flaky(config={}).process_batch([{"item_id": "a", "x": 1}])[0]["error"]
    stage = Flaky(config={}, runtime=StageRuntime(retries=1))
    assert stage.process_batch([{"item_id": "a", "x": 1}])[0] == {"item_id": "a", "x": 1, "y": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.runtime.retries = 5


class Slow(Doubler):
    def process_item(self, record):
        time.sleep(0.5)
        super().process_item(record)


def test_the_runtime_timeout_abandons_a_slow_item():
    stage = Slow(config={}, runtime=StageRuntime(timeout_s=0.05))
    [out] = stage.process_batch([{"item_id": "a", "x": 1}])
    assert out["error"]["code"] == "stage_timeout"


def test_faults_wrap_only_the_stages_they_name_and_survive_pickling():
    faults = {"encode": {"fail_fraction": 1.0, "fail_attempts": 1}}
    config = Config.model_validate({"run": {"faults": faults, "item_retries": 1}})
    stages = {stage.name: stage for stage in build_stages(config)}
    assert [n for n, s in stages.items() if s.runtime.faults is not None] == ["encode"]
    plain = stages["media"]
    assert plain.runtime.batch_function(plain.run_batch) == plain.run_batch  # nothing in front
    faulty = Doubler(config={}, runtime=pickle.loads(pickle.dumps(stages["encode"].runtime)))
    [out] = faulty.process_batch([{"item_id": "a", "x": 1}])  # first try raises, retry works
    assert out["y"] == 2 and faulty.runtime.faults.tries == {"a": 2}
    never = Doubler(config={}, runtime=StageRuntime(faults=FaultInjector(faults["encode"], 0)))
    never.runtime.faults.spec = FaultSpec(fail_fraction=1.0)  # always raises, no retries
    assert never.process_batch([{"item_id": "a", "x": 1}])[0]["error"]["code"] == "internal_error"


def test_an_injected_crash_spares_the_retried_task():
    spec = FaultSpec(crash_items=["a"])
    stage = Doubler(config={}, runtime=StageRuntime(faults=FaultInjector(spec, task_attempt=1)))
    assert stage.process_batch([{"item_id": "a", "x": 1}])[0]["y"] == 2


class DeclaredDoubler(Doubler):
    needs = frozenset({"x"})
    adds = frozenset({"y", "z"})  # z is declared but never added


def test_the_suite_checks_every_batch_against_needs_and_adds():
    """Under the tests (ENRICH_CHECK_FIELDS=1) a stage that reads a field no one added, or
    leaves out one it declares, fails loudly: a chain bug, not an item's error row."""
    from transforms.stage import CHECK_FIELDS, FieldContractError

    assert CHECK_FIELDS
    stage = DeclaredDoubler(config={}, batch_size=2)
    with pytest.raises(FieldContractError, match=r"adds: record 'a' lacks \['z'\]"):
        stage.process_batch([{"item_id": "a", "x": 1}])
    with pytest.raises(FieldContractError, match=r"needs: record 'b' lacks \['x'\]"):
        stage.process_batch([{"item_id": "b"}])
    failed = {"item_id": "c", "error": {"stage": "media", "code": "not_found", "message": ""}}
    assert stage.process_batch([failed]) == [failed]  # a failed item stops where it failed
