"""Stall watch: when the stream stops, record what every thread of the server was doing.

A diagnostic, off unless ``WORLDSTREAM_STALL_WATCH_MS`` is set (the threshold, in ms).
Then a watchdog thread wakes every few ms and reports a *stall* when one of these is late
by more than the threshold:

* the event loop (a callback it should run every period),
* a marked piece of work (``mark(key, stage)``; the frame loop marks each stage of its
  tick, in the event loop and in the render thread),
* a heartbeat (``beat(key)``; the frame loop beats once per encoded frame of a player, so
  a media worker that stops sending frames back is a stall too),
* the watchdog itself (it could not run: the interpreter lock was held, or the process got
  no CPU).

A report says which clock was late, by how much, which stage was running, and for every
thread of the process its Python stack (innermost frames), its state and how much CPU it
ran and how long it waited for one since the watchdog's previous sample (from
``/proc/self/task/*/schedstat``: a thread that waited on the run queue was starved by the
machine; one that ran held the CPU and perhaps the interpreter lock). It also tells any
garbage collection in progress and the slowest collections since the last report
(``gc.callbacks``). Reports go to the log (``worldstream.stall``, WARNING), and as JSON
lines to ``WORLDSTREAM_STALL_WATCH_FILE`` when set (``bench/attacks.py`` reads them).
As a last resort for a lock held so long the watchdog cannot run at all, ``faulthandler``
dumps every thread's stack to stderr from C when the watchdog has not run for three
thresholds (re-armed once a second, not every wake: see :data:`DUMP_REARM_S`).

A lock probe thread sleeps 5 ms at a time and measures how much later than asked it
woke, less the time it waited on the run queue: what is left is its wait for the
interpreter lock, the wait any thread wanting it at a random moment meets. Once a second
the watch records those waits (``lock_wait``: wakes, total and worst ms, how many were over
the switch interval), its own CPU (``watch_cpu_ms``, spent holding the lock too) and
the CPU the streaming threads (the event loop's, the render threads) ran and waited on the
run queue for (``streaming``); ``bench/attacks.py`` prints them per phase.

Cost when on: one wake-up per period (half the threshold, 20–100 ms) reading a
small ``/proc`` file per thread, 200 probe wake-ups a second, and two ``gc`` callbacks
per collection. When off, :func:`watch` returns a :class:`NoWatch` whose methods do nothing.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("worldstream.stall")

THRESHOLD_ENV = "WORLDSTREAM_STALL_WATCH_MS"
"""The stall threshold in ms; unset or 0: no watch."""
FILE_ENV = "WORLDSTREAM_STALL_WATCH_FILE"
"""Where reports are appended as JSON lines (optional)."""
STACK_DEPTH = 10  # innermost frames per thread in a report
OWN_FRAMES = 4  # and this project's innermost frames above those
OWN_PACKAGES = ("runtime", "protocol", "bench")
SLOW_GC_S = 0.010  # collections this slow, and every full one, are recorded
BEAT_FORGET_S = 30.0  # a heartbeat not beaten for this long belongs to someone gone
SAMPLES_S = 5.0  # per-thread CPU samples kept (a stall's CPU is counted from the one before it started)
LOCK_PROBE_S = 0.005  # the interpreter-lock probe sleeps this long between samples
LOCK_WAIT_EVERY_S = 1.0  # its waits are summed and recorded this often
DUMP_REARM_S = 1.0
"""``faulthandler`` is re-armed this often, not at every wake: re-arming cancels and joins
its C thread, then starts a new one, all holding the interpreter lock; on the shared 2-core
machine (load 16) that held it 0.15 ms on average and up to 10 ms, which at every wake
(30 ms at a 60 ms threshold) is up to 33 such holds a second."""


@dataclass
class _Clock:
    """One watched thing: when it last moved, and whether its current stall is reported."""

    what: str
    since: float
    stage: str | None = None
    thread: str | None = None
    reported: bool = False
    reports: int = 0  # reports so far of its current stall (the next comes at threshold x 2**reports)


@dataclass
class _LockWaits:
    """The lock probe's waits for the interpreter lock since the last record (seconds)."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0
    over_switch: int = 0  # waits longer than the interpreter's switch interval

    def add(self, wait: float) -> None:
        self.count += 1
        self.total += wait
        self.worst = max(self.worst, wait)
        self.over_switch += wait > sys.getswitchinterval()

    def record(self) -> dict:
        return {"wakes": self.count, "ms": round(1e3 * self.total, 2), "worst_ms": round(1e3 * self.worst, 2), "over_switch": self.over_switch}


@dataclass
class _GcStats:
    started: float | None = None
    generation: int | None = None
    thread: str | None = None
    slow: deque = field(default_factory=lambda: deque(maxlen=16))  # (generation, ms, collected, thread) since the last report
    new: deque = field(default_factory=lambda: deque(maxlen=256))  # the same, not yet written as records of their own
    count: list = field(default_factory=lambda: [0, 0, 0])
    seconds: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    worst: list = field(default_factory=lambda: [0.0, 0.0, 0.0])


class NoWatch:
    """The watch when it is off: every method does nothing."""

    enabled = False
    reports: list = []

    def mark(self, key: str, stage: str | None) -> None:
        pass

    def beat(self, key: str) -> None:
        pass

    def forget(self, key: str) -> None:
        pass

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        return lambda: None

    def stop(self) -> None:
        pass


class StallWatch(NoWatch):
    """The watchdog (see the module docstring).

    A stall is reported when it passes the threshold, and again each time its length
    doubles (stacks through a long stall), and once more when it is over, with what every
    thread ran and waited for over its whole length.

    Args:
        threshold_s: a clock late by more than this is a stall.
        path: append each report to this file as one JSON line (None: log only).
        period_s: how often the watchdog wakes (default: half the threshold, 20–100 ms).
        dump_stuck: arm ``faulthandler`` to dump every stack from C when the watchdog
            itself has not run for three thresholds.
        log_reports: log each report (False: only keep them, for a caller that prints them).
    """

    enabled = True

    def __init__(
        self, threshold_s: float, path: str | None = None, period_s: float | None = None, dump_stuck: bool = True, log_reports: bool = True
    ) -> None:
        self.threshold_s = threshold_s
        self.period_s = period_s or min(0.1, max(0.02, threshold_s / 2))
        self.path = path
        self.dump_stuck = dump_stuck
        # Re-armed every DUMP_REARM_S: it fires when this thread has not run for three
        # thresholds and a period, or up to DUMP_REARM_S more.
        self._dump_after_s = 3 * threshold_s + self.period_s + DUMP_REARM_S
        self.log_reports = log_reports
        self.reports: list[dict] = []  # every report, newest last (bounded)
        self._clocks: dict[str, _Clock] = {}
        self._ended: deque[tuple[_Clock, float]] = deque(maxlen=64)  # stalls over, for the watchdog to report
        self._gc = _GcStats()
        self._stop = threading.Event()
        # (monotonic time, {(pid, thread id): (ns on a CPU, ns waiting for one)}), the last few seconds
        self._samples: deque[tuple[float, dict]] = deque(maxlen=int(SAMPLES_S / self.period_s) + 1)
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._lock_waits = _LockWaits()  # the probe's, since the watchdog last recorded them
        self._probe = threading.Thread(target=self._probe_lock, name="stall-watch-lock-probe", daemon=True)
        gc.callbacks.append(self._on_gc)
        self._compiles: deque[tuple[str, str, float, str]] = deque(maxlen=256)  # (function, argument types, ms, thread)
        self._numba_listener = _watch_numba_compiles(self._compiles)
        self._thread.start()
        self._probe.start()

    # ------------------------------------------------------------------ what the watched code calls
    def mark(self, key: str, stage: str | None) -> None:
        """``key`` (say ``frame world-a``) entered ``stage``; None: it is idle (not watched)."""
        now = time.monotonic()
        clock = self._clocks.get(key)
        if clock is None or clock.stage != stage:
            if clock is not None and clock.reported:
                self._ended.append((clock, now))
            self._clocks[key] = _Clock(key, now, stage, threading.current_thread().name)

    def beat(self, key: str) -> None:
        """``key`` is alive now (a heartbeat): it stalls when not beaten for the threshold."""
        now = time.monotonic()
        clock = self._clocks.get(key)
        if clock is not None and clock.reported:
            self._ended.append((clock, now))
            clock = None
        if clock is None:
            self._clocks[key] = _Clock(key, now, "heartbeat", threading.current_thread().name)
        else:
            clock.since = now

    def forget(self, key: str) -> None:
        self._clocks.pop(key, None)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Watch ``loop``: a callback every period beats ``event loop``. Returns the function
        that stops watching it (call it before the loop stops)."""
        key = "event loop"
        stopped = threading.Event()

        def beat() -> None:
            if stopped.is_set() or self._stop.is_set():
                return
            self.beat(key)
            loop.call_later(self.period_s, beat)

        def unwatch() -> None:
            stopped.set()
            self.forget(key)

        loop.call_soon_threadsafe(beat)
        return unwatch

    def stop(self) -> None:
        self._stop.set()
        try:
            gc.callbacks.remove(self._on_gc)
        except ValueError:
            pass
        self._thread.join(2)
        self._probe.join(2)
        if self._numba_listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._numba_listener)
        if self.dump_stuck:
            faulthandler.cancel_dump_traceback_later()

    # ------------------------------------------------------------------ the watchdog thread
    def _run(self) -> None:
        last = time.monotonic()
        self._samples.append((last, _schedstat()))
        armed = recorded = last
        cost = 0.0  # CPU seconds this thread spent checking since the last record
        if self.dump_stuck:
            faulthandler.dump_traceback_later(self._dump_after_s, exit=False)
        while not self._stop.is_set():
            if self.dump_stuck and last - armed >= DUMP_REARM_S:  # fires only if this thread cannot run
                faulthandler.dump_traceback_later(self._dump_after_s, exit=False)
                armed = last
            self._stop.wait(self.period_s)
            now = time.monotonic()
            late = now - last - self.period_s
            last = now
            try:
                started = time.thread_time()
                self._check(now, late)
                cost += time.thread_time() - started
                if now - recorded >= LOCK_WAIT_EVERY_S:
                    waits, self._lock_waits = self._lock_waits, _LockWaits()
                    # Its own CPU too: nearly all of it Python, run holding the interpreter lock.
                    self._keep({"time": time.time(), "pid": os.getpid(), "lock_wait": waits.record(), "watch_cpu_ms": round(1e3 * cost, 1),
                                "streaming": self._streaming_cpu(recorded)})
                    recorded, cost = now, 0.0
            except Exception:  # a diagnostic must never take the server down
                log.exception("stall watch failed")

    def _streaming_cpu(self, since: float) -> dict:
        """The streaming threads (the event loop's, the render threads) since monotonic time
        ``since``: ms each ran and ms each waited on the run queue for a CPU, summed."""
        if len(self._samples) < 2:
            return {}
        before, after = self._cpu_since(since), self._samples[-1][1]
        me = os.getpid()
        out = {"ran_ms": 0.0, "waited_ms": 0.0}
        for t in threading.enumerate():
            if t.native_id is None or not (t.name == "MainThread" or t.name.startswith("render")):
                continue
            run, wait = after.get((me, t.native_id), (0, 0))
            run0, wait0 = before.get((me, t.native_id), (run, wait))
            out["ran_ms"] += (run - run0) / 1e6
            out["waited_ms"] += (wait - wait0) / 1e6
        return {k: round(v, 1) for k, v in out.items()}

    def _probe_lock(self) -> None:
        """Sleep :data:`LOCK_PROBE_S` at a time; each time woken later than its time on the
        run queue explains, it waited for the interpreter lock: that wait is what any thread
        wanting the lock at a random moment meets (the event loop's, the render thread)."""
        while not self._stop.is_set():
            queued, asleep = _own_run_queue_s(), time.monotonic()
            time.sleep(LOCK_PROBE_S)
            woke = time.monotonic()
            self._lock_waits.add(max(0.0, woke - asleep - LOCK_PROBE_S - (_own_run_queue_s() - queued)))

    def _check(self, now: float, late: float) -> None:
        stalled = []
        if late > self.threshold_s:  # this thread could not run: the interpreter lock, or no CPU
            watchdog = _Clock("watchdog", now - late, "sleeping", "stall-watch", reported=True)
            stalled.append((watchdog, watchdog.since))
        for clock in list(self._clocks.values()):
            age = now - clock.since
            if clock.stage == "heartbeat" and age > BEAT_FORGET_S:
                self._clocks.pop(clock.what, None)
            elif clock.stage is not None and age > self.threshold_s * 2 ** clock.reports:
                stalled.append((clock, clock.since))  # since as of now: a beat may move it meanwhile
        sample = _schedstat()
        if stalled:
            self._report(stalled, now, sample)
        while self._compiles:
            name, args, ms, thread = self._compiles.popleft()
            self._keep({"time": time.time(), "pid": os.getpid(), "compile": {"function": name, "args": args, "ms": ms, "thread": thread}})
            if self.log_reports:
                log.warning("numba compiled %s(%s) in %.0f ms in thread %s, holding its compiler lock", name, args, ms, thread)
        while self._gc.new:
            gen, ms, collected, thread = self._gc.new.popleft()
            self._keep({"time": time.time(), "pid": os.getpid(), "gc": {"generation": gen, "ms": ms, "collected": collected, "thread": thread}})
        while self._ended:
            clock, ended = self._ended.popleft()
            self._report_end(clock, ended, sample)
        self._samples.append((now, sample))

    def _cpu_since(self, t: float) -> dict:
        """The sample taken last before monotonic time ``t`` (the oldest kept if none)."""
        best = self._samples[0][1] if self._samples else {}
        for at, sample in self._samples:
            if at > t:
                break
            best = sample
        return best

    def _report(self, stalled: list[tuple[_Clock, float]], now: float, sample: dict) -> None:
        for clock, _ in stalled:
            clock.reported = True
            clock.reports += 1
        since = min(t for _, t in stalled)
        slow_gc = []
        while self._gc.slow:
            slow_gc.append(self._gc.slow.popleft())
        started = self._gc.started
        gc_now = None if started is None else {
            "generation": self._gc.generation, "ms": round(1e3 * (now - started), 1), "thread": self._gc.thread,
        }
        report = {
            "time": time.time(),
            "pid": os.getpid(),
            "late": [{"what": c.what, "stage": c.stage, "thread": c.thread, "ms": round(1e3 * (now - t), 1)} for c, t in stalled],
            "cpu_window_ms": round(1e3 * (now - since), 1),
            "gc_running": gc_now,
            "slow_gc": [{"generation": g, "ms": ms, "collected": n, "thread": t} for g, ms, n, t in slow_gc],
            "threads": _threads(self._cpu_since(since), sample, stacks=True),
        }
        self._keep(report)
        if self.log_reports:
            log.warning("stall: %s", format_report(report))

    def _report_end(self, clock: _Clock, ended: float, sample: dict) -> None:
        """A reported stall is over: how long it lasted, and what every thread ran and waited
        for over its whole length (no stacks: they are of now, not of then)."""
        report = {
            "time": time.time(),
            "pid": os.getpid(),
            "ended": {"what": clock.what, "stage": clock.stage, "thread": clock.thread, "ms": round(1e3 * (ended - clock.since), 1)},
            "cpu_window_ms": round(1e3 * (time.monotonic() - clock.since), 1),
            "threads": _threads(self._cpu_since(clock.since), sample, stacks=False),
        }
        self._keep(report)
        if self.log_reports:
            log.warning("stall over: %s", format_report(report))

    def _keep(self, report: dict) -> None:
        self.reports.append(report)
        del self.reports[:-200]
        if self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(report) + "\n")
            except OSError as exc:
                log.debug("stall watch: cannot write %s: %s", self.path, exc)

    # ------------------------------------------------------------------ garbage collection
    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.monotonic()
        gen = info.get("generation", 0)
        if phase == "start":
            self._gc.started, self._gc.generation, self._gc.thread = now, gen, threading.current_thread().name
            return
        started = self._gc.started
        self._gc.started = None
        if started is None:
            return
        took = now - started
        self._gc.count[gen] += 1
        self._gc.seconds[gen] += took
        self._gc.worst[gen] = max(self._gc.worst[gen], took)
        if took >= SLOW_GC_S or gen == 2:
            # deque appends need no lock: one taken here could be held by the thread this collection interrupted
            event = (gen, round(1e3 * took, 1), info.get("collected", 0), threading.current_thread().name)
            self._gc.slow.append(event)
            self._gc.new.append(event)

    def gc_summary(self) -> dict:
        """Collections so far per generation: count, total and worst ms."""
        g = self._gc
        return {gen: {"count": g.count[gen], "ms": round(1e3 * g.seconds[gen], 1), "worst_ms": round(1e3 * g.worst[gen], 1)} for gen in range(3)}


def _watch_numba_compiles(out: deque):
    """Record every numba compilation (a kernel met with argument types it has no machine
    code for, in memory or in its cache) into ``out``: it holds numba's compiler lock, and
    the interpreter lock for much of it, for up to seconds. Only when numba is loaded
    already (the server loads it at start); returns the listener (None: not watched)."""
    if "numba" not in sys.modules:
        return None
    from numba.core import event

    class CompileListener(event.Listener):
        def __init__(self) -> None:
            self.started: dict[int, float] = {}

        def on_start(self, ev) -> None:
            self.started[threading.get_ident()] = time.monotonic()

        def on_end(self, ev) -> None:
            t0 = self.started.pop(threading.get_ident(), None)
            if t0 is None:
                return
            data = ev.data or {}
            dispatcher = data.get("dispatcher")
            name = getattr(getattr(dispatcher, "py_func", None), "__qualname__", str(dispatcher))
            args = ", ".join(str(a) for a in data.get("args") or ())
            out.append((name, args[:300], round(1e3 * (time.monotonic() - t0), 1), threading.current_thread().name))

    listener = CompileListener()
    event.register("numba:compile", listener)
    return listener


def _child_pids() -> list[int]:
    """This process's child processes (media workers, generation workers), from ``/proc``."""
    pids = []
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids += [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                continue
    except OSError:  # not Linux
        pass
    return pids


def _schedstat() -> dict[tuple[int, int], tuple[int, int]]:
    """Per thread of this process and of its children, by (pid, thread id): (ns it ran on a
    CPU, ns it waited on a run queue)."""
    out = {}
    for pid in [os.getpid(), *_child_pids()]:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # not Linux, or gone
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    run, wait, _ = f.read().split()
                out[pid, int(tid)] = (int(run), int(wait))
            except (OSError, ValueError):
                continue
    return out


def _own_run_queue_s() -> float:
    """Seconds the calling thread has waited on a run queue (for a CPU) so far; 0 where unknown."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _thread_state(pid: int, tid: int) -> tuple[str, str, int]:
    """(name, state letter, nice) of a thread, from ``/proc``; empty when unknown."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
        name = text[text.index("(") + 1:text.rindex(")")]
        rest = text[text.rindex(")") + 2:].split()
        return name, rest[0], int(rest[16])
    except (OSError, ValueError, IndexError):
        return "", "", 0


def _threads(before: dict, after: dict, stacks: bool) -> list[dict]:
    """Every thread of this process and its children: name, state, nice, ms it ran and
    waited for a CPU from sample ``before`` to ``after`` (``_schedstat``), and with
    ``stacks`` its Python stack (innermost last) for this process's threads running Python."""
    frames = sys._current_frames() if stacks else {}
    me = os.getpid()
    by_native = {t.native_id: t for t in threading.enumerate() if t.native_id is not None}
    out = []
    for (pid, tid), (run, wait) in sorted(after.items()):
        run0, wait0 = before.get((pid, tid), (run, wait))
        comm, state, nice = _thread_state(pid, tid)
        thread = by_native.get(tid) if pid == me else None
        frame = frames.get(thread.ident) if thread is not None else None
        stack = _stack(frame) if frame is not None else []
        out.append({
            "pid": pid, "tid": tid, "name": thread.name if thread is not None else comm, "state": state, "nice": nice,
            "ran_ms": round((run - run0) / 1e6, 1), "waited_ms": round((wait - wait0) / 1e6, 1), "stack": stack,
        })
    return out


def _stack(frame) -> list[str]:
    """A thread's stack, outermost first: its innermost frames, and above them the innermost
    few of this project's own (a thread deep inside a library, say numba compiling, then
    still shows which of our calls got it there)."""
    frames = traceback.extract_stack(frame)
    inner = frames[-STACK_DEPTH:]
    ours = [f for f in frames[:-STACK_DEPTH] if any(f"/{p}/" in f.filename for p in OWN_PACKAGES)][-OWN_FRAMES:]
    lines = [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in ours]
    if ours and len(frames) > STACK_DEPTH + len(ours):
        lines.append("...")
    return lines + [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in inner]


def _short(path: str) -> str:
    """A source path as a report shows it: from the package (``asyncio/runners.py``,
    ``runtime/world/world.py``), not the install folder."""
    for marker in ("site-packages/", "/lib/python3", os.getcwd() + "/"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3" else rest
    return path


def verdict(report: dict) -> str:
    """One line on where a stall's time went, from the threads' CPU over its window: the
    streaming threads (the event loop's, the render thread) waiting for a CPU means the
    machine was short of CPU; a garbage collection as long as a good part of the window
    means the collector; otherwise they were blocked (a lock, the interpreter lock held by
    a busy thread, or I/O), and the busiest thread is named. When only encoded frames were
    late (``video ...``: the pictures were offered on time) and a child process's thread (a
    media worker's) waited for a CPU for much of it, that is said first."""
    window = report.get("cpu_window_ms") or 0.0
    if window <= 0:
        return ""
    mine = [t for t in report.get("threads", []) if t["pid"] == report.get("pid")]
    streaming = [t for t in mine if t["name"] == "MainThread" or t["name"].startswith("render")]
    waited = max((t["waited_ms"] for t in streaming), default=0.0)
    ran = sum(t["ran_ms"] for t in mine)
    others = [t for t in report.get("threads", []) if t["pid"] != report.get("pid")]
    child_waited = max((t["waited_ms"] for t in others), default=0.0)
    busiest = max(mine, key=lambda t: t["ran_ms"], default=None)
    gc_ms = max([g["ms"] for g in report.get("slow_gc", [])] + [(report.get("gc_running") or {}).get("ms", 0.0)], default=0.0)
    head = (f"over {window:.0f} ms this process ran {ran:.0f} ms of CPU (its children {sum(t['ran_ms'] for t in others):.0f}), "
            f"its streaming threads waited up to {waited:.0f} ms for one (its children's up to {child_waited:.0f})")
    late = [x["what"] for x in report.get("late", [])] or [report.get("ended", {}).get("what", "")]
    if late and all(what.startswith("video ") for what in late) and child_waited >= 0.4 * window:
        why = f"only encoded frames late, and a media worker's thread waited {child_waited:.0f} ms for a CPU"
    elif waited >= 0.4 * window:
        why = "short of CPU (the machine)"
    elif gc_ms >= 0.3 * window:
        why = f"garbage collection ({gc_ms:.0f} ms)"
    elif busiest is not None:
        why = f"blocked (a lock, the interpreter lock or I/O); busiest thread {busiest['name']} ran {busiest['ran_ms']:.0f} ms"
    else:
        why = "blocked"
    return f"{head}: {why}"


def format_report(report: dict) -> str:
    """A report as text: what was late (or how long a stall lasted), where its time went,
    gc, then the threads that ran, waited or run Python."""
    lines = []
    for late in report.get("late", []):
        lines.append(f"{late['what']} late by {late['ms']:.0f} ms (stage {late['stage']}, thread {late['thread']})")
    if "ended" in report:
        e = report["ended"]
        lines.append(f"{e['what']} moved again after {e['ms']:.0f} ms (stage {e['stage']}, thread {e['thread']})")
    line = verdict(report)
    if line:
        lines.append(f"  {line}")
    if report.get("gc_running"):
        g = report["gc_running"]
        lines.append(f"  gc generation {g['generation']} running for {g['ms']} ms in {g['thread']}")
    for g in report.get("slow_gc", []):
        lines.append(f"  slow gc: generation {g['generation']} {g['ms']} ms ({g['collected']} collected, {g['thread']})")
    for t in report.get("threads", []):
        if not (t["stack"] or t["ran_ms"] >= 1 or t["waited_ms"] >= 1):
            continue
        where = "" if t["pid"] == report.get("pid") else f" (process {t['pid']})"
        lines.append(f"  thread {t['name']} [{t['tid']}]{where} {t['state']} nice {t['nice']}: ran {t['ran_ms']} ms, waited for a CPU {t['waited_ms']} ms")
        lines.extend(f"      {s}" for s in t["stack"][-4:])
    return "\n".join(lines)


_WATCH: NoWatch | None = None


def watch() -> NoWatch:
    """The process's watch: a running :class:`StallWatch` when ``WORLDSTREAM_STALL_WATCH_MS``
    is set (started on the first call), else a :class:`NoWatch`."""
    global _WATCH
    if _WATCH is None:
        try:
            threshold_ms = float(os.environ.get(THRESHOLD_ENV) or 0)
        except ValueError:
            log.warning("%s must be a number of ms; stall watch off", THRESHOLD_ENV)
            threshold_ms = 0
        _WATCH = StallWatch(threshold_ms / 1e3, os.environ.get(FILE_ENV) or None) if threshold_ms > 0 else NoWatch()
        if _WATCH.enabled:
            log.info("stall watch on: reporting anything late by more than %.0f ms", threshold_ms)
    return _WATCH
