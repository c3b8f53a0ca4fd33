"""The stall watch (runtime/stall_watch.py) and the frozen start-up heap (runtime/heap.py).

Real threads, a real event loop and the real collector; the stalls are made on purpose
(a blocked loop, a slow stage) and last far longer than the threshold, so the assertions
hold on a loaded machine too: they check what a report says, never how fast anything ran.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time

import numba  # loaded before any watch starts, as in the server: compiles are watched only then
import pytest

from runtime import stall_watch
from runtime.heap import settle_heap
from runtime.stall_watch import NoWatch, StallWatch, format_report, verdict

THRESHOLD_S = 0.1
HOLD_S = 0.8  # eight thresholds: reported however late the watchdog wakes on a busy machine


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _hold_the_loop() -> None:
    time.sleep(HOLD_S)  # a blocking call on the event loop, as a bug would make


@pytest.fixture
def watch(tmp_path):
    w = StallWatch(THRESHOLD_S, path=str(tmp_path / "stalls.jsonl"), log_reports=False, dump_stuck=False)
    yield w
    w.stop()


def _late(watch: StallWatch, what: str) -> list[dict]:
    return [r for r in list(watch.reports) if any(late["what"] == what for late in r.get("late", []))]


def test_a_blocked_event_loop_is_reported_with_the_blocking_stack(watch, tmp_path):
    async def main():
        unwatch = watch.watch_loop(asyncio.get_running_loop())
        await asyncio.sleep(3 * THRESHOLD_S)
        _hold_the_loop()
        await asyncio.sleep(3 * THRESHOLD_S)
        unwatch()

    asyncio.run(main())
    _wait_for(lambda: any(r.get("ended", {}).get("what") == "event loop" for r in list(watch.reports)))
    reports = _late(watch, "event loop")
    assert reports, watch.reports
    main_thread = [t for t in reports[0]["threads"] if t["name"] == "MainThread"]
    assert any("_hold_the_loop" in frame for frame in main_thread[0]["stack"]), main_thread
    ended = [r["ended"] for r in watch.reports if "ended" in r and r["ended"]["what"] == "event loop"]
    assert ended[0]["ms"] >= 1e3 * THRESHOLD_S
    # The same reports, one JSON object a line, in the file.
    lines = [json.loads(line) for line in (tmp_path / "stalls.jsonl").read_text().splitlines()]
    assert any("late" in r for r in lines)
    assert "event loop late by" in format_report(reports[0])


def test_a_marked_stage_that_runs_long_is_reported_with_its_name_and_thread(watch):
    def slow_render():
        watch.mark("frame w", "render")
        time.sleep(HOLD_S)
        watch.mark("frame w", None)  # idle: no longer watched

    worker = threading.Thread(target=slow_render, name="render_0")
    worker.start()
    worker.join()
    _wait_for(lambda: any("ended" in r for r in list(watch.reports)))
    late = [x for r in _late(watch, "frame w") for x in r["late"] if x["what"] == "frame w"]
    assert late and late[0]["stage"] == "render" and late[0]["thread"] == "render_0"
    # Reported again as the stall doubles (0.1, 0.2, 0.4 s): stacks through a long stall.
    assert len(late) >= 2
    render = [t for t in _late(watch, "frame w")[0]["threads"] if t["name"] == "render_0"]
    assert any("slow_render" in frame for frame in render[0]["stack"])
    def stalls():
        return [r for r in list(watch.reports) if "late" in r or "ended" in r]

    before = len(stalls())
    time.sleep(6 * THRESHOLD_S)  # idle now: nothing more to report
    assert len(stalls()) == before


def test_a_heartbeat_that_stops_is_a_stall_and_a_forgotten_one_is_not(watch):
    watch.beat("video a")
    watch.beat("video b")
    watch.forget("video b")  # its player left
    _wait_for(lambda: _late(watch, "video a"))
    assert not _late(watch, "video b")
    watch.beat("video a")  # frames again: the stall is over
    _wait_for(lambda: any(r.get("ended", {}).get("what") == "video a" for r in list(watch.reports)))


def test_full_collections_are_recorded(watch):
    gc.collect()
    _wait_for(lambda: any(r.get("gc", {}).get("generation") == 2 for r in list(watch.reports)))
    record = next(r["gc"] for r in watch.reports if "gc" in r)
    assert record["ms"] >= 0 and record["thread"] == "MainThread"
    assert watch.gc_summary()[2]["count"] >= 1


def test_the_watch_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv(stall_watch.THRESHOLD_ENV, raising=False)
    monkeypatch.setattr(stall_watch, "_WATCH", None)
    w = stall_watch.watch()
    assert isinstance(w, NoWatch) and not w.enabled
    w.mark("frame w", "render")  # does nothing, costs nothing
    monkeypatch.setattr(stall_watch, "_WATCH", None)


def test_the_watch_starts_from_the_environment(monkeypatch):
    monkeypatch.setenv(stall_watch.THRESHOLD_ENV, "250")
    monkeypatch.setattr(stall_watch, "_WATCH", None)
    w = stall_watch.watch()
    try:
        assert w.enabled and w.threshold_s == pytest.approx(0.25)
        assert stall_watch.watch() is w  # one per process
    finally:
        w.stop()
        monkeypatch.setattr(stall_watch, "_WATCH", None)


def test_settle_heap_freezes_what_lives_now():
    keep = [object() for _ in range(10)]
    try:
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is keep for o in gc.get_objects(2))  # the frozen ones are out of the collector's walks
    finally:
        gc.unfreeze()


def test_numba_compiles_are_recorded_with_the_kernel_and_its_argument_types(watch):
    @numba.njit(nogil=True)
    def doubled(x):
        return 2 * x

    doubled(3.5)
    _wait_for(lambda: any("compile" in r for r in list(watch.reports)))
    record = next(r["compile"] for r in watch.reports if "compile" in r)
    assert record["function"].endswith("doubled") and record["args"] == "float64" and record["thread"] == "MainThread"


def _thread(name, ran, waited, pid=1):
    return {"pid": pid, "tid": 1, "name": name, "state": "S", "nice": 0, "ran_ms": ran, "waited_ms": waited, "stack": []}


def test_the_verdict_says_where_a_stall_went():
    def report(late, threads, **extra):
        return {"pid": 1, "cpu_window_ms": 200.0, "late": [{"what": late, "stage": "x", "thread": "MainThread", "ms": 200.0}],
                "threads": threads, **extra}

    starved = report("event loop", [_thread("MainThread", 5, 150), _thread("render_0", 5, 20)])
    assert "short of CPU" in verdict(starved)
    collected = report("event loop", [_thread("MainThread", 180, 5)], slow_gc=[{"generation": 2, "ms": 170.0, "collected": 9, "thread": "MainThread"}])
    assert "garbage collection (170 ms)" in verdict(collected)
    blocked = report("frame w", [_thread("MainThread", 1, 2), _thread("render_0", 1, 2), _thread("world-w_0", 190, 5)])
    assert "blocked" in verdict(blocked) and "world-w_0 ran 190 ms" in verdict(blocked)
    encoder = report("video p", [_thread("MainThread", 5, 10), _thread("python", 3, 120, pid=2)])
    assert "media worker's thread waited 120 ms" in verdict(encoder)


def test_the_interpreter_lock_held_in_c_is_measured_by_the_lock_probe(watch):
    """A C call that never releases the interpreter lock (``sum`` over a range: no Python
    between its steps) keeps the lock probe from waking: the watch records a wait for the
    lock at least about as long as the call's own CPU time (its wall time is no shorter,
    however busy the machine; the probe's own time on the run queue is not counted). And the
    watch records its own CPU, which it spends holding the lock too."""
    time.sleep(3 * stall_watch.LOCK_PROBE_S)  # the probe is asleep, waiting to wake
    cpu = time.thread_time()
    sum(range(30_000_000))
    held_ms = 1e3 * (time.thread_time() - cpu)
    _wait_for(lambda: [r for r in list(watch.reports) if "lock_wait" in r and r["time"] > time.time() - 30
                       and r["lock_wait"]["worst_ms"] >= 0.5 * held_ms], timeout=30)
    records = [r for r in list(watch.reports) if "lock_wait" in r]
    assert all(r["lock_wait"]["wakes"] >= 1 and r["watch_cpu_ms"] >= 0 for r in records), records
    assert any(r["lock_wait"]["over_switch"] >= 1 for r in records), records
    # The streaming threads' CPU is recorded too: here the main thread, which ran the sum.
    assert sum(r["streaming"].get("ran_ms", 0.0) for r in records if r.get("streaming")) >= 0.5 * held_ms, records
