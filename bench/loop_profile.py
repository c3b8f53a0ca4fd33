"""Where an attack's cost to the server's event loop goes, function by function.

Runs a server in this process (no players: its event loop then does nothing but what the
attack makes it do), starts one ``bench.attacks`` attacker process for ``--duration`` s and
profiles the event loop's thread meanwhile with ``cProfile`` timed by that thread's own CPU
clock (``time.thread_time``): what the numbers count is the loop's CPU, which other work
on the machine hardly changes, not wall time. Prints the loop's CPU over the phase, the
functions that took most of it (own time and with what they call), the garbage
collections in the loop's thread, and the server's counters of what the attack did
(``/metrics``: closes, refusals, errors, large messages read).

Profiling slows Python-heavy code (each call is timed) and leaves C work such as copying
bytes as it is: the split is indicative, the call counts exact.

Example::

    .venv/bin/python -m bench.loop_profile --attack bad_messages --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import multiprocessing as mp
import pstats
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

from bench.attacks import ATTACKS, _attack_process
from bench.common import describe_machine, write_json
from bench.stream import run_loop
from runtime.native_heap import keep_large_buffers

COUNTERS = ("worldstream_connections_closed_total", "worldstream_large_messages_total", "worldstream_connections_refused_total", "worldstream_protocol_errors_total",
            "worldstream_messages_dropped_total", "worldstream_read_holds_total", "worldstream_limit_refusals_total")


STACK_FRAMES = 5
WINDOW_S = 0.075
"""The timeline's window: the most loop CPU within any such stretch (two frame intervals at 30 fps, plus a bit)."""


class CpuTimeline:
    """A thread's CPU time, sampled every 2 ms from ``/proc`` by a thread of its own."""

    def __init__(self, thread: threading.Thread, every_s: float = 0.002) -> None:
        self.path = f"/proc/self/task/{thread.native_id}/schedstat"
        self.ident = thread.ident
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []  # (monotonic s, ns on a CPU)
        self.stacks: list[str] = []  # the thread's innermost frames at each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with open(self.path, "rb") as f:
                self.samples.append((time.monotonic(), int(f.read().split()[0])))
            frame = sys._current_frames().get(self.ident)
            self.stacks.append(" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                          for f in reversed(traceback.extract_stack(frame)[-STACK_FRAMES:])) if frame else "")

    def busiest(self, window_s: float, t0: float, count: int = 5) -> list[dict]:
        """The ``count`` busiest non-overlapping windows of ``window_s``: when (s after ``t0``)
        and the CPU ms the thread ran in them."""
        s = self.samples
        found, j = [], 0
        for i in range(len(s)):
            while s[i][0] - s[j][0] > window_s:
                j += 1
            found.append((s[i][1] - s[j][1], s[j][0], s[i][0]))
        out: list[dict] = []
        for ns, a, b in sorted(found, reverse=True):
            if len(out) == count:
                break
            if all(b < w["from_s"] + t0 or a > w["to_s"] + t0 for w in out):
                out.append({"from_s": round(a - t0, 3), "to_s": round(b - t0, 3), "cpu_ms": round(ns / 1e6, 1), "stacks": self._stacks(a, b)})
        return out

    def _stacks(self, a: float, b: float) -> list[tuple[str, float]]:
        """The thread's stacks between monotonic ``a`` and ``b``, each with the CPU ms it ran
        up to the sample that saw it (the sampler takes the interpreter lock between two
        bytecodes: a long C call shows as the Python line after it)."""
        ms: dict[str, float] = {}
        for k in range(1, len(self.samples)):
            if a < self.samples[k][0] <= b:
                ran = (self.samples[k][1] - self.samples[k - 1][1]) / 1e6
                ms[self.stacks[k]] = ms.get(self.stacks[k], 0.0) + ran
        return sorted(((st, round(v, 1)) for st, v in ms.items() if v >= 0.5), key=lambda x: -x[1])


def counters(url: str) -> dict[str, float]:
    """The server's counters of what an attack did (``COUNTERS``), by label."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(COUNTERS):
            name, value = line.rsplit(" ", 1)
            out[name.replace("worldstream_", "")] = float(value)
    return out


class ReadCounts:
    """Bytes the server's WebSocket connections took in, and messages over ``MAX_MESSAGE_BYTES``
    they handed to the server's code (counted by wrapping websockets' stream reader and
    ``Connection._handle`` in this process)."""

    def __init__(self) -> None:
        from websockets.streams import StreamReader

        from protocol import messages as m
        from runtime.stream.websocket import Connection

        self.bytes_in = 0
        self.large_handled = 0
        feed, handle = StreamReader.feed_data, Connection._handle

        def feed_data(reader, data) -> None:
            self.bytes_in += len(data)
            feed(reader, data)

        async def _handle(conn, data):
            self.large_handled += len(data) > m.MAX_MESSAGE_BYTES
            return await handle(conn, data)

        StreamReader.feed_data, Connection._handle = feed_data, _handle


async def profile_attack(attack: str, duration: float, workdir: Path, top: int) -> dict:
    from runtime.app import build_parser, config_from_args, run

    args = build_parser().parse_args(["--port", "0", "--renderer", "cpu", "--generator", "procedural", "--worlds", str(workdir / "worlds"),
                                      "--resolution", "320x180", "--trust-proxy", "127.0.0.1", "--log-level", "warning"])
    config = config_from_args(args, False)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    server = asyncio.create_task(run(config, ready=ready.set_result, stop=stop, freeze_heap=True))
    url = await ready
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_attack_process, args=(attack, url, "none", go, duration, out), daemon=True)
    proc.start()
    await asyncio.to_thread(out.get, True, 120)
    before = await asyncio.to_thread(counters, url)
    reads = ReadCounts()
    collections: list[tuple[int, float]] = []
    loop_thread = threading.get_ident()
    started: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if threading.get_ident() != loop_thread:
            return
        if phase == "start":
            started[:] = [time.thread_time()]
        elif started:
            collections.append((info["generation"], 1e3 * (time.thread_time() - started[0])))

    sampler = CpuTimeline(threading.current_thread())
    start_at = time.time() + 0.3
    go.put(start_at)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    profiler = cProfile.Profile(time.thread_time)
    gc.callbacks.append(on_gc)
    cpu0, wall0 = time.thread_time(), time.monotonic()
    sampler.start()
    profiler.enable()
    await asyncio.sleep(duration + 0.5)  # the attack's last messages are handled too
    profiler.disable()
    sampler.stop()
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    gc.callbacks.remove(on_gc)
    stats = await asyncio.to_thread(out.get, True, 60)
    await asyncio.to_thread(proc.join, 10)
    after = await asyncio.to_thread(counters, url)
    stop.set()
    await server
    with open("/proc/self/status") as f:
        memory = {k: round(int(v.split()[0]) / 1024, 1) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
    text = io.StringIO()
    ps = pstats.Stats(profiler, stream=text)
    ps.sort_stats("tottime").print_stats(top)
    ps.sort_stats("cumulative").print_stats(top)
    return {
        "attack": attack, "duration_s": duration, "loop_cpu_ms": round(1e3 * cpu, 1), "wall_s": round(wall, 2),
        "gc": [{"generation": g, "ms": round(ms, 2)} for g, ms in collections],
        "rss_mib": memory.get("VmRSS"), "peak_rss_mib": memory.get("VmHWM"),
        "bytes_in": reads.bytes_in, "large_messages_handled": reads.large_handled,
        "busiest_windows": sampler.busiest(WINDOW_S, wall0),
        "counters": {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)},
        "attacker": stats, "profile": text.getvalue(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", default="bad_messages", choices=[a for a in ATTACKS if a not in ("none", "teleport")])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of attack (default 5)")
    p.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    print(describe_machine())
    sys.setswitchinterval(0.001)  # as the server's command line sets these
    keep_large_buffers()
    with tempfile.TemporaryDirectory(prefix="loop-profile-") as tmp:
        result = run_loop(profile_attack(args.attack, args.duration, Path(tmp), args.top))
    gcs = result["gc"]
    full = [g["ms"] for g in gcs if g["generation"] == 2]
    print(f"{result['attack']}, {result['duration_s']:g} s: the event loop ran {result['loop_cpu_ms']} ms of CPU in {result['wall_s']} s; "
          f"{len(gcs)} collections in its thread ({sum(g['ms'] for g in gcs):.1f} ms; {len(full)} full, longest {max(full, default=0):.1f} ms)")
    print(f"busiest {1e3 * WINDOW_S:.0f} ms windows of the loop's CPU:", ", ".join(
        f"{w['cpu_ms']} ms at {w['from_s']}-{w['to_s']} s" for w in result["busiest_windows"]))
    for w in result["busiest_windows"][:2]:
        print(f"  at {w['from_s']} s, the loop's stacks by CPU ms:")
        for stack, ms in w["stacks"][:12]:
            print(f"    {ms:6.1f}  {stack}")
    print(f"process memory: resident {result['rss_mib']} MiB, peak {result['peak_rss_mib']} MiB")
    print(f"WebSocket bytes read {result['bytes_in'] / 2**20:.1f} MiB; messages over the small-message limit handed to the server's code: {result['large_messages_handled']}")
    print("server counters:", ", ".join(f"{k} {v:g}" for k, v in sorted(result["counters"].items())))
    print("attacker:", result["attacker"])
    print(result["profile"])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
