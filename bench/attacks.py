"""Attack benchmark: what a well-behaved player's stream looks like while someone attacks the server.

Starts a server (or uses ``--url``), connects one well-behaved player that walks and turns
at 30 Hz input and decodes its video, then runs each attack in turn for ``--duration``
seconds, from a separate process (so the attacker's own work does not slow the player's
client), and prints per phase:

* the player's received (decoded) fps and its largest gap between decoded frames, in ms
  and in frame intervals (the target: no gap over 2 intervals), the gaps' 50th, 90th and
  99th percentiles and how many were over 2 intervals, and the largest gap in the server's
  sending (its ``frame_info`` times: a decoded gap the server did not have came about on
  the way or in the player's own process), and the frames the server sent and dropped in
  the phase (``/metrics``, all players: ``replaced`` a picture not yet encoded when the next
  came, ``worker_behind``, ``render_failed``),
* its slowest ping (WebSocket round trip, ms) and whether it was disconnected,
* whether a new player could join at the end of the phase, and how long that took,
* the server's CPU (its main process, % of one core; media workers apart), of that its
  event loop's thread alone (the CPU an attack costs the loop every tick waits on: unlike
  the gaps, it hardly changes when other work shares the machine), and the attacker's: on
  a machine with few cores the attacker's own CPU takes from the server's,
* what the attacker did (messages or connections), the replies it got, and how its attempts
  failed (exception names: ``InvalidStatus`` is a handshake refused with an HTTP status).

Attacks (``--attacks``, comma-separated, in this order by default):

* ``none``: the baseline.
* ``cpu_only``: a control, no attack: the attacker process only burns CPU (15 ms of every
  100 ms, about what the ``bad_messages`` attacker uses), to tell what the attacks cost the
  server from what any extra process costs the player on a machine with few cores.
* ``bad_messages``: 8 connections sending, as fast as the server reads them, a rotation of
  expensive messages (8 MiB of empty msgpack arrays, a ping nesting 80,000 values) and
  malformed ones (garbage, unknown types, out-of-range fields, text frames). With
  ``--attacker-addresses N`` its connections come from N client addresses (a botnet: each
  has its own per-address budgets, so only the server-wide ones hold them all back).
* ``world_creation``: connections opened 8 at a time, each creating a world with
  ``hello``/``new_world`` and closing after the reply.
* ``teleport``: one player in the well-behaved player's world sending ``head_pose`` to a
  new random place far away as often as the input rate allows (generation requests).
* ``idle_connections``: 200 WebSocket connections that never say ``hello`` (each reopened
  when the server closes it).

The server runs with its default quotas (``--server-args`` adds flags) and ``--trust-proxy 127.0.0.1``; the attacker's
connections say ``X-Forwarded-For: 198.51.100.7`` (a documentation address), so the server
counts them as another client than the player, as it would two hosts on the internet.
(With ``--url`` the server's own settings apply: without ``--trust-proxy`` the attacker and
the player are one client address and share its quotas.)

With ``--stall-watch MS`` (default 60, under the 2 frame intervals of the target at 30 fps;
0: off) the server runs with its stall watch
(``runtime/stall_watch.py``, ``WORLDSTREAM_STALL_WATCH_MS``) and the player's process
watches its own event loop the same way: each phase then lists the stalls (anything late by
more than MS) of the server and of the player, and prints the worst one's report: which
clock was late and in which stage, garbage collections, and per thread the CPU it ran and
waited for and its stack. It also prints how long the server's lock probe waited for the
interpreter lock per 5 ms wake-up (mean and worst, and how many waits passed the switch
interval: its time on the run queue is not counted, so this is what threads holding the
lock cost the event loop and the render thread, not what the machine's load costs them),
and the stall watch's own CPU. ``--json`` keeps every report.

Example (CPU, 2 cores; a few seconds per phase)::

    .venv/bin/python -m bench.attacks --duration 5
    .venv/bin/python -m bench.attacks --attacks none,bad_messages --duration 3 --json out/attacks.json

Numbers from a machine whose cores other work shares are noisy; compare phases of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shlex
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
from websockets.exceptions import ConnectionClosed

from bench.common import describe_machine, format_table, percentile, write_json
from bench.stream import ServerCpu, drive, max_gap, run_loop, start_server
from protocol import messages as m
from runtime import stall_watch
from runtime.client import ServerError, WorldClient, ws_url
from runtime.heap import settle_heap

ATTACKS = ("none", "cpu_only", "bad_messages", "world_creation", "teleport", "idle_connections")
ATTACKER = {"X-Forwarded-For": "198.51.100.7"}
"""Handshake headers of every attacker connection: another client address, through the trusted proxy."""


def attacker_headers(k: int, addresses: int) -> dict[str, str]:
    """Connection ``k``'s handshake headers when the attack comes from ``addresses`` addresses (198.51.100.7 onward)."""
    return {"X-Forwarded-For": f"198.51.100.{7 + k % addresses}"} if addresses > 1 else ATTACKER
SETTLE_S = 1.0


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def bad_messages() -> list:
    """The rotation the ``bad_messages`` attacker sends: dear ones first, then cheap garbage."""
    return [
        b"\xdc\x00\x7f" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 127,  # 8.3 M empty arrays in 8 MiB
        _raw({"type": "ping", "id": 1, "pad": [[[0] * 1000] * 100] * 80}),
        b"\xc1garbage",
        "a text frame",
        _raw({"type": "fly_to_moon"}),
        _raw({"type": "input", "seq": "seven"}),
        _raw({"type": "input", "seq": 1, "forward": float("nan")}),
        _raw({"type": "head_pose", "seq": 1, "position": [1e9, 0, 0], "orientation": [1, 0, 0, 0]}),
        _raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "world": "../../etc"}),
        _raw({"type": "caption", "text": "x" * 80_000}),
    ]


# ---------------------------------------------------------------------------- attackers
async def _bad_messages(url: str, until: float, stats: dict, addresses: int = 1) -> None:
    from websockets.asyncio.client import connect

    messages = bad_messages()

    async def one(k: int) -> None:
        while time.monotonic() < until:
            try:
                async with connect(url, max_size=None, compression=None, additional_headers=attacker_headers(k, addresses)) as ws:
                    reader = asyncio.create_task(_count_replies(ws, stats))
                    i = k
                    while time.monotonic() < until:
                        await asyncio.wait_for(ws.send(messages[i % len(messages)]), max(0.05, until - time.monotonic()))
                        stats["sent"] += 1
                        i += 1
                    reader.cancel()
            except (asyncio.TimeoutError, OSError, Exception) as exc:  # closed by the server: count and reconnect
                if time.monotonic() < until:
                    stats["closed"] += 1
                    stats.setdefault("close_reasons", {}).setdefault(type(exc).__name__, 0)
                    stats["close_reasons"][type(exc).__name__] += 1
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(one(k) for k in range(8)))


async def _count_replies(ws, stats: dict) -> None:
    try:
        async for data in ws:
            reply = msgpack.unpackb(data)
            key = reply.get("code") or reply.get("type")
            stats["replies"][key] = stats["replies"].get(key, 0) + 1
    except Exception:  # closed: the sender notices and reconnects
        pass


async def _world_creation(url: str, until: float, stats: dict) -> None:
    from websockets.asyncio.client import connect

    async def one() -> None:
        while time.monotonic() < until:
            try:
                async with connect(url, compression=None, open_timeout=10, additional_headers=ATTACKER) as ws:
                    name = f"flood-{uuid.uuid4().hex[:10]}"
                    await ws.send(_raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "new_world": {"name": name}}))
                    reply = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 30))
                    key = reply.get("code") or reply.get("type")
                    stats["replies"][key] = stats["replies"].get(key, 0) + 1
                    stats["sent"] += 1
            except Exception as exc:
                stats["closed"] += 1
                stats.setdefault("close_reasons", {}).setdefault(type(exc).__name__, 0)
                stats["close_reasons"][type(exc).__name__] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(8)))


async def _teleport(url: str, world: str, until: float, stats: dict) -> None:
    rng = random.Random(5)
    async with WorldClient(url, world=world, name="teleporter", video=False, headers=ATTACKER) as c:
        while time.monotonic() < until:
            x, z = rng.uniform(-5000, 5000), rng.uniform(-5000, 5000)
            await c.send_head_pose((x, -1.6, z), (1.0, 0.0, 0.0, 0.0))
            stats["sent"] += 1
            await asyncio.sleep(1 / m.INPUT_RATE_HZ)
        for e in list(c.events):
            if e.TYPE in ("error", "generation_requested"):
                key = getattr(e, "code", None) or e.TYPE
                stats["replies"][key] = stats["replies"].get(key, 0) + 1


async def _cpu_only(until: float, stats: dict, busy_s: float = 0.015, period_s: float = 0.1) -> None:
    while time.monotonic() < until:
        start = time.monotonic()
        while time.monotonic() - start < busy_s:
            pass
        stats["sent"] += 1
        await asyncio.sleep(period_s - busy_s)


async def _idle_connections(url: str, until: float, stats: dict, count: int = 200) -> None:
    from websockets.asyncio.client import connect

    async def one() -> None:
        while time.monotonic() < until:
            try:
                async with connect(url, compression=None, open_timeout=10, additional_headers=ATTACKER) as ws:
                    stats["sent"] += 1
                    await asyncio.wait_for(ws.wait_closed(), max(0.05, until - time.monotonic()))
                    stats["closed"] += 1
            except asyncio.TimeoutError:
                return
            except Exception as exc:
                stats.setdefault("close_reasons", {}).setdefault(type(exc).__name__, 0)
                stats["close_reasons"][type(exc).__name__] += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(one() for _ in range(count)))


def _attack_process(kind: str, url: str, world: str, go, duration: float, out, addresses: int = 1) -> None:
    """Child process: say it is ready (its imports are done), wait for the start time (wall
    clock) from ``go``, attack for ``duration`` s, report stats on ``out``."""
    stats = {"sent": 0, "closed": 0, "replies": {}}
    out.put("ready")
    start_at = go.get(True, 120)

    async def main() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        until = time.monotonic() + duration
        wsu = ws_url(url)
        if kind == "bad_messages":
            await _bad_messages(wsu, until, stats, addresses)
        elif kind == "world_creation":
            await _world_creation(wsu, until, stats)
        elif kind == "teleport":
            await _teleport(url, world, until, stats)
        elif kind == "idle_connections":
            await _idle_connections(wsu, until, stats)
        elif kind == "cpu_only":
            await _cpu_only(until, stats)

    cpu0 = time.process_time()
    try:
        run_loop(asyncio.wait_for(main(), duration + 30))
    except Exception as exc:
        stats["error"] = f"{type(exc).__name__}: {exc}"[:200]
    stats["cpu_pct"] = round(100 * (time.process_time() - cpu0) / duration, 1)
    out.put(stats)


# ---------------------------------------------------------------------------- the player
async def _ping_loop(c: WorldClient, until: float, worst: list[float]) -> None:
    while time.monotonic() < until:
        try:
            worst[0] = max(worst[0], await c.ping(timeout=30))
        except Exception:
            worst[0] = float("inf")
            return
        await asyncio.sleep(0.2)


async def _join_time(url: str, world: str) -> str:
    """Can a new player join now? ``ok N ms`` or the error code."""
    t0 = time.monotonic()
    try:
        async with WorldClient(url, world=world, name="latecomer", video=False) as c:
            assert c.welcome is not None
            return f"ok {1e3 * (time.monotonic() - t0):.0f} ms"
    except ServerError as exc:
        return exc.error.code
    except Exception as exc:
        return type(exc).__name__


def bytes_read(pid: int | None) -> int | None:
    """Bytes the server's process has read so far (``/proc/<pid>/io`` ``rchar``: its sockets
    included; None: unknown): what an attack made it read, whatever the machine's load."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, ValueError, StopIteration):
        return None


def loop_cpu_ns(pid: int | None) -> int | None:
    """ns the server's main thread (its event loop) has run on a CPU (``/proc``; None: unknown).
    Unlike wall-clock gaps, this does not grow when other work shares the machine: it is
    what an attack costs the loop that every frame's tick waits on."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


TICK_PARTS = ("queued", "move_render", "resume", "offer")


def frame_counters(url: str) -> dict[str, float]:
    """The server's frame counters from ``/metrics``: ``sent`` and ``dropped <reason>``
    (replaced, worker_behind, render_failed), and the frame clock's tick parts (``tick sum
    <part>`` seconds and ``tick count <part>``: see ``worldstream_frame_tick_seconds``);
    empty when it cannot be read."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("worldstream_frames_sent_total "):
            out["sent"] = float(line.split()[-1])
        elif line.startswith('worldstream_frames_dropped_total{reason="'):
            out["dropped " + line.split('"')[1]] = float(line.split()[-1])
        elif line.startswith(("worldstream_frame_tick_seconds_sum{", "worldstream_frame_tick_seconds_count{")):
            kind, part = "sum" if "_sum{" in line else "count", line.split('"')[1]
            out[f"tick {kind} {part}"] = float(line.split()[-1])
    return out


def tick_ms(counters0: dict[str, float], counters1: dict[str, float]) -> dict[str, float | None]:
    """Mean ms per tick of each part of the frame clock's ticks between two ``frame_counters``:
    ``queued`` (the render thread taking the job), ``move_render``, ``resume`` (the event loop
    taking the result back: a hop that waits for the interpreter lock and the loop) and ``offer``."""
    out = {}
    for part in TICK_PARTS:
        n = counters1.get(f"tick count {part}", 0.0) - counters0.get(f"tick count {part}", 0.0)
        total = counters1.get(f"tick sum {part}", 0.0) - counters0.get(f"tick sum {part}", 0.0)
        out[part] = round(1e3 * total / n, 2) if n > 0 else None
    return out


def gap_stats(times: list[float], fps: float) -> dict:
    """Gaps between consecutive frame times, in frame intervals: percentiles and how many exceed 2."""
    gaps = [(b - a) * fps for a, b in zip(times, times[1:])]
    if not gaps:
        return {"gap_p50": None, "gap_p90": None, "gap_p99": None, "gaps_over_2": 0}
    return {
        "gap_p50": round(percentile(gaps, 50), 2), "gap_p90": round(percentile(gaps, 90), 2),
        "gap_p99": round(percentile(gaps, 99), 2), "gaps_over_2": sum(g > 2 for g in gaps),
    }


def read_reports(path: Path | None) -> list[dict]:
    """The server's stall reports so far (JSON lines; none when the watch is off)."""
    if path is None or not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


def stalls_in(reports: list[dict], t0: float, t1: float) -> dict:
    """The stall reports (wall clock ``t0``..``t1``): how many, the longest wait, full
    garbage collections (how many, the longest ms), and the reports."""
    reports = [r for r in reports if t0 <= r.get("time", 0) <= t1]
    stalls = [r for r in reports if "late" in r]
    ended = [r["ended"]["ms"] for r in reports if "ended" in r]
    longest = max([*ended, *(late["ms"] for r in stalls for late in r["late"])], default=0.0)
    full_gc = [r["gc"]["ms"] for r in reports if "gc" in r and r["gc"]["generation"] == 2]
    compiles = [r["compile"] for r in reports if "compile" in r]
    waits = [r["lock_wait"] for r in reports if "lock_wait" in r]
    wakes = sum(w["wakes"] for w in waits)
    lock_wait = {"wakes": wakes, "mean_ms": round(sum(w["ms"] for w in waits) / wakes, 2) if wakes else None,
                 "worst_ms": max((w["worst_ms"] for w in waits), default=None), "over_switch": sum(w["over_switch"] for w in waits),
                 "watch_cpu_ms": round(sum(r.get("watch_cpu_ms", 0.0) for r in reports if "lock_wait" in r), 1),
                 "streaming_ran_ms": round(sum(r.get("streaming", {}).get("ran_ms", 0.0) for r in reports if "lock_wait" in r), 1),
                 "streaming_waited_ms": round(sum(r.get("streaming", {}).get("waited_ms", 0.0) for r in reports if "lock_wait" in r), 1)}
    return {"count": len(stalls), "longest_ms": longest, "full_gc": len(full_gc), "full_gc_ms": max(full_gc, default=0.0),
            "compiles": compiles, "lock_wait": lock_wait, "reports": [r for r in reports if "lock_wait" not in r]}


def stall_text(who: str, stalls: dict) -> str:
    """The phase's stalls for printing: a count line, and the worst report in full."""
    gc_line = f"    {who}: {stalls['full_gc']} full gc, longest {stalls['full_gc_ms']:.0f} ms\n" if stalls["full_gc"] else ""
    gc_line += "".join(f"    {who}: numba compiled {c['function']}({c['args']}) in {c['ms']:.0f} ms ({c['thread']})\n" for c in stalls["compiles"])
    if not stalls["count"]:
        return gc_line
    worst = max((r for r in stalls["reports"] if "late" in r), key=lambda r: max(late["ms"] for late in r["late"]))
    body = stall_watch.format_report(worst).replace("\n", "\n      ")
    return gc_line + f"    {who} stalls: {stalls['count']}, longest wait {stalls['longest_ms']:.0f} ms; the worst:\n      {body}\n"


async def run_phases(url: str, attacks: list[str], duration: float, fps: int, server_cpu: ServerCpu | None = None,
                     stall_file: Path | None = None, stall_ms: float = 0.0, addresses: int = 1) -> list[dict]:
    # The player's own process is watched too: a stall there looks like the server's to the player.
    client_watch = stall_watch.StallWatch(stall_ms / 1e3, dump_stuck=False, log_reports=False) if stall_ms > 0 else stall_watch.NoWatch()
    unwatch = client_watch.watch_loop(asyncio.get_running_loop())
    try:
        return await _phases(url, attacks, duration, fps, server_cpu, stall_file, client_watch, addresses)
    finally:
        unwatch()
        client_watch.stop()


async def _phases(url: str, attacks: list[str], duration: float, fps: int, server_cpu: ServerCpu | None, stall_file: Path | None,
                  client_watch: stall_watch.NoWatch, addresses: int = 1) -> list[dict]:
    world = f"victim-{uuid.uuid4().hex[:6]}"
    rows = []
    ctx = mp.get_context("spawn")
    async with WorldClient(url, new_world=m.NewWorld(name=world, seed=11), name="player") as player:
        await player.next_frame(timeout=60)
        # The player's process is the measuring instrument (a browser in real use): keep its
        # own full collections short, as the server does, so they do not pass for the server's.
        settle_heap()
        await asyncio.sleep(SETTLE_S)
        for kind in attacks:
            out, go = ctx.Queue(), ctx.Queue()
            proc = None
            if kind != "none":
                # Its start-up (an interpreter and the client's imports: a second of CPU) must
                # be over before the phase, or it weighs on the first frames measured.
                proc = ctx.Process(target=_attack_process, args=(kind, url, world, go, duration, out, addresses), daemon=True)
                proc.start()
                await asyncio.to_thread(out.get, True, 120)
            start_at = time.time() + 0.5
            go.put(start_at)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            closed_before = player.closed.is_set()
            cpu0 = server_cpu.sample() if server_cpu else None
            loop0 = loop_cpu_ns(server_cpu.pid if server_cpu else None)
            read0 = bytes_read(server_cpu.pid if server_cpu else None)
            counters0 = await asyncio.to_thread(frame_counters, url)
            wall0 = time.time()
            t0 = time.monotonic()
            worst = [0.0]
            lost = False
            try:
                await asyncio.gather(drive(player, duration, 0.0), _ping_loop(player, t0 + duration, worst))
            except (ConnectionError, ConnectionClosed):  # the server dropped the player: the row says so
                lost = True
            t1 = time.monotonic()
            main_cpu, children_cpu = server_cpu.usage(cpu0, server_cpu.sample()) if server_cpu else (float("nan"),) * 2
            loop1 = loop_cpu_ns(server_cpu.pid if server_cpu else None)
            read1 = bytes_read(server_cpu.pid if server_cpu else None)
            counters1 = await asyncio.to_thread(frame_counters, url)
            frames = {k: int(v - counters0.get(k, 0.0)) for k, v in counters1.items()
                      if not k.startswith("tick ") and v - counters0.get(k, 0.0) > 0}
            loop_cpu = 100 * (loop1 - loop0) / 1e9 / (t1 - t0) if loop0 is not None and loop1 is not None else float("nan")
            joined = await _join_time(url, world)
            stats = await asyncio.to_thread(out.get, True, 60) if proc else {}
            if proc:
                await asyncio.to_thread(proc.join, 10)
            wall1 = wall0 + (t1 - t0)
            times = [t for t in player.frame_times if t0 <= t <= t1]
            gap = max_gap(times)
            sent = [server_ms / 1e3 for arrived, server_ms in player.info_times if t0 <= arrived <= t1]
            server_stalls = stalls_in(read_reports(stall_file), wall0, wall1)
            client_stalls = stalls_in(list(client_watch.reports), wall0, wall1)
            rows.append({
                "attack": kind,
                "recv_fps": round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 1 else 0.0,
                "max_gap_ms": round(gap * 1e3, 1),
                "gap_intervals": round(gap * fps, 2),
                **gap_stats(times, fps),
                "server_sent_gap_intervals": round(max_gap(sent) * fps, 2),
                "server_stalls": server_stalls["count"],
                "server_stall_ms": server_stalls["longest_ms"],
                "client_stalls": client_stalls["count"],
                "client_stall_ms": client_stalls["longest_ms"],
                "server_full_gc": server_stalls["full_gc"],
                "server_full_gc_ms": server_stalls["full_gc_ms"],
                "server_compile_ms": round(sum(c["ms"] for c in server_stalls["compiles"]), 1),
                "server_lock_wait": server_stalls["lock_wait"],
                "lock_wait_mean_ms": server_stalls["lock_wait"]["mean_ms"],
                "lock_wait_worst_ms": server_stalls["lock_wait"]["worst_ms"],
                "stall_reports": {"server": server_stalls["reports"], "player": client_stalls["reports"]},
                "worst_ping_ms": round(worst[0], 1),
                "disconnected": lost or (player.closed.is_set() and not closed_before),
                "new_player": joined,
                "server_cpu_pct": round(main_cpu, 1),
                "server_loop_cpu_pct": round(loop_cpu, 1),
                "server_read_mib": round((read1 - read0) / 2**20, 1) if read0 is not None and read1 is not None else None,
                "server_frames": frames,  # sent and dropped (by reason) in the phase, all players
                "server_dropped": sum(v for k, v in frames.items() if k.startswith("dropped")),
                "tick_ms": tick_ms(counters0, counters1),  # mean ms per tick, by part
                "server_children_cpu_pct": round(children_cpu, 1),
                "attacker_cpu_pct": stats.get("cpu_pct"),
                "attacker_sent": stats.get("sent"),
                "attacker_closed": stats.get("closed"),
                "replies": stats.get("replies"),
                "attacker_failures": stats.get("close_reasons"),
                "attacker_error": stats.get("error"),
            })
            print(_row_text(rows[-1]), flush=True)
            print(stall_text("server", server_stalls) + stall_text("player process", client_stalls), end="", flush=True)
            if lost or player.closed.is_set():
                break
            await asyncio.sleep(SETTLE_S)
    return rows


def _row_text(row: dict) -> str:
    replies = ", ".join(f"{k} {v}" for k, v in sorted((row.get("replies") or {}).items()))
    failures = ", ".join(f"{k} {v}" for k, v in sorted((row.get("attacker_failures") or {}).items()))
    return (f"  {row['attack']}: {row['recv_fps']} fps, largest gap {row['max_gap_ms']} ms ({row['gap_intervals']} frames; "
            f"p50 {row['gap_p50']}, p90 {row['gap_p90']}, p99 {row['gap_p99']}, {row['gaps_over_2']} over 2; "
            f"server's sending: largest {row['server_sent_gap_intervals']}; frames {row['server_frames']}; "
            f"tick ms {' '.join(f'{k} {v}' for k, v in row['tick_ms'].items())}), "
            f"stalls: server {row['server_stalls']} (longest {row['server_stall_ms']:.0f} ms), "
            f"player process {row['client_stalls']} (longest {row['client_stall_ms']:.0f} ms), "
            f"{_lock_text(row['server_lock_wait'])}worst ping {row['worst_ping_ms']} ms, disconnected {row['disconnected']}, new player {row['new_player']}, "
            f"server CPU {row['server_cpu_pct']}% (event loop {row['server_loop_cpu_pct']}%; +{row['server_children_cpu_pct']}% media workers), "
            f"server read {row['server_read_mib']} MiB, attacker CPU {row['attacker_cpu_pct']}%, "
            f"attacker sent {row['attacker_sent']} closed {row['attacker_closed']} [{replies}] failed [{failures}]")


def _lock_text(wait: dict) -> str:
    if not wait["wakes"]:
        return ""
    return (f"server's lock probe waited for the interpreter lock {wait['mean_ms']} ms per wake on average "
            f"(worst {wait['worst_ms']} ms, {wait['over_switch']} of {wait['wakes']} wakes over the switch interval), "
            f"its streaming threads ran {wait['streaming_ran_ms']} ms and waited {wait['streaming_waited_ms']} ms for a CPU, "
            f"the stall watch used {wait['watch_cpu_ms']} ms of CPU, ")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="attack a running server instead of starting one")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per phase (default 5)")
    p.add_argument("--resolution", default="320x180")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--renderer", default="cpu")
    p.add_argument("--generator", default="procedural")
    p.add_argument("--stall-watch", type=float, default=60.0, metavar="MS",
                   help="report anything in the server or the player's process late by more than MS (default 60; 0: off)")
    p.add_argument("--attacker-addresses", type=int, default=1, metavar="N",
                   help="the bad_messages attacker's connections come from N client addresses (default 1; at most 8 connections)")
    p.add_argument("--server-args", default="", metavar="ARGS",
                   help="more flags for the server it starts, e.g. '--max-large-read-mib-per-s 1024' (a limit lifted, to compare)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        raise SystemExit(f"unknown attacks {sorted(unknown)}; choose from {', '.join(ATTACKS)}")
    print(describe_machine())
    proc = None
    with tempfile.TemporaryDirectory(prefix="attacks-") as tmp:
        url = args.url
        stall_file = None
        if url is None:
            server_args = argparse.Namespace(renderer=args.renderer, generator=args.generator, codec="h264", resolution=args.resolution,
                                             fps=args.fps, bitrate=None, crf=None, server_cores=None)
            if args.stall_watch > 0:  # the server inherits these (start_server copies the environment)
                stall_file = Path(tmp) / "stalls.jsonl"
                os.environ[stall_watch.THRESHOLD_ENV] = f"{args.stall_watch:g}"
                os.environ[stall_watch.FILE_ENV] = str(stall_file)
            try:
                proc, url = start_server(server_args, Path(tmp), extra_args=("--trust-proxy", "127.0.0.1", *shlex.split(args.server_args)))
            finally:
                os.environ.pop(stall_watch.THRESHOLD_ENV, None)
                os.environ.pop(stall_watch.FILE_ENV, None)
        print(f"server {url}: {args.renderer} renderer, {args.resolution}@{args.fps}; {args.duration:g} s per attack; "
              f"attacker addresses {args.attacker_addresses}; server flags {args.server_args or 'default'}; "
              f"stall watch {f'{args.stall_watch:g} ms' if args.stall_watch > 0 else 'off'}")
        try:
            rows = run_loop(run_phases(url, attacks, args.duration, args.fps, ServerCpu(proc.pid) if proc else None,
                                       stall_file, args.stall_watch, args.attacker_addresses))
            if proc is not None and (proc.poll() is not None or any(r["disconnected"] for r in rows)):
                print(f"the server {'exited' if proc.poll() is not None else 'dropped the player'}; its log ends:\n"
                      + (Path(tmp) / "server.log").read_text(errors="replace")[-4000:])
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
    print()
    print(format_table(rows, [("attack", "attack"), ("recv_fps", "fps"), ("max_gap_ms", "max gap ms"),
                              ("gap_intervals", "gap / frame"), ("gap_p50", "p50"), ("gap_p90", "p90"), ("gap_p99", "p99"),
                              ("gaps_over_2", "gaps > 2"), ("server_sent_gap_intervals", "server's largest"), ("server_dropped", "server dropped"),
                              ("server_stall_ms", "server stall ms"), ("client_stall_ms", "player stall ms"),
                              ("server_full_gc_ms", "server full gc ms"), ("server_compile_ms", "server compile ms"),
                              ("lock_wait_mean_ms", "lock wait mean ms"), ("lock_wait_worst_ms", "lock wait worst ms"),
                              ("worst_ping_ms", "worst ping ms"),
                              ("disconnected", "disconnected"), ("new_player", "new player"),
                              ("server_cpu_pct", "server CPU %"), ("server_loop_cpu_pct", "loop CPU %"), ("server_read_mib", "server read MiB"),
                              ("attacker_cpu_pct", "attacker CPU %"),
                              ("attacker_sent", "attacker sent")]))
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
