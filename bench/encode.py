"""Video encoding at scale: ms per frame per stream, and how many live streams a machine
encodes at 30 and 60 fps with fewer than 1% late frames.

Frames are a rendered walk through a procedural world (``bench.common.rendered_walk``:
moving, turning camera), played forward and backward so a loop never cuts.

Codecs:

* ``h264``: libx264 ultrafast / zerolatency, yuv420p (the server's ``VideoEncoder``);
* ``vp8``: libvpx realtime, cpu-used 8 (the server's ``VideoEncoder``);
* ``nvenc``: ``h264_nvenc`` low-latency preset, used when PyAV can open it on this
  machine, reported "not available" otherwise.

Every encode includes the RGB -> yuv420p conversion the server does per frame.

H.264 runs at constant quality capped at the bitrate (the server's default, ``--crf 18``)
or, with ``--crf off``, at the bitrate; ``--crf off,18`` compares both in one run. Every
single-stream row decodes what it encoded and reports its PSNR against the rendered frames,
so rows compare at known quality.

Capacity: one worker process per usable core; S streams are dealt out over the workers.
Each worker runs ticks at the frame rate; at each tick it encodes one frame for each of
its streams, and a frame is *late* when its encode ends after its tick's deadline (the
next tick). S ramps up (coarse steps, then bisection) until more than 1% of frames are
late; the largest S that passed is reported. Timings are wall-clock on shared cores:
compare ratios within one run.

    .venv/bin/python -m bench.encode [--resolutions 640x360,1280x720] [--fps 30,60]
        [--codecs h264,vp8,nvenc] [--crf off,18] [--trial-s 5] [--workers N] [--json out.json]
"""

from __future__ import annotations

import argparse
import fractions
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from bench.common import (
    crf_list, describe_machine, format_table, machine, ping_pong_index, psnr, rate_control_label, rendered_walk, usable_cores,
    write_json,
)

LATE_LIMIT = 0.01
"""A stream count passes when at most this fraction of frames is late."""
WARMUP_S = 0.5
"""Seconds of every trial run before frames are counted."""

CODEC_NAMES = ("h264", "vp8", "nvenc")


def bitrate_for(width: int, height: int) -> int:
    """This bench's bitrate: 2 Mbit/s at 640x360, scaled with the pixel count, at most 8
    (8 Mbit/s at 1280x720). Fixed since the first rows of docs/benchmarks.md so that rows
    stay comparable; the server's own default (``encoder.default_bitrate``) is lower:
    1.5 Mbit/s at 640x360@30, 6 at 1280x720@30. At CRF 18 (the default) it is only a cap."""
    return int(min(8_000_000, 2_000_000 * (width * height) / (640 * 360)))


# ---------------------------------------------------------------- encoders
class NvencEncoder:
    """``h264_nvenc`` with the same interface as the server's ``VideoEncoder`` (encode/last_encode_s)."""

    def __init__(self, width: int, height: int, fps: int, bitrate: int) -> None:
        import av

        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = fractions.Fraction(1, 90_000)
        ctx.framerate = fractions.Fraction(fps, 1)
        ctx.bit_rate = bitrate
        ctx.gop_size = 10 * fps
        # Lowest-latency settings: fastest preset, ultra-low-latency tuning, no B-frames,
        # no frame delay, constant bitrate (as a live stream would be).
        ctx.options = {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "cbr", "bf": "0"}
        ctx.open()
        self._ctx = ctx
        self._av = av
        self.last_encode_s = 0.0

    def encode(self, rgb: np.ndarray, pts: int, keyframe: bool = False):
        start = time.perf_counter()
        frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = pts
        packets = list(self._ctx.encode(frame))
        self.last_encode_s = time.perf_counter() - start
        return packets


def make_encoder(codec: str, width: int, height: int, fps: int, crf: int | None = None):
    """An encoder with ``encode(rgb, pts) -> packets``: the server's for h264/vp8, ours for nvenc.

    ``crf`` applies to h264 only (libx264's constant quality, capped at the bitrate; the
    settings ignore it for vp8).
    """
    if codec == "nvenc":
        return NvencEncoder(width, height, fps, bitrate_for(width, height))
    from runtime.stream.encoder import EncoderSettings, VideoEncoder

    # hardware=False: the h264 rows measure libx264 even where NVENC exists.
    return VideoEncoder(EncoderSettings(
        codec=codec, width=width, height=height, fps=fps, bitrate=bitrate_for(width, height), hardware=False, crf=crf,
    ))


def nvenc_status() -> str:
    """"available" when PyAV opens h264_nvenc and encodes a frame here, else why not."""
    try:
        import av

        if "h264_nvenc" not in av.codecs_available:
            return "not available: PyAV's FFmpeg lacks h264_nvenc"
        enc = NvencEncoder(256, 144, 30, 1_000_000)
        enc.encode(np.zeros((144, 256, 3), np.uint8), 0)
        return "available"
    except Exception as exc:  # no GPU, no driver, no NVENC engine (H100 has none), session limit
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:60] or type(exc).__name__
        return f"not available: {reason}"


# ---------------------------------------------------------------- per-frame cost
def encode_cost(frames: np.ndarray, codec: str, fps: int = 30, repeats: int = 1, crf: int | None = None) -> dict:
    """One stream, frames back to back: ms/frame (median, p95), bitrate at ``fps`` and the
    PSNR (dB, RGB) of the decoded stream against ``frames`` (N, H, W, 3) uint8."""
    import av

    count, height, width, _ = frames.shape
    enc = make_encoder(codec, width, height, fps, crf)
    decoder = av.CodecContext.create("vp8" if codec == "vp8" else "h264", "r")
    tick = 90_000 // fps
    psnrs: list[float] = []

    def decode(packets, rgb) -> None:  # outside the timed span
        for packet in packets:
            for picture in decoder.decode(packet):
                psnrs.append(psnr(rgb, picture.to_ndarray(format="rgb24")))

    decode(enc.encode(frames[0], 0), frames[0])  # the first (key)frame opens the stream; not timed
    times, sizes = [], []
    for k in range(1, repeats * max(2 * count - 2, 1) + 1):
        rgb = frames[ping_pong_index(k, count)]
        t = time.perf_counter()
        packets = enc.encode(rgb, k * tick)
        times.append(time.perf_counter() - t)
        sizes.append(sum(p.size for p in packets))
        decode(packets, rgb)
    ms = np.asarray(times) * 1e3
    return {
        "codec": codec,
        "rate": "bitrate" if isinstance(enc, NvencEncoder) else rate_control_label(enc.settings),
        "resolution": f"{width}x{height}",
        "frames": len(times),
        "ms_median": float(np.median(ms)),
        "ms_p95": float(np.percentile(ms, 95)),
        "fps_one_core": float(1e3 / np.mean(ms)),
        "mbit_s_at_fps": float(np.mean(sizes) * 8 * fps / 1e6),
        "target_mbit_s": bitrate_for(width, height) / 1e6,
        "psnr_db": float(np.mean(psnrs)) if psnrs else float("nan"),
    }


# ---------------------------------------------------------------- capacity trials
@dataclass(frozen=True)
class Trial:
    codec: str
    frames_path: str
    fps: int
    streams: int  # this worker's streams
    first_stream: int  # global index of its first stream (staggers keyframes and frames)
    total_streams: int
    duration_s: float
    crf: int | None = None


def _load_frames(path: str, cache: dict) -> np.ndarray:
    # Loaded into memory (not memory-mapped): page faults mid-trial would make frames late.
    if path not in cache:
        cache.clear()
        cache[path] = np.load(path)
    return cache[path]


def run_trial(trial: Trial, barrier=None, frames: np.ndarray | None = None) -> dict:
    """Encode ``trial.streams`` streams in real time in this thread; count late frames."""
    frames = frames if frames is not None else np.load(trial.frames_path)
    count, height, width, _ = frames.shape
    tick = 90_000 // trial.fps
    keyframe_ticks = int(4.0 * trial.fps)  # the server's keyframe interval (4 s)
    encoders, offsets = [], []
    for i in range(trial.streams):
        g = trial.first_stream + i
        enc = make_encoder(trial.codec, width, height, trial.fps, trial.crf)
        # Spread the streams' keyframes over the interval and start each at another frame,
        # as independent players would be; the opening keyframe is not timed.
        phase = (g * keyframe_ticks) // max(trial.total_streams, 1)
        enc.encode(np.ascontiguousarray(frames[g % count]), 0)
        encoders.append(enc)
        offsets.append((phase, g * 7))
    if barrier is not None:
        barrier.wait()
    period = 1.0 / trial.fps
    ticks = max(1, int(round(trial.duration_s * trial.fps)))
    # The first WARMUP_S are run but not counted: caches and the scheduler settle.
    warmup = int(WARMUP_S * trial.fps)
    late = encoded = 0
    busy = wall = 0.0
    t0 = time.perf_counter()
    for k in range(-warmup, ticks):
        if k == 0:
            late = encoded = 0
            busy = 0.0
            counted_from = time.perf_counter()
        start = t0 + (k + warmup) * period
        now = time.perf_counter()
        if now < start:
            time.sleep(start - now)
        deadline = start + period
        for enc, (phase, shift) in zip(encoders, offsets):
            rgb = np.ascontiguousarray(frames[ping_pong_index(k + shift, count)])
            t = time.perf_counter()
            enc.encode(rgb, (phase + 1 + warmup + k) * tick)
            done = time.perf_counter()
            busy += done - t
            encoded += 1
            late += done > deadline
    wall = time.perf_counter() - counted_from
    return {"encoded": encoded, "late": late, "busy_s": busy, "wall_s": wall}


def _worker_main(conn, barrier) -> None:
    """A worker process: run each Trial it is sent, reply with the result, stop on None."""
    cache: dict = {}
    while True:
        trial = conn.recv()
        if trial is None:
            return
        try:
            frames = _load_frames(trial.frames_path, cache)
            conn.send(run_trial(trial, barrier, frames))
        except Exception as exc:
            try:
                barrier.abort()  # release the others instead of leaving them waiting
            except Exception:
                pass
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


class WorkerPool:
    """One process per core, kept across trials; a barrier starts every trial at once."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent holds renderer/numba threads
        self.size = workers
        self.barrier = ctx.Barrier(workers)
        self.conns, self.procs = [], []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, self.barrier), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, codec: str, frames_path: str, fps: int, streams: int, duration_s: float, crf: int | None = None) -> dict:
        """Run ``streams`` streams over all workers; pooled counts."""
        self.barrier.reset()
        share = [streams // self.size + (i < streams % self.size) for i in range(self.size)]
        first = 0
        for conn, n in zip(self.conns, share):
            conn.send(Trial(codec, frames_path, fps, n, first, streams, duration_s, crf))
            first += n
        results = [conn.recv() for conn in self.conns]
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(errors[0])
        encoded = sum(r["encoded"] for r in results)
        late = sum(r["late"] for r in results)
        return {
            "streams": streams,
            "encoded": encoded,
            "late": late,
            "late_fraction": late / max(encoded, 1),
            "cpu_busy": sum(r["busy_s"] for r in results) / max(sum(r["wall_s"] for r in results), 1e-9),
        }

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def max_streams(pool: WorkerPool, codec: str, frames_path: str, fps: int, ms_per_frame: float, duration_s: float, log=print,
                crf: int | None = None) -> dict:
    """Largest stream count with <= 1% late frames: coarse ramp from an estimate, then bisection."""
    estimate = max(1, int(pool.size * (1000.0 / fps) / max(ms_per_frame, 1e-3)))
    step = max(1, estimate // 6)
    trials: list[dict] = []

    def passes(n: int) -> bool:
        r = pool.run(codec, frames_path, fps, n, duration_s, crf)
        trials.append(r)
        ok = r["late_fraction"] <= LATE_LIMIT
        log(f"  {codec} {fps} fps: {n:4d} streams -> {100 * r['late_fraction']:5.1f}% late {'ok' if ok else 'FAIL'}")
        return ok

    # Coarse ramp: from half the estimate upwards until a count fails.
    good, bad = 0, None
    n = max(1, estimate // 2)
    if not passes(n):
        bad = n
        n = 1  # even half the estimate fails (busy machine): ramp from one stream
        while n < bad and passes(n):
            good, n = n, n + max(1, (bad - 1) // 4)
        if n < bad:
            bad = n
    else:
        good = n
        while bad is None:
            n = good + step
            if passes(n):
                good = n
            else:
                bad = n
    # Bisection between the last count that passed and the first that failed.
    while bad - good > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return {"max_streams": good, "per_core": good / pool.size, "estimate": estimate, "trials": trials}


# ---------------------------------------------------------------- main
def parse_resolution(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def run(
    resolutions=((640, 360), (1280, 720)),
    fps_list=(30, 60),
    codecs=("h264", "vp8", "nvenc"),
    frame_count: int = 60,
    trial_s: float = 5.0,
    workers: int | None = None,
    capacity: bool = True,
    frames_by_resolution: dict | None = None,
    log=print,
    crfs=None,
) -> dict:
    """Measure everything; returns ``{"cost": [...], "capacity": [...], "nvenc": str, ...}``.

    ``crfs``: H.264 rate controls to compare (CRFs, None for the bitrate); default the server's.
    """
    from runtime.stream.encoder import EncoderSettings

    crfs = crfs or (EncoderSettings.crf,)
    workers = workers or usable_cores()
    nvenc = nvenc_status() if "nvenc" in codecs else "not requested"
    log(f"h264_nvenc: {nvenc}")
    active = [c for c in codecs if c != "nvenc" or nvenc == "available"]
    cost_rows, capacity_rows, sources = [], [], {}
    pool = WorkerPool(workers) if capacity else None
    tmpdir = tempfile.mkdtemp(prefix="bench-encode-")
    try:
        for width, height in resolutions:
            if frames_by_resolution and (width, height) in frames_by_resolution:
                frames, source = frames_by_resolution[(width, height)], "given"
            else:
                t = time.perf_counter()
                frames, source = rendered_walk(width, height, frame_count)
                log(f"{width}x{height}: {len(frames)} frames from {source} in {time.perf_counter() - t:.1f} s")
            sources[f"{width}x{height}"] = source
            path = os.path.join(tmpdir, f"frames_{width}x{height}.npy")
            np.save(path, frames)
            # CRF applies to h264 alone: every other codec runs once, rate-targeted.
            variants = [(codec, crf) for codec in active for crf in (crfs if codec == "h264" else (None,))]
            for codec, crf in variants:
                cost = encode_cost(frames, codec, crf=crf)
                cost_rows.append(cost)
                log(f"{codec} ({cost['rate']}) {width}x{height}: {cost['ms_median']:.2f} ms/frame median, "
                    f"{cost['mbit_s_at_fps']:.2f} Mbit/s at 30 fps, {cost['psnr_db']:.2f} dB")
                if pool is None:
                    continue
                for fps in fps_list:
                    found = max_streams(pool, codec, path, fps, cost["ms_median"], trial_s, log, crf)
                    capacity_rows.append({
                        "codec": codec, "rate": cost["rate"], "resolution": f"{width}x{height}", "fps": fps,
                        "max_streams": found["max_streams"], "per_core": found["per_core"],
                        "workers": workers, "estimate": found["estimate"], "trials": found["trials"],
                    })
            # NVENC rows appear in every table, measured or not, so a reader sees it was looked for.
            if nvenc != "available" and "nvenc" in codecs:
                cost_rows.append({"codec": "nvenc", "resolution": f"{width}x{height}", "note": nvenc})
                for fps in fps_list if capacity else ():
                    capacity_rows.append({"codec": "nvenc", "resolution": f"{width}x{height}", "fps": fps, "note": nvenc})
    finally:
        if pool is not None:
            pool.close()
        for name in os.listdir(tmpdir):
            os.remove(os.path.join(tmpdir, name))
        os.rmdir(tmpdir)
    return {"cost": cost_rows, "capacity": capacity_rows, "nvenc": nvenc, "workers": workers, "frame_sources": sources, "trial_s": trial_s}


COST_COLUMNS = [
    ("codec", "codec"), ("rate", "rate control"), ("resolution", "resolution"), ("ms_median", "ms/frame p50"), ("ms_p95", "ms/frame p95"),
    ("fps_one_core", "fps (1 core)"), ("mbit_s_at_fps", "Mbit/s @30fps"), ("target_mbit_s", "cap/target Mbit/s"),
    ("psnr_db", "PSNR dB"), ("note", "note"),
]
CAPACITY_COLUMNS = [
    ("codec", "codec"), ("rate", "rate control"), ("resolution", "resolution"), ("fps", "fps"), ("max_streams", "max streams (<1% late)"),
    ("per_core", "per core"), ("workers", "workers"), ("note", "note"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolutions", default="640x360,1280x720")
    ap.add_argument("--fps", default="30,60", help="stream frame rates for the capacity ramp")
    ap.add_argument("--codecs", default="h264,vp8,nvenc")
    ap.add_argument("--crf", type=crf_list, default=None, help="H.264 rate control to compare: CRFs (0-51) and/or 'off' (the bitrate), e.g. off,18 (default: the server's)")
    ap.add_argument("--frames", type=int, default=60, help="rendered frames in the walk (played ping-pong)")
    ap.add_argument("--trial-s", type=float, default=5.0, help="seconds per capacity trial")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: usable cores)")
    ap.add_argument("--no-capacity", action="store_true", help="only time single-stream encoding")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in codecs:
        if c not in CODEC_NAMES:
            ap.error(f"unknown codec {c!r}; choose from {CODEC_NAMES}")
    info = machine()
    print(describe_machine(info))
    result = run(
        resolutions=[parse_resolution(r) for r in args.resolutions.split(",")],
        fps_list=[int(f) for f in args.fps.split(",")],
        codecs=codecs, frame_count=args.frames, trial_s=args.trial_s, workers=args.workers,
        capacity=not args.no_capacity, crfs=args.crf,
    )
    print("\nSingle-stream encode cost (one thread, frames back to back):")
    print(format_table(result["cost"], COST_COLUMNS))
    if result["capacity"]:
        print(f"\nConcurrent streams with < {LATE_LIMIT:.0%} late frames ({result['workers']} worker processes, {args.trial_s:g} s trials):")
        print(format_table(result["capacity"], CAPACITY_COLUMNS))
    write_json(args.json_path, {"benchmark": "encode", "args": vars(args), **result})


if __name__ == "__main__":
    main()
