"""Background work yields the CPU to the frame clock.

Generating, saving and planning can each keep a core busy for seconds; the frame clock,
the event loop and the encoders must not wait for them. On Linux a thread's nice value
is its own (threads it starts inherit it), so a background thread lowers just itself:
the scheduler then gives the cores to the streaming threads whenever they are runnable,
and the background threads the rest, which on an idle server is all of it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("worldstream.world")

BACKGROUND_NICE = 10
"""How much background threads lower their priority (nice steps; 19 is the lowest), unless
``WORLDSTREAM_BACKGROUND_NICE`` says otherwise (0: not at all). At +10 a busy background
thread gets about a tenth of a core that a streaming thread also wants, not starved:
generation still moves on while players stream. The media workers run at +10 too
(``runtime.stream.media_pool``): encoders and generation share what rendering leaves."""


POLICY_ENV = "WORLDSTREAM_BACKGROUND_POLICY"
"""``idle`` (the default) also puts background threads in Linux's ``SCHED_IDLE`` class: a
streaming thread waking up then takes their core at once instead of after their time slice
(on a quiet 2-core machine the attack bench's frame gaps stayed within 2 intervals in 17 of
18 phases, against 4 of 4 bad-message phases over 2 with the nice value alone); with the
cores saturated by 4 players' streaming, generation still got 0.87 of the CPU it got at
nice +10 and finished as many jobs (``docs/benchmarks.md``). A background thread holding the
interpreter lock can then wait longer for a core to give it back. ``normal``: the nice value only."""
POLICY_DEFAULT = "idle"


def background_niceness() -> int:
    """``WORLDSTREAM_BACKGROUND_NICE`` if set, else :data:`BACKGROUND_NICE`."""
    value = os.environ.get("WORLDSTREAM_BACKGROUND_NICE")
    return int(value) if value else BACKGROUND_NICE


def lower_thread_priority(increment: int | None = None) -> bool:
    """Run the calling thread ``increment`` nice steps below the process's main thread (at
    most at 19). Counted from the main thread, not from the thread's own value: a thread
    started by a background thread inherits its lowered value, and must not go lower still.

    ``increment`` defaults to :func:`background_niceness`. Returns True if it was set.
    Elsewhere than Linux the nice value belongs to the whole process, so nothing is changed there.
    """
    increment = background_niceness() if increment is None else increment
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        main = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's id is the process id
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, main + increment))
        if (os.environ.get(POLICY_ENV) or POLICY_DEFAULT) == "idle":
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:  # e.g. a sandbox that forbids it: run at the normal priority
        log.debug("thread %s: priority not lowered (%s)", threading.current_thread().name, exc)
        return False
    return True


def quiet_idle_parallel_workers() -> None:
    """Let numba's OpenMP workers sleep as soon as a parallel kernel ends (``OMP_WAIT_POLICY=passive``,
    unless the environment sets it). GNU OpenMP otherwise spins each worker for about 300,000
    iterations after every parallel region, and fully whenever a process has no more pool
    threads than cores: then three short kernels a frame cost 21 ms of CPU instead of 1.2 ms
    (``docs/benchmarks.md``), stolen from the encoders and the other threads on a 2-core
    machine. Call it before the first parallel kernel: libgomp reads the variable when it loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
