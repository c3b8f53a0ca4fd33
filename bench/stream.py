"""Streaming benchmark: N Python players walking and turning in one world, over loopback.

Starts a server subprocess (or uses ``--url``), then for each player count creates a fresh
world, connects that many :class:`runtime.client.WorldClient` s (real WebRTC, real
decoding), drives them with input at 30 Hz (walking forward into new space while
turning) and reports per round:

* server motion-to-photon p50/p95 (input received -> encoded frame, from ``frame_info``),
* client input -> decoded frame p50/p95 (loopback, no display),
* sent fps per player (server ``stats``) and received (decoded) fps per player,
* render and encode ms per frame (server ``stats``),
* the largest gap between decoded frames, overall and while generation jobs were running,
* generation jobs finished during the round,
* the server's CPU use over the driving window, when the bench started the server itself
  (NaN with ``--url``), in % of one core from ``/proc/<pid>/stat``: its main process, all
  its threads (the event loop: signalling, WebRTC packetisation, the render loop; plus
  render/encode threads, so it can exceed 100%), and the sum over its child processes
  (the encoder pool). Compare the main process with 100% per busy thread: it tells
  whether the server's one event-loop process is the bound.

Examples::

    .venv/bin/python -m bench.stream                                   # CPU: 1, 4, 8 players
    .venv/bin/python -m bench.stream --renderer gsplat --resolution 1280x720 --fps 60
    .venv/bin/python -m bench.stream --players 1 --duration 5 --json out/stream.json
    python3 -m bench.stream --renderer gsplat --players 8,32 --client-procs auto   # GPU machine

Where the clients run: they share the machine with the server. With ``--client-procs 1``
(the default) all of them run in this one process and event loop; with many players (say
32 aiortc clients receiving, decrypting and decoding 720p H.264) that process saturates
and the numbers measure the bench client rather than the server. ``--client-procs K``
deals each round's players out over K spawned worker processes, each with its own event
loop (uvloop when importable); ``auto`` is max(1, min(players, cpus // 4)), e.g. 4
processes for 32 players on a 16-core machine. The first client of worker 0 creates the
world, the other clients join it once it exists, all workers start driving at one common
(wall-clock) start time and send their raw measurements back, which are merged into the
same row as in-process. Either way the clients' decoding competes with the server for the
cores (on a 2-core machine, heavily), so the results are a floor; results with all
clients in-process are the lowest floor. ``--server-cores N`` gives the server the first
N cores and the clients the rest (on a 32-core machine, 16 each: a 16-core server with
its clients on other hardware, as far as the CPU goes); ``--client-decode none`` makes the
clients count received frames instead of decoding them, most of their CPU at 720p.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from bench.common import Stopped, process_diagnosis, stall_line, stop_on_sigterm
from protocol import messages as m
from runtime.client import StreamStalled, WorldClient

ROOT = Path(__file__).resolve().parents[1]

# Each stage of a client's joining (listening, welcome, answer) and its first frame get
# this long; the server compiles its GPU kernels before it listens (START_TIMEOUT), not on
# the first frame. A stage with nothing in time stops the bench with its name
# (runtime.client.StreamStalled) and the server's log tail and stacks.
CONNECT_TIMEOUT = 60.0
STAGE_TIMEOUT_ENV = "WORLDSTREAM_BENCH_STAGE_TIMEOUT"
"""``--stage-timeout`` for this process and the spawned client processes (unset: CONNECT_TIMEOUT)."""
START_TIMEOUT = 400.0  # a fresh GPU machine compiles gsplat's kernels first
SETTLE_S = 1.0  # let the first frames and keyframes settle before driving


def stage_timeout() -> float:
    return float(os.environ.get(STAGE_TIMEOUT_ENV) or CONNECT_TIMEOUT)


ONE_HOST_QUOTAS = ("--max-connections-per-client", "100000", "--max-new-worlds-per-client", "100000")
"""Every bench player connects from this host: per-address quotas would cap a round at 8 players."""


def start_server(args, workdir: Path, extra_args: tuple[str, ...] = ONE_HOST_QUOTAS) -> tuple[subprocess.Popen, str]:
    log_path = workdir / "server.log"
    cmd = [
        sys.executable, "-m", "runtime.app", "--port", "0", "--renderer", args.renderer, "--generator", args.generator,
        "--worlds", str(workdir / "worlds"), "--codec", args.codec, "--log-level", "info", *extra_args,
    ]
    for flag, value in (("--resolution", args.resolution), ("--fps", args.fps), ("--bitrate", args.bitrate), ("--crf", args.crf)):
        if value:
            cmd += [flag, str(value)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    server_cores = split_cores(args.server_cores)[0]
    pin = (lambda: os.sched_setaffinity(0, server_cores)) if server_cores else None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{text}")
        if "listening on " in text:
            return proc, text.split("listening on ", 1)[1].split()[0]
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server not listening: it did not start in {START_TIMEOUT:g} s:\n{log_path.read_text(errors='replace')[-6000:]}")


def split_cores(server_cores: int | None) -> tuple[list[int], list[int]]:
    """``--server-cores N``: the server's cores (the first N) and the clients' (the rest)."""
    cores = sorted(os.sched_getaffinity(0))
    if not server_cores:
        return [], cores
    if not 0 < server_cores < len(cores):
        raise SystemExit(f"--server-cores must be in [1, {len(cores) - 1}] on this machine, got {server_cores}")
    return cores[:server_cores], cores[server_cores:]


def run_loop(coro):
    """Run ``coro`` on a fresh event loop: uvloop when importable, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------------- server CPU
class ServerCpu:
    """CPU time of a process and of its child processes, from ``/proc`` (Linux, no psutil).

    A sample is ``(monotonic time, main ticks, reaped-children ticks, {child pid: ticks})``;
    :meth:`usage` turns two samples into % of one core. Children that exited between the two
    samples are counted through the parent's ``cutime + cstime`` (once it has waited for them).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _stat(pid: int) -> tuple[int, int, int]:
        """``(ppid, utime + stime, cutime + cstime)`` in clock ticks."""
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()  # the command name may hold spaces and ')'
        return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])

    def ticks(self, pids) -> dict[int, int]:
        """CPU time so far (clock ticks, user + system) of each process in ``pids`` still running."""
        out = {}
        for pid in pids:
            try:
                out[pid] = self._stat(pid)[1]
            except (OSError, ValueError, IndexError):  # exited
                pass
        return out

    def sample(self):
        now = time.monotonic()
        try:
            _, own, reaped = self._stat(self.pid)
        except (OSError, ValueError, IndexError):
            return None  # the server is gone
        children = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                ppid, ticks, _ = self._stat(int(name))
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            if ppid == self.pid:
                children[int(name)] = ticks
        return now, own, reaped, children

    def usage(self, a, b) -> tuple[float, float]:
        """``(main %, children %)`` of one core between samples ``a`` and ``b``."""
        if a is None or b is None or b[0] <= a[0]:
            return float("nan"), float("nan")
        wall = b[0] - a[0]
        own = (b[1] - a[1]) / self.hz
        kids = sum(t - a[3].get(pid, 0) for pid, t in b[3].items())
        kids += (b[2] - a[2]) - sum(t for pid, t in a[3].items() if pid not in b[3])
        return 100.0 * own / wall, 100.0 * max(0, kids) / self.hz / wall


# ---------------------------------------------------------------------------- measuring
def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def max_gap(times: list[float], windows: list[tuple[float, float]] | None = None) -> float:
    """Largest interval between consecutive frame arrivals (restricted to ``windows`` if given)."""
    best = 0.0
    for a, b in zip(times, times[1:]):
        if windows is not None and not any(lo <= b and a <= hi for lo, hi in windows):
            continue
        best = max(best, b - a)
    return best


def generation_windows(c: WorldClient, t0: float, t1: float) -> list[tuple[float, float]]:
    """Intervals in which some generation job was requested and not yet finished."""
    start: dict[int, float] = {}
    out = []
    for msg, t in zip(list(c.events), list(c.event_times)):
        if msg.TYPE == "generation_requested":
            start[msg.job_id] = t
        elif msg.TYPE in ("generation_done", "generation_failed") and msg.job_id in start:
            out.append((start.pop(msg.job_id), t))
    out += [(s, t1) for s in start.values()]
    return [(max(a, t0), min(b, t1)) for a, b in out if b >= t0 and a <= t1]


async def drive(c: WorldClient, duration: float, phase: float) -> None:
    """Walk forward and sweep the view left and right at 30 Hz: new space and new views."""
    t0 = time.monotonic()
    while (t := time.monotonic() - t0) < duration:
        yaw_rate = 0.6 * math.sin(2 * math.pi * (t / 4.0) + phase)  # rad/s
        await c.send_input(forward=1.0, yaw_delta=yaw_rate / 30.0)
        await asyncio.sleep(1 / 30)
    await c.send_input()


def marks_of(clients: list[WorldClient]) -> list[tuple[int, int, int]]:
    return [(c.frames_received, c.event_count, len(c.input_to_frame_ms)) for c in clients]


def measure(clients: list[WorldClient], marks, t0: float, t1: float) -> dict:
    """The raw per-client measurements of one driving window ``[t0, t1]`` (monotonic)."""
    raw = {k: [] for k in ("mtp", "client_lat", "recv_fps", "gaps", "gen_gaps", "sent_fps", "render_ms", "encode_ms")}
    jobs_done = set()
    for c, (f0, e0, l0) in zip(clients, marks):
        events = list(c.events)[e0 - c.event_count:] if e0 < c.event_count else []
        raw["mtp"] += [e.mtp_ms for e in events if e.TYPE == "frame_info" and e.mtp_ms >= 0]
        stats = [e for e in events if e.TYPE == "stats"]
        raw["sent_fps"] += [s.fps for s in stats[1:]]
        raw["render_ms"] += [s.frame_ms for s in stats[1:]]
        raw["encode_ms"] += [s.encode_ms for s in stats[1:]]
        jobs_done |= {e.job_id for e in events if e.TYPE == "generation_done"}
        raw["client_lat"] += list(c.input_to_frame_ms)[l0:]
        times = [t for t in c.frame_times if t0 <= t <= t1]
        raw["recv_fps"].append((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0)
        raw["gaps"].append(max_gap(times))
        raw["gen_gaps"].append(max_gap(times, generation_windows(c, t0, t1)))
    raw["jobs_done"] = sorted(jobs_done)
    raw["duration"] = t1 - t0
    return raw


def summarize(players: int, raws: list[dict], cpu: tuple[float, float]) -> dict:
    """Merge the raw measurements of all clients (one dict per process) into the round's row."""
    merged = {k: [v for r in raws for v in r[k]] for k in raws[0] if k not in ("jobs_done", "duration")}
    mtp, client_lat, recv_fps = merged["mtp"], merged["client_lat"], merged["recv_fps"]
    sent_fps, render_ms, encode_ms = merged["sent_fps"], merged["render_ms"], merged["encode_ms"]
    jobs_done = set().union(*(r["jobs_done"] for r in raws))
    return {
        "players": players,
        "duration_s": round(max(r["duration"] for r in raws), 2),
        "sent_fps": round(float(np.mean(sent_fps)) if sent_fps else float("nan"), 2),
        "recv_fps": round(float(np.mean(recv_fps)), 2),
        "recv_fps_min": round(float(np.min(recv_fps)), 2),
        "server_mtp_p50_ms": round(pct(mtp, 50), 1),
        "server_mtp_p95_ms": round(pct(mtp, 95), 1),
        "client_input_to_frame_p50_ms": round(pct(client_lat, 50), 1),
        "client_input_to_frame_p95_ms": round(pct(client_lat, 95), 1),
        "render_ms": round(float(np.mean(render_ms)) if render_ms else float("nan"), 2),
        "encode_ms": round(float(np.mean(encode_ms)) if encode_ms else float("nan"), 2),
        "max_gap_s": round(max(merged["gaps"]), 3),
        "max_gap_during_generation_s": round(max(merged["gen_gaps"]), 3),
        "jobs_done": len(jobs_done),
        "server_main_cpu_pct": round(cpu[0], 1),
        "server_children_cpu_pct": round(cpu[1], 1),
    }


NO_CPU = (float("nan"), float("nan"))


# ---------------------------------------------------------------------------- in-process round
async def round_(url: str, players: int, duration: float, cpu: ServerCpu | None = None) -> dict:
    """One round with all clients in this process and event loop (``--client-procs 1``)."""
    world = f"bench-{players}p-{uuid.uuid4().hex[:6]}"
    clients = [WorldClient(url, new_world=m.NewWorld(name=world, seed=11), name="bench0")]
    await clients[0].connect(timeout=stage_timeout())
    for i in range(1, players):
        c = WorldClient(url, world=world, name=f"bench{i}")
        await c.connect(timeout=stage_timeout())
        clients.append(c)
    try:
        await asyncio.gather(*(c.next_frame(timeout=stage_timeout()) for c in clients))
        await asyncio.sleep(SETTLE_S)
        marks = marks_of(clients)
        cpu0 = cpu.sample() if cpu else None
        t0 = time.monotonic()
        await asyncio.gather(*(drive(c, duration, i * 0.7) for i, c in enumerate(clients)))
        t1 = time.monotonic()
        usage = cpu.usage(cpu0, cpu.sample()) if cpu else NO_CPU
        await asyncio.sleep(0.3)
        return summarize(players, [measure(clients, marks, t0, t1)], usage)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# ---------------------------------------------------------------------------- light clients
CLIENT_DECODE_ENV = "WORLDSTREAM_BENCH_CLIENT_DECODE"
"""The ``--client-decode`` mode for spawned client processes (unset: ``full``)."""
CLIENT_DECODE_MODES = ("full", "none", "headers")


def lighten_receivers(mode: str) -> None:
    """Make this process's aiortc receivers cheaper (bench-only): ``--client-decode`` ``none``
    (:func:`count_frames_instead_of_decoding`), ``headers`` (:func:`count_frames_from_rtp_headers`)
    or ``full`` (nothing changes)."""
    if mode not in CLIENT_DECODE_MODES:
        raise ValueError(f"client decode mode must be one of {CLIENT_DECODE_MODES}, got {mode!r}")
    if mode == "none":
        count_frames_instead_of_decoding()
    elif mode == "headers":
        count_frames_from_rtp_headers()


def count_frames_instead_of_decoding() -> None:
    """``--client-decode none``: this process's aiortc receivers hand on a 16x16 blank frame
    per received video frame (same RTP timestamp) instead of decoding it.

    Frames are still received in full (RTP, SRTP, jitter buffer, NACK/PLI), so the received
    fps and input -> frame latency stay real up to the decoder; only the H.264 decoding and
    the RGB conversion, most of a client's CPU at 720p, are skipped. Bench-only: it swaps
    aiortc's decoder factory (``rtcrtpreceiver.get_decoder``, aiortc 1.16).
    """
    import aiortc.rtcrtpreceiver

    class FrameCounter:
        def decode(self, encoded_frame) -> list:
            return [_stand_in_frame(encoded_frame.timestamp)]

    aiortc.rtcrtpreceiver.get_decoder = lambda codec: FrameCounter()


def _stand_in_frame(pts: int):
    """A 16x16 blank frame at ``pts`` (90 kHz): what light receivers hand on instead of a decoded one."""
    import fractions

    import av

    frame = av.VideoFrame(16, 16, "yuv420p")
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 90_000)
    return frame


def count_frames_from_rtp_headers() -> None:
    """``--client-decode headers``: this process's aiortc receivers count frames from the RTP
    headers alone and hand on a 16x16 blank frame per frame (marker bit), with the RTP
    timestamp mapped as aiortc maps it.

    SRTP leaves the RTP header in the clear, so nothing is decrypted, parsed, depacketised or
    reassembled, and no NACK, PLI, REMB or receiver statistics are made: per packet a client
    costs a few microseconds instead of tens, and leaves more of a shared machine's cores to
    the server. The server's work is unchanged (it sends every packet as before; RTCP from
    the receiver is not needed on loopback). Only for one video receiver per peer connection
    over a loss-free path. Bench-only: it swaps ``RTCDtlsTransport._handle_rtp_data`` and the
    receiving SRTP session's ``unprotect`` (aiortc 1.16, pylibsrtp 1.0).
    """
    import aiortc.rtcdtlstransport as dtls

    class HeaderOnlySession(dtls.Session):
        def unprotect(self, packet: bytes) -> bytes:
            return packet  # still encrypted: only the header is read

    async def handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) < 12 or not data[1] & 0x80:  # not a frame's last packet
            return
        for receiver in self._rtp_router.receivers:
            track = receiver._track
            if track is None:
                continue
            timestamp = int.from_bytes(data[4:8], "big")
            track._queue.put_nowait(_stand_in_frame(receiver._RTCRtpReceiver__timestamp_mapper.map(timestamp)))

    dtls.Session = HeaderOnlySession
    dtls.RTCDtlsTransport._handle_rtp_data = handle_rtp_data


# ---------------------------------------------------------------------------- client worker processes
class _Aborted(Exception):
    """The main process called the round off (another worker failed)."""


def _client_worker(wid: int, url: str, world: str, indices: list[int], duration: float, inbox, outbox) -> None:
    """Entry point of one client worker process (spawned): runs clients ``indices`` of the round.

    Messages to the main process (``outbox``): ``("world", wid, None)`` once client 0 (worker 0
    only) has created the world, ``("ready", wid, None)`` once all its clients have their first
    frame, ``("result", wid, raw)`` after driving, ``("error", wid, traceback)`` on failure.
    From the main process (``inbox``): ``("connect",)`` (workers other than 0: the world exists),
    ``("start", wall_time)``, ``("abort",)``.
    """
    lighten_receivers(os.environ.get(CLIENT_DECODE_ENV, "full"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and ends us
    try:
        run_loop(_worker_async(wid, url, world, indices, duration, inbox, outbox))
    except _Aborted:
        pass
    except BaseException:
        outbox.put(("error", wid, traceback.format_exc()))


async def _worker_async(wid: int, url: str, world: str, indices: list[int], duration: float, inbox, outbox) -> None:
    parent = os.getppid()

    async def command(kind: str, timeout: float) -> tuple:
        # poll, so that this loop keeps receiving and decoding video while it waits
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = inbox.get_nowait()
            except queue.Empty:
                if os.getppid() != parent:
                    raise RuntimeError("the main process went away") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {wid}: no {kind!r} from the main process in {timeout:g} s") from None
                await asyncio.sleep(0.02)
                continue
            if msg[0] == "abort":
                raise _Aborted
            if msg[0] != kind:
                raise RuntimeError(f"worker {wid}: expected {kind!r}, got {msg!r}")
            return msg

    clients: list[WorldClient] = []
    try:
        if wid != 0:
            await command("connect", stage_timeout() + 60)
        for i in indices:
            if i == 0:
                c = WorldClient(url, new_world=m.NewWorld(name=world, seed=11), name="bench0")
            else:
                c = WorldClient(url, world=world, name=f"bench{i}")
            clients.append(c)
            await c.connect(timeout=stage_timeout())
            if i == 0:
                outbox.put(("world", wid, None))
        await asyncio.gather(*(c.next_frame(timeout=stage_timeout()) for c in clients))
        outbox.put(("ready", wid, None))
        _, start_wall = await command("start", 4 * stage_timeout())
        await asyncio.sleep(max(0.0, start_wall - time.time()))
        marks = marks_of(clients)
        t0 = time.monotonic()
        await asyncio.gather(*(drive(c, duration, i * 0.7) for i, c in zip(indices, clients)))
        t1 = time.monotonic()
        await asyncio.sleep(0.3)
        outbox.put(("result", wid, measure(clients, marks, t0, t1)))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _await_messages(outbox, procs, kind: str, wids: set[int], timeout: float, tick=None) -> dict[int, object]:
    """Wait for a ``kind`` message from each worker in ``wids``; raise on a worker's error,
    death or the timeout. ``tick()`` runs at least every 0.2 s and returns the seconds it wants
    to be called again in (for sampling at exact times)."""
    got: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    dead_since: dict[int, float] = {}
    while set(got) < wids:
        wait = 0.2
        if tick is not None:
            wait = max(0.0, min(wait, tick()))
        try:
            what, wid, payload = outbox.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            if now > deadline:
                missing = sorted(wids - set(got))
                raise TimeoutError(f"client workers {missing}: no {kind!r} within {timeout:g} s (their clients never stalled outright)") from None
            for wid in wids - set(got):
                if procs[wid].exitcode is not None:
                    # a message put just before exiting may still be in flight: give it a moment
                    if now - dead_since.setdefault(wid, now) > 2.0:
                        raise RuntimeError(
                            f"client worker {wid} exited (code {procs[wid].exitcode}) before {kind!r}") from None
            continue
        if what == "error":
            raise RuntimeError(f"client worker {wid} failed:\n{payload}")
        if what != kind:
            raise RuntimeError(f"client worker {wid}: expected {kind!r}, got {what!r}")
        got[wid] = payload
    if tick is not None:
        tick()
    return got


def round_procs(url: str, players: int, duration: float, procs_n: int, cpu: ServerCpu | None = None) -> dict:
    """One round with the clients dealt out over ``procs_n`` spawned worker processes."""
    world = f"bench-{players}p-{uuid.uuid4().hex[:6]}"
    groups = [[int(i) for i in g] for g in np.array_split(np.arange(players), min(procs_n, players))]
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    inboxes = [ctx.Queue() for _ in groups]
    procs = [
        ctx.Process(target=_client_worker, args=(w, url, world, g, duration, inboxes[w], outbox),
                    name=f"bench-clients-{w}", daemon=True)
        for w, g in enumerate(groups)
    ]
    for p in procs:
        p.start()
    everyone = set(range(len(procs)))
    failed = False
    try:
        _await_messages(outbox, procs, "world", {0}, stage_timeout() + 60)
        for q in inboxes[1:]:
            q.put(("connect",))
        per_worker = max(len(g) for g in groups)
        _await_messages(outbox, procs, "ready", everyone, stage_timeout() * (1 + per_worker) + 60)

        start_wall = time.time() + SETTLE_S
        for q in inboxes:
            q.put(("start", start_wall))
        # sample the server's CPU at the common start and end of driving, while waiting
        start_mono = time.monotonic() + (start_wall - time.time())
        samples: list = []

        def tick() -> float:
            due = (start_mono, start_mono + duration)
            if len(samples) < 2 and time.monotonic() >= due[len(samples)]:
                samples.append(cpu.sample() if cpu else None)
            return due[len(samples)] - time.monotonic() if len(samples) < 2 else 0.2

        raws = _await_messages(outbox, procs, "result", everyone, SETTLE_S + duration + 120, tick)
        usage = cpu.usage(*samples) if cpu and len(samples) == 2 else NO_CPU
        return summarize(players, [raws[w] for w in sorted(raws)], usage)
    except BaseException:
        failed = True
        for q in inboxes:
            q.put(("abort",))  # read by workers still waiting for a command; the others are ended below
        raise
    finally:
        deadline = time.monotonic() + (3 if failed else 30)
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))  # workers close their clients, then exit
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        for q in [outbox, *inboxes]:
            q.cancel_join_thread()
            q.close()


def client_procs_for(spec: str, players: int) -> int:
    """``--client-procs`` for one round: ``auto`` = max(1, min(players, cpus // 4))."""
    if spec == "auto":
        return max(1, min(players, len(os.sched_getaffinity(0)) // 4))
    return max(1, min(players, int(spec)))


def client_procs_arg(text: str) -> str:
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError("a positive integer or 'auto'")
    return text


# ---------------------------------------------------------------------------- output
COLUMNS = [
    ("players", "players"), ("sent_fps", "sent fps"), ("recv_fps", "recv fps"), ("recv_fps_min", "min recv"),
    ("short_pct", "frames short %"),
    ("server_mtp_p50_ms", "MTP p50"), ("server_mtp_p95_ms", "MTP p95"),
    ("client_input_to_frame_p50_ms", "in→frame p50"), ("client_input_to_frame_p95_ms", "in→frame p95"),
    ("render_ms", "render ms"), ("encode_ms", "encode ms"), ("max_gap_s", "max gap s"),
    ("max_gap_during_generation_s", "gap in gen s"), ("jobs_done", "jobs"),
    ("server_main_cpu_pct", "server main CPU %"), ("server_children_cpu_pct", "server children CPU %"),
]


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def server_fps(url: str) -> int:
    """The frame rate the server streams at (its ``/healthz``)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=stage_timeout()) as reply:
            return int(json.loads(reply.read())["fps"])
    except OSError as exc:  # refused, timed out (URLError is an OSError)
        raise StreamStalled("server not listening", f"{url}/healthz: {exc}") from None


def run_rounds(args, cpu: ServerCpu | None) -> tuple[list[dict], dict[int, int]]:
    rows, used = [], {}
    fps = server_fps(args.url)
    for i, n in enumerate(args.players):
        if i:
            time.sleep(2.0)  # let the server drop the last round's players
        k = client_procs_for(args.client_procs, n)
        used[n] = k
        where = "in this process" if k == 1 else f"in {k} client processes"
        print(f"round: {n} player(s) {where}, {args.duration:g} s ...", file=sys.stderr, flush=True)
        if k == 1:
            rows.append(run_loop(round_(args.url, n, args.duration, cpu)))
        else:
            rows.append(round_procs(args.url, n, args.duration, k, cpu))
        # Frames a player did not get, of those the frame rate promises: the "< 1% late" criterion
        # seen from the clients (dropped before encoding, or never rendered in time).
        rows[-1]["short_pct"] = round(100.0 * max(0.0, 1.0 - rows[-1]["recv_fps"] / fps), 2)
        print("  " + " ".join(f"{k}={v}" for k, v in rows[-1].items()), file=sys.stderr, flush=True)
    return rows, used


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8], help="player counts (default 1,4,8)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of driving per round (default 10)")
    p.add_argument("--url", default=None, help="use this running server instead of starting one")
    p.add_argument("--renderer", default="cpu", choices=["auto", "cpu", "gsplat"])
    p.add_argument("--generator", default="procedural")
    p.add_argument("--resolution", default=None, help="WxH (default: the server's default for the renderer)")
    p.add_argument("--fps", type=int, default=None)
    p.add_argument("--codec", default="h264", choices=["h264", "vp8"])
    p.add_argument("--bitrate", default=None, help="the server's --bitrate (default: its own)")
    p.add_argument("--crf", default=None, help="the server's --crf, e.g. 18 or off (default: its own)")
    p.add_argument("--client-procs", type=client_procs_arg, default="1",
                   help="worker processes the clients are spread over: K, or 'auto' = max(1, min(players, cpus // 4)) "
                        "(default 1: all clients in this process)")
    p.add_argument("--server-cores", type=int, default=None,
                   help="pin the server to the first N cores and the clients to the rest, so the clients' "
                        "decoding does not take the server's cores (e.g. 16 on a 32-core machine)")
    p.add_argument("--client-decode", default="full", choices=CLIENT_DECODE_MODES,
                   help="none: clients receive every frame but skip H.264 decoding; headers: clients count frames "
                        "from RTP headers, decrypting nothing (bench-only; both free the cores the server shares with them)")
    p.add_argument("--stage-timeout", type=float, default=CONNECT_TIMEOUT,
                   help=f"seconds each stage of a client's joining and its first frame may take before the bench stops "
                        f"and says which had nothing (default {CONNECT_TIMEOUT:g})")
    p.add_argument("--json", type=Path, default=None, help="also write the rows (and settings) as JSON here")
    args = p.parse_args()
    os.environ[STAGE_TIMEOUT_ENV] = str(args.stage_timeout)  # for the client worker processes
    os.environ[CLIENT_DECODE_ENV] = args.client_decode  # for the client worker processes
    lighten_receivers(args.client_decode)
    proc = None
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        if args.url is None:
            proc, args.url = start_server(args, Path(tmp))
        if args.server_cores:
            os.sched_setaffinity(0, split_cores(args.server_cores)[1])  # client processes inherit it
        try:
            rows, used = run_rounds(args, ServerCpu(proc.pid) if proc is not None else None)
        except (Exception, Stopped) as exc:  # say which stage had nothing, and what the server was doing
            print(f"stalled: {stall_line(exc)}", file=sys.stderr, flush=True)
            print(process_diagnosis(proc.pid if proc else None, Path(tmp) / "server.log" if proc else None), file=sys.stderr, flush=True)
            return 3
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(8)  # a bench stopped by `timeout -k` has seconds left
                except subprocess.TimeoutExpired:
                    proc.kill()
    keys = ("renderer", "generator", "resolution", "fps", "codec", "bitrate", "duration", "client_procs", "server_cores", "client_decode")
    settings = {k: getattr(args, k) for k in keys}
    settings["client_procs_by_players"] = used
    print(f"settings: {settings}, cpus: {os.cpu_count()}")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
