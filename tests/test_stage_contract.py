"""The Stage contract and the runner around it: a stage marks documented failures and raises
the rest; ``StageRunner`` retries, times out, injects faults, counts and returns (done,
failed); a stage pickles as its config, never its model; the base class stays small."""

import dataclasses
import inspect
import pickle
import time

import pyarrow as pa
import pytest

from core.config import Config, FaultSpec
from transforms.faults import FaultInjector
from transforms.pipeline import build_stages, stage_policy
from transforms.runner import StagePolicy, StageRunner
from transforms.stage import Stage, StageError


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


def test_the_runner_splits_done_from_failed_and_counts_them():
    runner = StageRunner(Doubler(config={}, batch_size=4))
    batch = [
        {"item_id": "a", "x": 1},
        {"item_id": "b", "x": -1},
        {"item_id": "c", "x": 13},
        {"item_id": "d", "x": 4},
    ]
    done, failed = runner.run(batch)
    assert [r["y"] for r in done] == [2, 8]
    assert [r["item_id"] for r in failed] == ["b", "c"]
    assert failed[0]["error"] == {"stage": "doubler", "code": "encode_failed", "message": "x=-1"}
    assert failed[1]["error"]["code"] == "internal_error"
    assert "KeyError" in failed[1]["error"]["message"]
    assert runner.stats.as_dict() == {
        "processed": 2,
        "failed": 2,
        "seconds": pytest.approx(runner.stats.seconds, abs=1e-3),
        "errors_by_code": {"encode_failed": 1, "internal_error": 1},
    }


def test_a_stage_marks_documented_failures_and_raises_the_rest():
    stage = Doubler(config={})
    [marked] = stage.process_batch([{"item_id": "b", "x": -1}])
    assert marked["error"]["code"] == "encode_failed"
    with pytest.raises(KeyError):
        stage.process_batch([{"item_id": "c", "x": 13}])


def test_a_batch_level_failure_is_isolated_to_the_bad_item():
    done, failed = StageRunner(BatchDoubler(config={}, batch_size=4)).run(
        [{"item_id": "a", "x": 1}, {"item_id": "c", "x": 13}]
    )
    assert [r["y"] for r in done] == [2]
    assert failed[0]["error"]["code"] == "internal_error"


def test_records_with_an_earlier_error_pass_through_untouched():
    stage = Doubler(config={})
    runner = StageRunner(stage)
    earlier = {
        "item_id": "a",
        "x": 1,
        "error": {"stage": "media", "code": "not_found", "message": "m"},
    }
    assert runner.run([earlier]) == ([], [earlier])
    assert "y" not in earlier and earlier["error"]["stage"] == "media"
    assert runner.stats.processed == 0 and runner.stats.failed == 0
    # nothing to run on: the model is not loaded (a rerun whose only work is retrying known
    # bad inputs used to load every model, 40 s, for items that fail at decode)
    assert getattr(stage, "loads", 0) == 0


def test_setup_loads_once_and_a_stage_pickles_as_its_config():
    stage = Doubler(config={"k": 1})
    runner = StageRunner(stage)
    runner.run([{"item_id": "a", "x": 1}])
    runner.run([{"item_id": "b", "x": 2}])
    assert stage.loads == 1
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.config == {"k": 1} and not hasattr(clone, "_model") and clone.ready is False


def test_a_fresh_runner_counts_from_zero_around_the_same_stage():
    stage = Doubler(config={})
    StageRunner(stage).run([{"item_id": "a", "x": 1}])
    second = StageRunner(stage)
    second.run([{"item_id": "b", "x": -1}])
    assert (second.stats.processed, second.stats.failed, stage.loads) == (0, 1, 1)


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


def test_the_stage_base_class_is_small_and_holds_no_run_policy():
    lines = inspect.getsource(Stage).splitlines()
    assert len(lines) <= 100, f"Stage is {len(lines)} lines"
    for policy in ("retries", "timeout", "faults", "stats"):
        assert policy not in inspect.getsource(Stage), policy


# -- the run policy: one frozen StagePolicy per stage and task ----------------------------------
class Flaky(Doubler):
    """Raises on its first ``failures`` calls, then doubles."""

    failures = 1

    def process_item(self, record):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls <= self.failures:
            raise RuntimeError("transient")
        super().process_item(record)


def test_retries_come_from_the_policy():
    _, [failed] = StageRunner(Flaky(config={})).run([{"item_id": "a", "x": 1}])
    assert "after 1 attempt(s)" in failed["error"]["message"]
    policy = StagePolicy(retries=1)
    [done], _ = StageRunner(Flaky(config={}), policy).run([{"item_id": "a", "x": 1}])
    assert done == {"item_id": "a", "x": 1, "y": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.retries = 5


class Slow(Doubler):
    def process_item(self, record):
        time.sleep(0.5)
        super().process_item(record)


def test_the_policy_timeout_abandons_a_slow_item():
    runner = StageRunner(Slow(config={}), StagePolicy(timeout_s=0.05))
    _, [out] = runner.run([{"item_id": "a", "x": 1}])
    assert out["error"]["code"] == "stage_timeout"


def test_faults_stand_only_before_the_stages_they_name():
    faults = {"encode": {"fail_fraction": 1.0, "fail_attempts": 1}}
    config = Config.model_validate({"run": {"faults": faults, "item_retries": 1}})
    policies = {stage.name: stage_policy(config, stage.name) for stage in build_stages(config)}
    assert [name for name, r in policies.items() if r.faults is not None] == ["encode"]
    encode = pickle.loads(pickle.dumps(policies["encode"]))
    [out], _ = StageRunner(Doubler(config={}), encode).run([{"item_id": "a", "x": 1}])
    assert out["y"] == 2 and encode.faults.tries == {"a": 2}  # first try raised, retry worked
    never = StagePolicy(faults=FaultInjector(faults["encode"], 0))
    never.faults.spec = FaultSpec(fail_fraction=1.0)  # always raises, no retries
    _, [failed] = StageRunner(Doubler(config={}), never).run([{"item_id": "a", "x": 1}])
    assert failed["error"]["code"] == "internal_error"


def test_an_injected_crash_spares_the_retried_task():
    spec = FaultSpec(crash_items=["a"])
    policy = StagePolicy(faults=FaultInjector(spec, task_attempt=1))
    [done], _ = StageRunner(Doubler(config={}), policy).run([{"item_id": "a", "x": 1}])
    assert done["y"] == 2


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
