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
* generation jobs finished during the round.

Examples::

    .venv/bin/python bench/stream.py                                   # CPU: 1, 4, 8 players
    .venv/bin/python bench/stream.py --renderer gsplat --resolution 1280x720 --fps 60
    .venv/bin/python bench/stream.py --players 1 --duration 5 --json out/stream.json

The client decodes in this same process: on a 2-core machine the clients' decoding
competes with the server for the cores, so the numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import messages as m  # noqa: E402
from runtime.client import WorldClient  # noqa: E402


def start_server(args, workdir: Path) -> tuple[subprocess.Popen, str]:
    log_path = workdir / "server.log"
    cmd = [
        sys.executable, "-m", "runtime.app", "--port", "0", "--renderer", args.renderer, "--generator", args.generator,
        "--worlds", str(workdir / "worlds"), "--codec", args.codec, "--log-level", "info",
    ]
    for flag, value in (("--resolution", args.resolution), ("--fps", args.fps), ("--bitrate", args.bitrate)):
        if value:
            cmd += [flag, str(value)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{text}")
        if "listening on " in text:
            return proc, text.split("listening on ", 1)[1].split()[0]
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 120 s")


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


async def round_(url: str, players: int, duration: float) -> dict:
    world = f"bench-{players}p-{uuid.uuid4().hex[:6]}"
    clients = [WorldClient(url, new_world=m.NewWorld(name=world, seed=11), name="bench0")]
    await clients[0].connect(timeout=300)
    for i in range(1, players):
        c = WorldClient(url, world=world, name=f"bench{i}")
        await c.connect(timeout=300)
        clients.append(c)
    try:
        # generous: a GPU renderer may compile its kernels on the first frame
        await asyncio.gather(*(c.next_frame(timeout=300) for c in clients))
        await asyncio.sleep(1.0)  # let the first frames and keyframes settle
        marks = [(c.frames_received, c.event_count, len(c.input_to_frame_ms)) for c in clients]
        t0 = time.monotonic()
        await asyncio.gather(*(drive(c, duration, i * 0.7) for i, c in enumerate(clients)))
        t1 = time.monotonic()
        await asyncio.sleep(0.3)
        mtp, client_lat, recv_fps, gaps, gen_gaps, sent_fps, render_ms, encode_ms, jobs_done = [], [], [], [], [], [], [], [], set()
        for c, (f0, e0, l0) in zip(clients, marks):
            events = list(c.events)[e0 - c.event_count:] if e0 < c.event_count else []
            mtp += [e.mtp_ms for e in events if e.TYPE == "frame_info" and e.mtp_ms >= 0]
            stats = [e for e in events if e.TYPE == "stats"]
            sent_fps += [s.fps for s in stats[1:]]
            render_ms += [s.frame_ms for s in stats[1:]]
            encode_ms += [s.encode_ms for s in stats[1:]]
            jobs_done |= {e.job_id for e in events if e.TYPE == "generation_done"}
            client_lat += list(c.input_to_frame_ms)[l0:]
            times = [t for t in c.frame_times if t0 <= t <= t1]
            recv_fps.append((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0)
            gaps.append(max_gap(times))
            gen_gaps.append(max_gap(times, generation_windows(c, t0, t1)))
        return {
            "players": players,
            "duration_s": round(t1 - t0, 2),
            "sent_fps": round(float(np.mean(sent_fps)) if sent_fps else float("nan"), 2),
            "recv_fps": round(float(np.mean(recv_fps)), 2),
            "recv_fps_min": round(float(np.min(recv_fps)), 2),
            "server_mtp_p50_ms": round(pct(mtp, 50), 1),
            "server_mtp_p95_ms": round(pct(mtp, 95), 1),
            "client_input_to_frame_p50_ms": round(pct(client_lat, 50), 1),
            "client_input_to_frame_p95_ms": round(pct(client_lat, 95), 1),
            "render_ms": round(float(np.mean(render_ms)) if render_ms else float("nan"), 2),
            "encode_ms": round(float(np.mean(encode_ms)) if encode_ms else float("nan"), 2),
            "max_gap_s": round(max(gaps), 3),
            "max_gap_during_generation_s": round(max(gen_gaps), 3),
            "jobs_done": len(jobs_done),
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


COLUMNS = [
    ("players", "players"), ("sent_fps", "sent fps"), ("recv_fps", "recv fps"), ("recv_fps_min", "min recv"),
    ("server_mtp_p50_ms", "MTP p50"), ("server_mtp_p95_ms", "MTP p95"),
    ("client_input_to_frame_p50_ms", "in→frame p50"), ("client_input_to_frame_p95_ms", "in→frame p95"),
    ("render_ms", "render ms"), ("encode_ms", "encode ms"), ("max_gap_s", "max gap s"),
    ("max_gap_during_generation_s", "gap in gen s"), ("jobs_done", "jobs"),
]


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    rows = []
    for n in args.players:
        print(f"round: {n} player(s), {args.duration:g} s ...", file=sys.stderr, flush=True)
        rows.append(await round_(args.url, n, args.duration))
        await asyncio.sleep(2.0)  # let the server drop the last round's players
    return rows


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
    p.add_argument("--bitrate", default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the rows (and settings) as JSON here")
    args = p.parse_args()
    proc = None
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        if args.url is None:
            proc, args.url = start_server(args, Path(tmp))
        try:
            import uvloop

            rows = uvloop.run(main_async(args))
        except ImportError:
            rows = asyncio.run(main_async(args))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    settings = {k: getattr(args, k) for k in ("renderer", "generator", "resolution", "fps", "codec", "bitrate", "duration")}
    print(f"settings: {settings}, cpus: {os.cpu_count()}")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
