"""Media worker benchmark: what each player's video costs after rendering, and how many fit.

The server's bound at 32 players at 720p30 on the H100 machine is the media workers
(encode, RTP, SRTP, UDP per player; ``runtime/stream/media_pool.py``). This bench runs
exactly that part, without a world or a renderer: a :class:`MediaPool` in this process,
one receiving aiortc peer per player in client processes (counting frames without
decoding them, as ``bench/stream.py --client-decode none``), and a frame clock that
stages a rendered walk into every player's picture ring at ``--fps``, as the render thread
does. Per player count it reports:

* sent fps per player (mean and the slowest player) and received fps,
* pictures dropped before encoding (a newer one came first: the worker was behind), and
  late frames: dropped, or sent more than one frame interval after their picture (the
  capacity criterion: the most players with < 1% late; ``--until-late`` ramps to it),
* the media workers' CPU (sum over workers, % of one core) and **CPU ms per sent frame**,
  the number to compare between code versions (it moves less with load than wall times),
* encode ms per frame (wall, in the worker) and picture → encoded frame p50/p95,
* the receiving processes' CPU (they share the machine: the measuring apparatus's cost).

Examples::

    .venv/bin/python -m bench.media                                   # 640x360@30, 1 and 4 players
    .venv/bin/python -m bench.media --resolution 1280x720 --players 1,2 --duration 5
    python3 -m bench.media --resolution 1280x720 --players 16,32,48 --client-procs 3 --server-cores 13   # H100 machine

``--server-cores N`` pins this process and its media workers to the first N cores and the
client processes to the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import multiprocessing as mp
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    Stopped, crf_list, describe_machine, format_table, percentile, ping_pong_index, process_diagnosis, rate_control_label,
    rendered_walk, stall_line, stop_on_sigterm, synthetic_frames, write_json,
)
from bench.stream import CLIENT_DECODE_ENV, CLIENT_DECODE_MODES, ServerCpu, lighten_receivers, run_loop, split_cores
from runtime.stream.encoder import EncoderSettings, default_bitrate
from runtime.stream.media_pool import MediaPool
from runtime.world.render.video import rgb_to_i420_reference

WARMUP_S = 1.5
CONNECT_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------- client processes
def _receivers_main(count: int, cores: list[int], inbox, outbox) -> None:
    """Entry point of one client process: ``count`` receive-only peers that count frames.

    Out: ``("offers", [sdp, ...])``, later ``("received", [frames per peer])``.
    In: ``("answers", [sdp, ...])``, later ``("stop",)``.
    """
    if cores:
        os.sched_setaffinity(0, cores)
    lighten_receivers(os.environ.get(CLIENT_DECODE_ENV, "full"))
    from aiortc import RTCPeerConnection, RTCSessionDescription

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peers = [RTCPeerConnection() for _ in range(count)]
        received = [0] * count

        def counting(i: int):
            def on_track(track) -> None:
                async def read() -> None:
                    while True:
                        try:
                            await track.recv()
                        except Exception:
                            return
                        received[i] += 1

                asyncio.ensure_future(read())

            return on_track

        for i, pc in enumerate(peers):
            pc.addTransceiver("video", direction="recvonly")
            pc.on("track", counting(i))
            await pc.setLocalDescription(await pc.createOffer())
        outbox.put(("offers", [pc.localDescription.sdp for pc in peers]))
        _, answers = await loop.run_in_executor(None, inbox.get)
        for pc, sdp in zip(peers, answers):
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        await loop.run_in_executor(None, inbox.get)  # ("stop",)
        outbox.put(("received", list(received)))
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)

    run_loop(main())


class Receivers:
    """The round's receiving peers, dealt out over ``procs`` spawned processes."""

    def __init__(self, players: int, procs: int, cores: list[int], timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        ctx = mp.get_context("spawn")
        self.groups = [len(g) for g in np.array_split(np.arange(players), min(procs, players))]
        self.inboxes = [ctx.Queue() for _ in self.groups]
        self.outboxes = [ctx.Queue() for _ in self.groups]
        self.procs = [
            ctx.Process(target=_receivers_main, args=(n, cores, i, o), daemon=True, name=f"bench-receivers-{k}")
            for k, (n, i, o) in enumerate(zip(self.groups, self.inboxes, self.outboxes))
        ]
        for p in self.procs:
            p.start()

    def _get(self, outbox, kind: str):
        try:
            what, payload = outbox.get(timeout=self.timeout_s)
        except queue.Empty:
            codes = [p.exitcode for p in self.procs]
            raise TimeoutError(f"receiver processes: no {kind!r} within {self.timeout_s:g} s (exit codes {codes})") from None
        if what != kind:
            raise RuntimeError(f"receiver process: expected {kind!r}, got {what!r}")
        return payload

    def offers(self) -> list[list[str]]:
        return [self._get(o, "offers") for o in self.outboxes]

    def answer(self, answers: list[list[str]]) -> None:
        for inbox, group in zip(self.inboxes, answers):
            inbox.put(("answers", group))

    def stop(self) -> list[int]:
        for inbox in self.inboxes:
            inbox.put(("stop",))
        counts = [n for o in self.outboxes for n in self._get(o, "received")]
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
        return counts


# ---------------------------------------------------------------------------- one round
def cpu_seconds(before: dict[int, int], after: dict[int, int], hz: int) -> float:
    return sum(t - before.get(pid, t) for pid, t in after.items()) / hz


async def run_round(players: int, pictures: np.ndarray, settings: EncoderSettings, args, client_cores: list[int]) -> dict:
    loop = asyncio.get_running_loop()
    pool = MediaPool(processes=args.workers)
    await pool.start()
    receivers = Receivers(players, args.client_procs, client_cores, args.stage_timeout)
    encoded: list[list] = [[] for _ in range(players)]
    try:
        offers = await loop.run_in_executor(None, receivers.offers)
        videos, answers = [], []
        for group in offers:
            answers.append([])
            for sdp in group:
                k = len(videos)
                video = await pool.create_video(settings, lambda f, k=k: encoded[k].append((time.monotonic(), f)), None, f"bench-{k}")
                videos.append(video)
                answers[-1].append(await video.answer(sdp))
        receivers.answer(answers)
        deadline = time.monotonic() + args.stage_timeout
        while not all(v.ready for v in videos):
            if time.monotonic() > deadline:
                states = sorted(v.state for v in videos if not v.ready)
                raise TimeoutError(
                    f"ICE not connected: {len(states)} of {players} videos not connected within {args.stage_timeout:g} s "
                    f"after their answers (states {states})"
                )
            await asyncio.sleep(0.05)

        cpu = ServerCpu(os.getpid())
        period = 1.0 / settings.fps
        start = time.monotonic()
        t0 = start + WARMUP_S
        t1 = t0 + args.duration
        before = after = None
        offered = 0
        tick = 0
        pids = {"workers": lambda: [w.process.pid for w in pool.workers], "receivers": lambda: [p.pid for p in receivers.procs]}
        while (now := time.monotonic()) < t1:
            if before is None and now >= t0:
                before = (now, {k: cpu.ticks(f()) for k, f in pids.items()})
            picture = pictures[ping_pong_index(tick, len(pictures))]
            for k, video in enumerate(videos):
                staged = video.stage(picture)
                video.offer(staged, now, tick, now, 0.0)
                offered += now >= t0
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - time.monotonic()))
        after = (time.monotonic(), {k: cpu.ticks(f()) for k, f in pids.items()})
        workers = len(pool.workers)  # started as players came, up to --workers
        await asyncio.sleep(0.5)  # frames in flight
        received = await loop.run_in_executor(None, receivers.stop)
        if not any(received):  # connected, yet nothing arrived: say where it stopped
            nothing = "no RTP" if not any(encoded) else "no frame received"
            print(f"[bench] stalled: {nothing}: {sum(map(len, encoded))} frames encoded, none received by the peers", file=sys.stderr, flush=True)
    finally:
        await pool.stop()

    wall = after[0] - before[0]
    worker_s = cpu_seconds(before[1]["workers"], after[1]["workers"], cpu.hz)
    receivers_s = cpu_seconds(before[1]["receivers"], after[1]["receivers"], cpu.hz)
    window = [[f for at, f in frames if t0 <= at < t1] for frames in encoded]
    sent = [len(w) for w in window]
    frames = [f for w in window for f in w]
    mtp = [f.mtp_s for f in frames if f.mtp_s is not None]
    dropped = sum(f.replaced for f in frames)
    late = sum(1 for t in mtp if t > period)  # sent, but more than a frame interval after its picture
    return {
        "players": players,
        "workers": workers,
        "sent_fps": round(sum(sent) / players / args.duration, 2),
        "sent_fps_min": round(min(sent) / args.duration, 2),
        "mbit_s": round(8e-6 * sum(f.bytes for f in frames) / players / args.duration, 2),
        "recv_fps": round(sum(received) / players / (t1 - start), 2),  # every frame since the clock started
        "dropped_pct": round(100.0 * dropped / max(1, offered), 2),
        "late_pct": round(100.0 * (dropped + late) / max(1, offered), 2),
        "workers_cpu_pct": round(100.0 * worker_s / wall, 1),
        "receivers_cpu_pct": round(100.0 * receivers_s / wall, 1),
        "cpu_ms_per_frame": round(1e3 * worker_s / max(1, sum(sent)), 2),
        "encode_ms": round(1e3 * float(np.median([f.encode_s for f in frames])), 2) if frames else float("nan"),
        "mtp_p50_ms": round(1e3 * percentile(mtp, 50), 1) if mtp else float("nan"),
        "mtp_p95_ms": round(1e3 * percentile(mtp, 95), 1) if mtp else float("nan"),
    }


COLUMNS = [
    ("players", "players"), ("encode_threads", "encoder threads"), ("rate", "rate control"), ("workers", "workers"), ("sent_fps", "sent fps"),
    ("sent_fps_min", "slowest"), ("mbit_s", "Mbit/s per player"), ("recv_fps", "recv fps"), ("dropped_pct", "dropped %"),
    ("late_pct", "late %"), ("workers_cpu_pct", "workers CPU %"),
    ("cpu_ms_per_frame", "CPU ms/frame"), ("encode_ms", "encode ms"), ("mtp_p50_ms", "picture→sent p50 ms"),
    ("mtp_p95_ms", "p95 ms"), ("receivers_cpu_pct", "receivers CPU %"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4], help="player counts (default 1,4)")
    p.add_argument("--resolution", default="640x360", help="WxH (default 640x360)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--bitrate", type=int, default=None, help="bits/s (default: the server's, scaled with pixels and fps)")
    p.add_argument("--codec", default="h264", choices=["h264", "vp8"])
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per round (default 5)")
    p.add_argument("--encode-threads", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                   help="encoder threads per stream to compare, e.g. 1,2 (default 0: the server's default)")
    p.add_argument("--crf", type=crf_list, default=str(EncoderSettings.crf),
                   help=f"H.264 constant quality to compare, e.g. off,18 ('off': encode at the bitrate; default {EncoderSettings.crf}, the server's)")
    p.add_argument("--rounds", type=int, default=1, help="repeat each configuration, alternating (default 1)")
    p.add_argument("--workers", type=int, default=None, help="media worker processes (default: one per server core)")
    p.add_argument("--client-procs", type=int, default=1, help="processes for the receiving peers (default 1)")
    p.add_argument("--server-cores", type=int, default=None, help="pin this process and its workers to the first N cores")
    p.add_argument("--client-decode", default="none", choices=CLIENT_DECODE_MODES,
                   help="receivers decode (full), count received frames (none, default) or count RTP headers (headers)")
    p.add_argument("--until-late", action="store_true", help="stop the player ramp after the first round with >= 1%% late frames")
    p.add_argument("--synthetic", action="store_true", help="a synthetic moving pattern instead of a rendered walk (fast)")
    p.add_argument("--stage-timeout", type=float, default=CONNECT_TIMEOUT_S,
                   help=f"seconds for the receivers' offers and the videos' connecting before the bench stops and says "
                        f"which had nothing (default {CONNECT_TIMEOUT_S:g})")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    width, height = (int(v) for v in args.resolution.lower().split("x"))
    server_cores, client_cores = split_cores(args.server_cores)
    if server_cores:
        os.sched_setaffinity(0, server_cores)  # the media workers inherit it
    if args.workers is None:
        args.workers = len(os.sched_getaffinity(0))
    os.environ[CLIENT_DECODE_ENV] = args.client_decode  # read by the spawned receiver processes
    bitrate = args.bitrate or default_bitrate(width, height, args.fps)
    settings = EncoderSettings(codec=args.codec, width=width, height=height, fps=args.fps, bitrate=bitrate)
    rgb, source = (synthetic_frames(width, height, 30), "synthetic") if args.synthetic else rendered_walk(width, height, 30)
    pictures = rgb_to_i420_reference(rgb)
    print(f"[bench] {describe_machine()}; frames: {source}; {args.codec} {width}x{height}@{args.fps} up to {bitrate / 1e6:g} Mbit/s", file=sys.stderr)

    stop_on_sigterm()
    try:
        rows = run_rounds(args, settings, pictures, client_cores)
    except (Exception, Stopped) as exc:  # say which stage had nothing, and what the workers were doing
        print(f"[bench] stalled: {stall_line(exc)}", file=sys.stderr, flush=True)
        print(process_diagnosis(os.getpid()), file=sys.stderr, flush=True)
        return 3
    print(format_table(rows, COLUMNS))
    write_json(args.json, {"settings": {**vars(args), "json": None, "bitrate": bitrate}, "rows": rows})
    return 0


def run_rounds(args, settings: EncoderSettings, pictures: np.ndarray, client_cores: list[int]) -> list[dict]:
    rows = []
    for players in args.players:
        for _ in range(args.rounds):
            for threads, crf in itertools.product(args.encode_threads, args.crf):  # alternating: drift hits every configuration
                configured = dataclasses.replace(settings, threads=threads, crf=crf)
                rate = rate_control_label(configured)
                print(f"[bench] round: {players} player(s), {threads or 'default'} encoder thread(s), rate control {rate}, "
                      f"{args.workers} worker(s), {args.duration:g} s", file=sys.stderr, flush=True)
                row = run_loop(run_round(players, pictures, configured, args, client_cores))
                rows.append({"encode_threads": threads or "default", "rate": rate, **row})
                print(format_table(rows[-1:], COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)
        if args.until_late and any(r["players"] == players and r["late_pct"] >= 1.0 for r in rows):
            break
    return rows


if __name__ == "__main__":
    sys.exit(main())
