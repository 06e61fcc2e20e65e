"""The streaming runtime (pipelines/stream.py): stages overlap, batches fill or time out,
lanes keep several batches in flight, the media budget holds, failed items leave at once,
worker processes run GIL-bound stages and are replaced when they die, and a raising stage
stops the stream."""

import os
import threading
import time

import pytest

from pipelines.stream import ProcessLanes, ProcessStage, StreamOptions, run_stream
from transforms.runner import StageRunner
from transforms.stage import Stage, StageError

WAIT_S = 10.0  # a generous bound for events that must happen; never reached when correct


class Recorder:
    """A duck-typed stage: appends its name to each item's trail, records its batches."""

    def __init__(self, name, batch_size=1, lanes=1, on_batch=None):
        self.name, self.batch_size, self.lanes, self.on_batch = name, batch_size, lanes, on_batch
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def process_batch(self, batch):
        with self.lock:
            self.batches.append([item["n"] for item in batch])
        if self.on_batch:
            self.on_batch(self, batch)
        for item in batch:
            item["trail"].append(self.name)
        return batch


def items(count):
    return [{"n": n, "trail": []} for n in range(count)]


def test_every_item_passes_every_stage_in_order():
    done = []
    stages = [Recorder("a", 3), Recorder("b", 2), Recorder("c", 5)]
    report = run_stream(items(17), stages, done.append)
    assert sorted(item["n"] for item in done) == list(range(17))
    assert all(item["trail"] == ["a", "b", "c"] for item in done)
    assert report.items == 17
    assert report.stages["b"].items == 17
    assert all(len(batch) <= 2 for batch in stages[1].batches)


def test_a_later_stage_works_on_item_n_while_an_earlier_one_works_on_item_n_plus_1():
    second_started = threading.Event()

    def first(stage, batch):
        if batch[0]["n"] == 1:  # item 1 is held in stage a until stage b has item 0
            assert second_started.wait(WAIT_S), "stage b never ran while stage a was busy"

    def second(stage, batch):
        if batch[0]["n"] == 0:
            second_started.set()

    done = []
    run_stream(
        items(3), [Recorder("a", on_batch=first), Recorder("b", on_batch=second)], done.append
    )
    assert len(done) == 3


def test_a_batch_starts_when_full_or_after_max_wait():
    def slow_source():
        yield from items(4)
        time.sleep(0.5)  # a trickle: the last item comes long after max_wait
        yield {"n": 4, "trail": []}

    stage = Recorder("model", batch_size=4)
    run_stream(slow_source(), [stage], lambda item: None, StreamOptions(max_wait_s=0.05))
    assert stage.batches == [[0, 1, 2, 3], [4]]


def test_lanes_keep_several_batches_in_flight():
    lanes = 4
    barrier = threading.Barrier(lanes, timeout=WAIT_S)

    def meet(stage, batch):
        if batch[0]["n"] < lanes:  # the first four requests must all be out at once
            barrier.wait()

    stage = Recorder("served", batch_size=1, lanes=lanes, on_batch=meet)
    done = []
    run_stream(items(10), [stage], done.append)
    assert len(done) == 10 and not barrier.broken


def test_held_media_stays_within_the_budget_plus_one_batch():
    held, peak, lock = [0], [0], threading.Lock()
    size, budget, batch = 10, 35, 2

    def decode(stage, items_):
        for item in items_:
            item["frames"] = size
            with lock:
                held[0] += size
                peak[0] = max(peak[0], held[0])

    def describe(stage, items_):
        time.sleep(0.01)  # slower than decoding: the budget, not the queues, bounds what waits

    def release(item):
        with lock:
            held[0] -= item.pop("frames", 0)

    options = StreamOptions(
        budget_bytes=budget,
        held_bytes=lambda item: item.get("frames", 0),
        budget_from=0,
        release_after=1,
        release=release,
        max_wait_s=0.0,
    )
    stages = [Recorder("media", batch, on_batch=decode), Recorder("describe", 1, on_batch=describe)]
    done = []
    report = run_stream(items(40), stages, done.append, options)
    assert len(done) == 40 and held[0] == 0
    assert "frames" not in done[0]
    assert report.peak_held_bytes <= budget
    assert peak[0] <= budget + batch * size


def test_an_item_larger_than_the_budget_still_passes_alone():
    options = StreamOptions(budget_bytes=5, held_bytes=lambda item: 100, release_after=0)
    done = []
    run_stream(items(3), [Recorder("media")], done.append, options)
    assert len(done) == 3


def test_a_raising_stage_stops_the_stream_and_is_raised():
    def explode(stage, batch):
        if batch[0]["n"] == 5:
            raise RuntimeError("describer endpoint key missing")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="key missing"):
        run_stream(items(1000), [Recorder("a"), Recorder("b", on_batch=explode)], lambda i: None)
    assert time.monotonic() - started < WAIT_S
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_a_raising_source_is_raised():
    def source():
        yield from items(2)
        raise OSError("manifest vanished")

    with pytest.raises(OSError, match="vanished"):
        run_stream(source(), [Recorder("a")], lambda item: None)


class Refuser(Stage):
    """Refuses odd items with a documented error."""

    name = "refuser"

    def process_item(self, record):
        if record["n"] % 2:
            raise StageError("media_unreadable", "odd")
        record["trail"].append(self.name)


def test_a_failed_item_leaves_the_stream_without_visiting_later_stages():
    released, done = [], []
    later = Recorder("describe")
    options = StreamOptions(release=released.append, release_after=1)
    run_stream(items(6), [StageRunner(Refuser(None, batch_size=2)), later], done.append, options)
    failed = [item for item in done if item.get("error")]
    assert sorted(item["n"] for item in failed) == [1, 3, 5]
    assert all(item["trail"] == [] for item in failed)
    assert sorted(n for batch in later.batches for n in batch) == [0, 2, 4]
    assert sorted(item["n"] for item in released) == list(range(6))  # media freed either way


class PidStage(Stage):
    """A stage whose work would hold the GIL: records which process ran each item; item 99
    kills its worker process."""

    name = "pid"
    holds_gil = True

    def process_item(self, record):
        if record["n"] == 99:
            os._exit(3)
        record["pid"] = os.getpid()


def test_a_stage_that_holds_the_gil_runs_in_worker_processes_with_its_counters():
    lanes = ProcessLanes(2)
    try:
        stage = ProcessStage(PidStage(None, batch_size=2), lanes)
        runner = StageRunner(stage)
        done = []
        run_stream(items(6), [runner], done.append)
        assert sorted(item["n"] for item in done) == list(range(6))
        assert all(item["pid"] != os.getpid() for item in done)  # ran in a worker process
        assert runner.stats.processed == 6 and stage.lanes == 2
        pids = {item["pid"] for item in done}

        dying = [{"n": 99, "trail": []}, {"n": 7, "trail": []}]
        survivors, [killed] = StageRunner(stage).run(dying)  # alone, each item, after the crash
        assert killed["error"]["code"] == "internal_error"
        assert "ChildProcessError: a worker process died" in killed["error"]["message"]
        [survivor] = survivors  # a fresh worker process took the dead one's place
        assert survivor["n"] == 7 and survivor["pid"] != os.getpid()
        pids.add(survivor["pid"])
    finally:
        lanes.close()
    for pid in pids:  # closed with their owner
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
