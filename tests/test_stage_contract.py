import pickle

import pyarrow as pa

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
