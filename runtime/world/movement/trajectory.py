"""Lyra 2-compatible camera trajectories and captions, zoom presets, and walking a world along them.

Files, as Lyra 2's custom-trajectory inference reads them:

* ``trajectory.npz``: ``w2c`` ``[N, 4, 4]`` world-to-camera (OpenCV), ``intrinsics``
  ``[N, 3, 3]`` (or one ``[3, 3]``) in pixels for ``image_width`` x ``image_height``.
  Translations are relative to the first frame's monocular depth; ``pose_scale``
  (default 1.1, as Lyra's ``--pose_scale``) multiplies them.
* ``captions.json``: ``{"0": "...", "81": "...", ...}`` keyed by frame index. Lyra
  generates 80 frames per step after the first, so a trajectory has 1 + 80k frames
  and frame ``i >= 1`` belongs to the chunk starting at ``1 + 80 * ((i - 1) // 80)``;
  a chunk uses the caption with the largest key <= its start.

Presets ``zoom-in`` / ``zoom-out`` move the first camera along its own z axis by
``strength`` x the 25th-percentile depth of the first frame; zoom-out also lifts
the camera by 0.15 x the distance moved back.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..camera import Cameras, Pose, intrinsics_from_fov
from ..config import MAX_CAPTION_CHARS, MAX_COORD_M
from ..formats.npy import NpyError, read_npy
from ..players import PlayerState

CHUNK_FRAMES = 80
"""Frames Lyra 2 generates per autoregressive step."""
DEFAULT_POSE_SCALE = 1.1
PRESETS = ("zoom-in", "zoom-out")
DEFAULT_ZOOM_STRENGTH = {"zoom-in": 0.5, "zoom-out": 1.5}  # Lyra's --zoom_in_strength / --zoom_out_strength
ZOOM_OUT_LIFT = 0.15
PRESET_FOV_Y = math.radians(60.0)
"""Vertical field of view of preset cameras (Lyra estimates it from the image; we have no estimator)."""

# Limits on files, checked before anything is allocated (a trajectory is a user's file, maybe hostile).
MAX_POSES = 100_000
"""Most poses a trajectory may hold (Lyra's are 81 to a few thousand)."""
MAX_IMAGE_SIZE = 8192
"""Largest ``image_width`` / ``image_height`` in pixels (the CLI's largest video size)."""
MAX_CAPTIONS_BYTES = 1 << 20
"""Largest captions.json (1 MiB)."""
MAX_CAPTION_KEY_DIGITS = 9


class TrajectoryError(ValueError):
    """A trajectory or captions file that cannot be used; names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Trajectory:
    """``N`` camera poses with intrinsics for ``width`` x ``height``.

    Attributes:
        w2c: ``[N, 4, 4]`` float32 world-to-camera (OpenCV), pose scale already applied.
        K: ``[N, 3, 3]`` float32 intrinsics in pixels for ``width`` x ``height``.
    """

    w2c: np.ndarray
    K: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return self.w2c.shape[0]

    def cameras(self, width: int | None = None, height: int | None = None) -> Cameras:
        """All poses as cameras, intrinsics rescaled to ``width`` x ``height`` (default: the file's size)."""
        cams = Cameras(self.w2c, self.K, self.width, self.height)
        if width is None and height is None:
            return cams
        return cams.resized(width or self.width, height or self.height)

    def first(self, count: int) -> "Trajectory":
        return Trajectory(self.w2c[:count], self.K[:count], self.width, self.height)

    def pose(self, index: int) -> Pose:
        """Frame ``index`` as a player :class:`Pose` (yaw/pitch/roll of its rotation)."""
        return Pose.from_c2w(np.linalg.inv(self.w2c[index].astype(np.float64)))

    def fov_y(self, index: int = 0) -> float:
        """Vertical field of view of frame ``index`` (radians)."""
        return 2.0 * math.atan(0.5 * self.height / float(self.K[index, 1, 1]))

    @property
    def centers(self) -> np.ndarray:
        """``[N, 3]`` camera centres (metres)."""
        return self.cameras().centers


# ---------------------------------------------------------------- trajectory files
def load_trajectory(path: str | Path, pose_scale: float = DEFAULT_POSE_SCALE) -> Trajectory:
    """Read a Lyra ``trajectory.npz``; translations are multiplied by ``pose_scale``.

    Raises :class:`TrajectoryError` for a file that is not an .npz, lacks ``w2c``,
    has mismatched pose/intrinsics counts, non-finite or non-rigid poses, or bad
    intrinsics. ``image_width``/``image_height`` missing are taken as twice the
    principal point.
    """
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(path, "no such file")
    if not math.isfinite(pose_scale) or pose_scale <= 0:
        raise TrajectoryError(path, f"pose scale must be a positive number, got {pose_scale}")
    arrays, others = _read_npz(
        path, {"w2c": MAX_POSES * 16, "intrinsics": MAX_POSES * 9, "image_width": 16, "image_height": 16}
    )
    if "w2c" not in arrays:
        raise TrajectoryError(
            path,
            f"missing array 'w2c' (has: {', '.join(others[:10]) or 'nothing'}); a Lyra trajectory needs "
            "w2c [N,4,4], intrinsics [N,3,3], image_height, image_width",
        )
    w2c = np.asarray(arrays["w2c"], np.float64)
    if w2c.ndim == 2:
        w2c = w2c[None]
    if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or len(w2c) == 0:
        raise TrajectoryError(path, f"w2c must be [N, 4, 4] with N >= 1, got shape {list(w2c.shape)}")
    n = len(w2c)
    if "intrinsics" not in arrays:
        raise TrajectoryError(path, "missing array 'intrinsics' ([N, 3, 3] pixels)")
    K = np.asarray(arrays["intrinsics"], np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (n, 3, 3))
    if K.ndim != 3 or K.shape[1:] != (3, 3):
        raise TrajectoryError(path, f"intrinsics must be [N, 3, 3], got shape {list(K.shape)}")
    if len(K) != n:
        raise TrajectoryError(path, f"w2c has {n} poses but intrinsics has {len(K)}; counts must match")
    for name, arr in (("w2c", w2c), ("intrinsics", K)):
        bad = ~np.isfinite(arr).reshape(n, -1).all(axis=1)
        if bad.any():
            raise TrajectoryError(path, f"{name}[{int(np.argmax(bad))}] is not finite ({int(bad.sum())} bad pose(s))")
    centers = -np.einsum("nji,nj->ni", w2c[:, :3, :3], w2c[:, :3, 3]) * pose_scale  # c = -R^T t
    far = np.abs(centers).max(axis=1) > MAX_COORD_M
    if far.any():
        i = int(np.argmax(far))
        raise TrajectoryError(
            path, f"camera {i} is at {np.abs(centers[i]).max():.3g} m from the origin; at most {MAX_COORD_M:.0e} m is supported"
        )
    R = w2c[:, :3, :3]
    err = np.abs(R @ np.transpose(R, (0, 2, 1)) - np.eye(3)).reshape(n, -1).max(axis=1)
    if (err > 1e-3).any() or (np.linalg.det(R) < 0).any():
        i = int(np.argmax((err > 1e-3) | (np.linalg.det(R) < 0)))
        raise TrajectoryError(path, f"w2c[{i}] is not a rigid transform (its 3x3 rotation is not orthonormal)")
    if (np.abs(w2c[:, 3] - [0, 0, 0, 1]) > 1e-6).any():
        raise TrajectoryError(path, "w2c bottom rows must be [0, 0, 0, 1]")
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise TrajectoryError(path, "intrinsics focal lengths must be positive")
    width = _image_size(arrays, "image_width", 2.0 * float(K[0, 0, 2]), path)
    height = _image_size(arrays, "image_height", 2.0 * float(K[0, 1, 2]), path)
    w2c = w2c.copy()
    w2c[:, :3, 3] *= pose_scale
    return Trajectory(w2c.astype(np.float32), np.ascontiguousarray(K, np.float32), width, height)


def _image_size(arrays: dict, key: str, fallback: float, path: Path) -> int:
    if key not in arrays:
        value = fallback
    else:
        raw = np.asarray(arrays[key]).reshape(-1)
        if raw.size == 0 or not np.isfinite(raw.astype(np.float64)).all():
            raise TrajectoryError(path, f"{key} must be a positive number")
        value = float(raw[0])
    if not 0 < value <= MAX_IMAGE_SIZE:
        raise TrajectoryError(path, f"{key} must be between 1 and {MAX_IMAGE_SIZE} pixels, got {value:.6g}")
    return max(1, int(round(value)))


def _read_npz(path: Path, limits: dict[str, int]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays named in ``limits`` (each at most that many elements) from the .npz at ``path``,
    and the names of the others, which are never read (an extra array may be a 4 GiB bomb).

    Each array's header is checked (numeric dtype, element count) before its data is
    inflated, and only the bytes its header promises are read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            arrays = {}
            for name, limit in limits.items():
                if name in members:
                    with archive.open(members[name]) as f:
                        arrays[name] = _read_npy(path, name, f, limit)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise TrajectoryError(path, f"not a readable .npz file ({e})") from None
    return arrays, sorted(n for n in members if n not in limits)


def _read_npy(path: Path, name: str, f, limit: int) -> np.ndarray:
    try:
        return read_npy(f, limit)
    except NpyError as e:
        raise TrajectoryError(path, f"array {name!r} {e}") from None


def save_trajectory(path: str | Path, trajectory: Trajectory) -> None:
    """Write ``trajectory`` as a Lyra ``trajectory.npz`` (poses as stored: pose scale is not undone)."""
    np.savez(
        path,
        w2c=trajectory.w2c.astype(np.float32),
        intrinsics=trajectory.K.astype(np.float32),
        image_height=np.int64(trajectory.height),
        image_width=np.int64(trajectory.width),
    )


def is_lyra_length(frames: int) -> bool:
    """Lyra generates 1 + 80k frames (81, 161, 241, ...)."""
    return frames >= 1 and (frames - 1) % CHUNK_FRAMES == 0


def chunk_start(frame: int) -> int:
    """First frame of the Lyra chunk holding ``frame`` (frame 0, the input image, belongs to chunk 0)."""
    return 0 if frame <= 0 else 1 + CHUNK_FRAMES * ((frame - 1) // CHUNK_FRAMES)


# ---------------------------------------------------------------- captions
@dataclass(frozen=True)
class Captions:
    """Captions keyed by frame index, sorted by key."""

    entries: tuple[tuple[int, str], ...]

    def at(self, frame: int) -> str:
        """The caption with the largest key <= ``frame`` (the first one if every key is larger)."""
        if not self.entries:
            return ""
        chosen = self.entries[0][1]
        for key, text in self.entries:
            if key > frame:
                break
            chosen = text
        return chosen

    def for_frame(self, frame: int) -> str:
        """The caption the chunk generating ``frame`` uses."""
        return self.at(chunk_start(frame))


def load_captions(path: str | Path) -> Captions:
    """Read a Lyra ``captions.json`` (``{"0": "...", "81": "..."}``).

    At most :data:`MAX_CAPTIONS_BYTES`; keys are frame indices of at most
    :data:`MAX_CAPTION_KEY_DIGITS` digits; captions at most :data:`MAX_CAPTION_CHARS` characters.
    """
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(path, "no such file")
    size = path.stat().st_size
    if size > MAX_CAPTIONS_BYTES:
        raise TrajectoryError(path, f"captions file is {size:,} bytes; at most {MAX_CAPTIONS_BYTES:,} are read")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrajectoryError(path, f"not valid JSON ({e})") from None
    except RecursionError:
        raise TrajectoryError(path, "JSON nested too deeply; captions are one flat object of strings") from None
    if not isinstance(data, dict) or not data:
        raise TrajectoryError(path, 'captions must be a non-empty JSON object like {"0": "...", "81": "..."}')
    entries = []
    for key, text in data.items():
        digits = key.strip()
        if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_CAPTION_KEY_DIGITS):
            shown = key if len(key) <= 20 else f"{key[:20]}... ({len(key)} characters)"
            raise TrajectoryError(
                path, f"caption key {shown!r} is not a frame index (an integer of at most {MAX_CAPTION_KEY_DIGITS} digits)"
            )
        if not isinstance(text, str):
            raise TrajectoryError(path, f"caption for frame {digits} must be a string, got {type(text).__name__}")
        if len(text) > MAX_CAPTION_CHARS:
            raise TrajectoryError(path, f"caption for frame {digits} has {len(text):,} characters; at most {MAX_CAPTION_CHARS:,}")
        entries.append((int(digits), text))
    return Captions(tuple(sorted(entries)))


# ---------------------------------------------------------------- presets
def zoom_trajectory(
    preset: str,
    first_depth: np.ndarray,
    num_frames: int,
    width: int,
    height: int,
    fov_y: float = PRESET_FOV_Y,
    strength: float | None = None,
) -> Trajectory:
    """Lyra's zoom presets from the first camera (the world origin, facing +z).

    Args:
        preset: ``zoom-in`` (move forward) or ``zoom-out`` (move back and up).
        first_depth: ``[H, W]`` depth of the first frame (metres; ``inf`` = sky).
        num_frames: poses to make (the first is the origin).
        strength: distance as a multiple of the first frame's 25th-percentile depth
            (default 0.5 in, 1.5 out, as Lyra).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    strength = DEFAULT_ZOOM_STRENGTH[preset] if strength is None else float(strength)
    depth = np.asarray(first_depth, np.float64)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        raise ValueError("the first frame has no finite depth to scale the zoom by (all sky?)")
    distance = strength * float(np.percentile(valid, 25))
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    centers = np.zeros((num_frames, 3))
    if preset == "zoom-in":
        centers[:, 2] = t * distance
    else:
        centers[:, 2] = -t * distance
        centers[:, 1] = -ZOOM_OUT_LIFT * t * distance  # up is -y
    w2c = np.tile(np.eye(4), (num_frames, 1, 1))
    w2c[:, :3, 3] = -centers  # identity rotation: t = -R c
    K = np.broadcast_to(intrinsics_from_fov(width, height, fov_y), (num_frames, 3, 3))
    return Trajectory(w2c.astype(np.float32), np.ascontiguousarray(K, np.float32), width, height)


# ---------------------------------------------------------------- walking a world
def walk(
    world,
    trajectory: Trajectory,
    width: int,
    height: int,
    captions: Captions | None = None,
    fps: float = 16.0,
    player_id: str = "walkthrough",
    generate: bool = True,
    wait_timeout: float = 600.0,
    max_rounds: int = 4,
    on_wait: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``[height, width, 3]`` uint8 frames of ``world`` along ``trajectory``.

    With ``generate``, before each frame the world plans generation for a player at
    that pose moving as the trajectory moves (``fps`` frames a second) and we wait
    until the frontier is generated (up to ``max_rounds`` plan/wait rounds), so the
    frame shows generated space, never holes. The frame itself is rendered from the
    file's exact pose. ``captions`` switch the world's caption per Lyra chunk.
    """
    cams = trajectory.cameras(width, height)
    centers = trajectory.centers
    for i in range(len(trajectory)):
        if generate:
            if captions is not None:
                caption = captions.for_frame(i)
                if caption != world.caption:
                    world.set_caption(caption)
            j = min(i + 1, len(trajectory) - 1)
            step = (centers[j] - centers[i]) if j != i else (centers[i] - centers[max(i - 1, 0)])
            player = PlayerState(player_id, trajectory.pose(i), (step * fps).astype(np.float32), trajectory.fov_y(i))
            for round_ in range(max_rounds):
                jobs = world.update([player])
                if not jobs and round_ > 0:
                    break
                if on_wait is not None and jobs:
                    on_wait(len(jobs))
                world.wait_idle(wait_timeout)
                if not jobs:
                    break
        yield world.render(cams[i]).rgb[0]
