"""Helpers shared by the benchmarks: machine description, tables, ``--json`` output and a
realistic sequence of rendered frames to encode and stream.

Only numpy (and the project) is imported at module level: encode workers import this
module in fresh processes and must start fast.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


# ---------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first CUDA device's name, or None (torch imported lazily; absent is fine)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # broken driver setups raise all sorts
        return None


def machine() -> dict:
    """What the numbers were measured on (goes into every ``--json`` file and table header)."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu_name(),
        # Other processes share these cores: the load tells how contended a run was.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import av

        info["av"] = av.__version__
        info["ffmpeg"] = {k: ".".join(map(str, v)) for k, v in av.library_versions.items() if k == "libavcodec"}
    except ImportError:
        pass
    return info


def describe_machine(info: dict | None = None) -> str:
    info = info or machine()
    gpu = info.get("gpu") or "no GPU"
    return (
        f"{info['date']} | {info['usable_cores']} cores ({info['cpu']}), load {info.get('load_avg_1m')} | {gpu} | "
        f"Python {info['python']}, PyAV {info.get('av', '?')}"
    )


# ---------------------------------------------------------------- output
def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table (readable in a terminal too) of ``rows`` with ``(key, header)`` columns."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    headers = [h for _, h in columns]
    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    """Write ``payload`` plus the machine description to ``path`` (no-op when None)."""
    if not path:
        return
    out = {"machine": machine(), **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def process_memory_bytes(field: str = "VmRSS") -> int:
    """A line of this process's ``/proc/self/status`` in bytes (Linux; 0 elsewhere):
    ``VmRSS`` resident now, ``VmHWM`` the most it has been resident."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: Iterable[float], q: float) -> float | None:
    arr = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else None


# ---------------------------------------------------------------- when nothing comes
class Stopped(Exception):
    """The bench was told to stop from outside (SIGTERM, e.g. from ``timeout``)."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Stopped` in the main thread, so a bench stopped by ``timeout``
    still prints where it was and the server's state before it goes."""

    def raise_stopped(signum, frame):
        raise Stopped("stopped from outside (SIGTERM)")

    signal.signal(signal.SIGTERM, raise_stopped)


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (Linux; none where /proc cannot tell)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def process_diagnosis(pid: int | None, log_path: Path | None = None, tail_chars: int = 6000, budget_s: float = 8.0) -> str:
    """What a stalled server was doing: its log's tail and, where ``py-spy`` is on the PATH,
    the Python stacks of it and its children (media workers), within about ``budget_s``."""
    parts = []
    if log_path is not None and Path(log_path).exists():
        parts.append(f"--- server log (tail) ---\n{Path(log_path).read_text(errors='replace')[-tail_chars:]}")
    py_spy = shutil.which("py-spy")
    if pid is None:
        return "\n".join(parts)
    if py_spy is None:
        parts.append("(no py-spy on the PATH: no stacks)")
        return "\n".join(parts)
    deadline = time.monotonic() + budget_s
    for target in [pid, *child_pids(pid)]:
        left = deadline - time.monotonic()
        if left < 0.5:
            parts.append("(out of time for more stacks)")
            break
        try:
            done = subprocess.run([py_spy, "dump", "--pid", str(target)], capture_output=True, text=True, timeout=left)
            parts.append(f"--- py-spy dump {target} ---\n{(done.stdout + done.stderr).strip()}")
        except subprocess.TimeoutExpired:
            parts.append(f"--- py-spy dump {target}: no answer in time ---")
    return "\n".join(parts)


def stall_line(exc: BaseException) -> str:
    """One line for what stopped a bench: a client's stalled stage (also from a client
    process's traceback), or the exception."""
    text = str(exc).strip()
    for line in reversed(text.splitlines()):
        if "StreamStalled" in line:
            return line.split("StreamStalled: ", 1)[-1]
    stage = getattr(exc, "stage", None)
    return f"{stage}: {getattr(exc, 'detail', '')}" if stage else f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


# ---------------------------------------------------------------- encoder settings
def crf_list(text: str) -> list[int | None]:
    """``--crf`` of a bench: comma-separated CRFs and/or ``off``, each checked as the server's ``--crf``."""
    from runtime.config import crf_arg  # imported here: encode workers import this module and must start fast

    return [crf_arg(word) for word in text.split(",")]


def rate_control_label(settings) -> str:
    """A table cell for how ``settings`` (an ``EncoderSettings``) spend bits: the CRF where
    they encode at constant quality (``constant_quality()``: libx264), else ``bitrate``
    (VP8, NVENC, ``crf=None``)."""
    return str(settings.crf) if settings.constant_quality() else "bitrate"


# ---------------------------------------------------------------- frames
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images, 99 dB for identical ones (JSON has no inf)."""
    from bench.compare import psnr as exact_psnr

    value = exact_psnr(a, b)
    return 99.0 if math.isinf(value) else value


def walk_poses(count: int, eye_y: float, fps: float = 30.0, speed: float = 1.5, turn_rate: float = 0.35):
    """A player walking forward at ``speed`` m/s while looking around (yaw sway, slight pitch):
    every pixel moves, as in play, so inter-frame prediction has real work to do."""
    from runtime.world.camera import Pose

    poses = []
    for k in range(count):
        t = k / fps
        yaw = 0.6 * math.sin(turn_rate * 2 * math.pi * t / 2) + 0.15 * t
        pitch = -0.08 + 0.05 * math.sin(2 * math.pi * t / 3.0)
        # Walk straight along +z (where the world's first chunks are) while looking around;
        # a small head bob, as when walking.
        y = eye_y + 0.02 * math.sin(2 * math.pi * 1.8 * t)
        poses.append(Pose(np.array([0.0, y, speed * t], np.float32), yaw, pitch))
    return poses


CACHE_VERSION = 1
"""Bump when the walk or its rendering changes, so cached frames are not reused."""


def frame_cache_dir() -> Path:
    return Path(os.environ.get("WORLDSTREAM_BENCH_CACHE", Path.home() / ".cache" / "worldstream-bench"))


def rendered_walk(width: int, height: int, count: int, seed: int = 0, fps: float = 30.0, cache: bool = True) -> tuple[np.ndarray, str]:
    """``count`` frames ``[N, H, W, 3]`` uint8 of a walk through a procedural world, and their source.

    Preferred: the World with the CPU splat renderer (what the server streams). If the
    World cannot be built, the procedural generator traces the same walk directly; if
    that fails too, a synthetic moving pattern keeps the benchmarks runnable. Rendered
    walks are cached (``WORLDSTREAM_BENCH_CACHE``, default ``~/.cache/worldstream-bench``):
    rendering costs seconds to minutes, and every run then encodes the same pixels.
    """
    path = frame_cache_dir() / f"walk_v{CACHE_VERSION}_{width}x{height}_{count}_s{seed}_{fps:g}fps.npz"
    if cache and path.exists():
        try:
            with np.load(path) as data:
                return data["frames"], str(data["source"]) + " (cached)"
        except Exception:  # a torn cache file: render again
            pass
    frames, source = None, "synthetic"
    try:
        frames, source = _world_frames(width, height, count, seed, fps), "world+cpu-renderer"
    except Exception as exc:  # a colleague's module mid-change must not stop the benchmark
        print(f"[bench] World render failed ({type(exc).__name__}: {exc}); trying the procedural generator", file=sys.stderr)
    if frames is None:
        try:
            frames, source = _generator_frames(width, height, count, seed, fps), "procedural-generator"
        except Exception as exc:
            print(f"[bench] procedural generator failed ({type(exc).__name__}: {exc}); using synthetic frames", file=sys.stderr)
    if frames is None:
        return synthetic_frames(width, height, count), "synthetic"
    if cache and source == "world+cpu-renderer":  # fallbacks are not cached: retry the World next run
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, frames=frames, source=source)
            os.replace(tmp, path)
        except OSError:
            pass
    return frames, source


def _world_frames(width: int, height: int, count: int, seed: int, fps: float) -> np.ndarray:
    from runtime.world import PlayerState, World, WorldConfig
    from runtime.world.render import create_renderer

    world = World(WorldConfig(name="bench-walk", seed=seed), renderer=create_renderer("cpu"))
    try:
        from runtime.world.movement.motion import walk_target_eye_y

        spawn = world.spawn_pose()
        poses = walk_poses(count, float(spawn.position[1]), fps)
        # Generate around the spawn and once more half-way, so the walk stays inside splats.
        for pose in (poses[0], poses[len(poses) // 2]):
            world.update([PlayerState("bench", pose)])
            world.wait_idle(600)
        world.collider.sync(world.scene.snapshot())
        out = np.empty((count, height, width, 3), np.uint8)
        eye_y = float(spawn.position[1])
        for i, pose in enumerate(poses):
            # Follow the ground the scene provides (+y is down), keeping the head bob.
            ground_eye = walk_target_eye_y(float(pose.position[0]), float(pose.position[2]), eye_y, world.collider)
            if ground_eye is not None:
                eye_y = ground_eye
            pose.position[1] += eye_y - float(spawn.position[1])
            out[i] = world.render(pose.camera(width, height)).rgb[0]
        return out
    finally:
        world.close()


def _generator_frames(width: int, height: int, count: int, seed: int, fps: float) -> np.ndarray:
    from runtime.world.camera import Cameras
    from runtime.world.generators.base import CancelToken, GenerationRequest
    from runtime.world.generators.procedural import ProceduralGenerator

    poses = walk_poses(count, -1.6, fps)
    cams = Cameras.concat([p.camera(width, height) for p in poses])
    result = ProceduralGenerator().generate(GenerationRequest(cameras=cams, seed=seed), lambda f, m="": None, CancelToken())
    return result.rgb


def synthetic_frames(width: int, height: int, count: int) -> np.ndarray:
    """A scrolling, textured gradient: the last resort (and the fastest source for tests)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        s = 4.0 * i
        out[i, ..., 0] = (127 + 100 * np.sin((xx + s) / 37.0) * np.cos(yy / 23.0)).astype(np.uint8)
        out[i, ..., 1] = ((xx + yy + 2 * s) % 256).astype(np.uint8)
        out[i, ..., 2] = (127 + 120 * np.sin((yy - s) / 17.0)).astype(np.uint8)
    return out


def ping_pong_index(k: int, count: int) -> int:
    """Index of tick ``k`` in a sequence played forward then backward, so looping never cuts."""
    if count <= 1:
        return 0
    period = 2 * count - 2
    k %= period
    return k if k < count else period - k
