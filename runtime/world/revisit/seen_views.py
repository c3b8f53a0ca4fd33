"""Views players were shown, remembered so that a place once seen looks the same forever.

A :class:`SeenView` is one view a player was shown: camera centre, forward direction and
vertical FOV. While a player stands in it (within ``revisit_radius_m`` and
``revisit_angle_deg``, matched at every :meth:`.world.World.update`) it is **active**: the
player watches the scene grow. When no player is in it any more it **freezes**: it keeps
the newest chunk id of the scene at that moment (``cap_chunk_id``). From then on a camera
at that view is shown the chunks up to the cap as they are, and later chunks only where
they leave that picture unchanged (deciding that is :mod:`.seen_masks`' job).

A frozen view never thaws, with one exception: a job that ``update`` created for a player
while it stood in the view, whose first keyframe is that view (it fills the holes the
player was looking at), is **pending** on it; when that job lands, the cap rises to take
its chunks in. What the player would have seen had it waited for its own view is what it
sees on return.

Records sit in a grid index of ``radius``-sized cells, so matching a pose costs a few
distance tests however many records a world has.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..camera import Cameras, Pose
from ..frontier.jobs import GenerationJob
from ..parts import WorldStats
from ..players import PlayerState
from ..scene import SceneSnapshot

NO_CHUNK = -1
"""``cap_chunk_id`` of a view frozen over an empty scene: no chunk is shown as it was."""

LANDED_JOBS_KEPT = 256
"""Jobs whose landing is remembered, for a job that lands before it is registered as pending."""

ANGLE_EPSILON = 1e-6
"""Slack on the cosine test, so a camera with a record's exact pose matches it despite rounding."""


@dataclass(frozen=True)
class FrozenView:
    """A frozen view as it stands at one moment: what a masked render needs.

    Immutable: when a pending job raises the cap, later lookups return a new one, so a
    render in flight keeps a consistent picture.

    Attributes:
        record_id: the :class:`SeenView` it comes from (unique within the world).
        center: ``[3]`` float64 camera centre in world coordinates (metres).
        forward: ``[3]`` float64 unit viewing direction (world coordinates).
        fov_y: vertical field of view (radians).
        cap_chunk_id: chunks with ids up to this one are shown as they are.
        pending_jobs: jobs generating this view, asked for while a player stood in it.
    """

    record_id: int
    center: np.ndarray
    forward: np.ndarray
    fov_y: float
    cap_chunk_id: int
    pending_jobs: frozenset = frozenset()

    def in_snapshot(self, snapshot: SceneSnapshot) -> "FrozenView":
        """This view with its cap over the chunks its pending jobs have in ``snapshot``.

        A job's chunks enter the scene a moment before :meth:`SeenViews.job_landed` raises
        the cap; taking them in here already makes the picture at one scene version the
        same before and after, so a caller may reuse pictures while the version stands.
        """
        if not self.pending_jobs:
            return self
        landed = [c.id for c in snapshot.chunks if c.id > self.cap_chunk_id and c.source.job_id in self.pending_jobs]
        return dataclasses.replace(self, cap_chunk_id=max(landed)) if landed else self

    def camera(self, width: int, height: int) -> Cameras:
        """The view as one camera of ``width`` x ``height`` pixels, level (no roll)."""
        return Pose(self.center, *yaw_pitch_of(self.forward)).camera(width, height, self.fov_y)


@dataclass
class SeenView:
    """One view a player was shown (mutable: guarded by :class:`SeenViews`' lock).

    Attributes:
        id: unique within the world, in creation order.
        center: ``[3]`` float64 camera centre (metres).
        forward: ``[3]`` float64 unit forward vector.
        fov_y: vertical field of view (radians); the picture is 16:9.
        cap_chunk_id: None while active; once frozen, the newest chunk id shown as it is.
        pending_jobs: ids of jobs generating this very view, asked for while a player stood in it.
    """

    id: int
    center: np.ndarray
    forward: np.ndarray
    fov_y: float
    cap_chunk_id: int | None = None
    pending_jobs: set[int] = field(default_factory=set)

    @property
    def frozen(self) -> bool:
        return self.cap_chunk_id is not None

    def frozen_view(self) -> FrozenView:
        if self.cap_chunk_id is None:
            raise ValueError(f"SeenView {self.id} is active: it has no cap_chunk_id yet")
        return FrozenView(self.id, self.center.copy(), self.forward.copy(), self.fov_y, self.cap_chunk_id, frozenset(self.pending_jobs))


def yaw_pitch_of(forward: np.ndarray) -> tuple[float, float]:
    """``(yaw, pitch)`` radians of a unit forward vector (world +y is down; yaw 0 faces +z)."""
    fx, fy, fz = (float(v) for v in forward)
    return math.atan2(fx, fz), math.asin(max(-1.0, min(1.0, -fy)))


def pose_forward(pose: Pose) -> np.ndarray:
    """``[3]`` float64 unit viewing direction of ``pose``."""
    forward = pose.c2w[:3, 2].astype(np.float64)
    return forward / np.linalg.norm(forward)


class SeenViews:
    """All views players were shown in one world: matching, freezing, pending jobs, persistence.

    Thread-safe: :meth:`observe` runs on the planner's thread, :meth:`job_landed` on the
    generation worker, :meth:`match_frozen` on render threads.

    Args:
        radius_m: a pose within this distance (metres) of a record's centre ...
        angle_rad: ... and this angle (radians) of its forward is that record's view.
        stats: the world's counters (``seen_views``, ``seen_views_frozen``).
    """

    def __init__(self, radius_m: float, angle_rad: float, stats: WorldStats) -> None:
        if not radius_m > 0:
            raise ValueError(f"SeenViews.radius_m must be > 0, got {radius_m}")
        if not 0 < angle_rad < math.pi:
            raise ValueError(f"SeenViews.angle_rad must be in (0, pi), got {angle_rad}")
        self.radius_m = float(radius_m)
        self.angle_rad = float(angle_rad)
        self._cos_angle = math.cos(angle_rad) - ANGLE_EPSILON
        self.stats = stats
        self._lock = threading.Lock()
        self._records: list[SeenView] = []
        self._cells: dict[tuple[int, int, int], list[SeenView]] = {}  # grid of radius-sized cells
        self._active: dict[int, SeenView] = {}  # matched at the last observe()
        self._frozen_count = 0
        self._pending_on: dict[int, list[SeenView]] = {}  # job id -> records it is pending on
        self._landed: OrderedDict[int, int] = OrderedDict()  # job id -> newest chunk id it landed (NO_CHUNK: none)
        self._count()

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[SeenView]:
        """Copies of all records, in creation order (for inspection and tests)."""
        with self._lock:
            return [
                SeenView(r.id, r.center.copy(), r.forward.copy(), r.fov_y, r.cap_chunk_id, set(r.pending_jobs))
                for r in self._records
            ]

    # ------------------------------------------------------------------ matching
    def _cell(self, center: np.ndarray) -> tuple[int, int, int]:
        return tuple(int(math.floor(float(v) / self.radius_m)) for v in center)  # type: ignore[return-value]

    def _nearest(self, center: np.ndarray, forward: np.ndarray) -> SeenView | None:
        """The record nearest ``center`` within the radius whose forward is within the angle (under the lock)."""
        ci, cj, ck = self._cell(center)
        best, best_d2 = None, self.radius_m * self.radius_m
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for dk in (-1, 0, 1):
                    for r in self._cells.get((ci + di, cj + dj, ck + dk), ()):
                        d = r.center - center
                        d2 = float(d @ d)
                        if d2 <= best_d2 and float(r.forward @ forward) >= self._cos_angle:
                            if best is None or d2 < best_d2:
                                best, best_d2 = r, d2
        return best

    def _add(self, center: np.ndarray, forward: np.ndarray, fov_y: float, cap: int | None) -> SeenView:
        """A new record in the index (under the lock); ``forward`` must be a unit vector."""
        record = SeenView(len(self._records), center, forward, float(fov_y), cap)
        self._records.append(record)
        self._cells.setdefault(self._cell(center), []).append(record)
        if cap is not None:
            self._frozen_count += 1
        return record

    def match_frozen(self, cameras: Cameras) -> list[FrozenView | None] | None:
        """Per camera, the frozen view it stands in, or None; None for all when none can match.

        A camera stands in a frozen view when the record nearest to it (within radius and
        angle) is frozen. An active record nearer than any frozen one wins: a player
        watching its own view grow must see it grow. Returns None at once while no
        record is frozen (the streaming hot path does no other work then).
        """
        if self._frozen_count == 0:
            return None
        centers = cameras.centers.astype(np.float64)  # [N, 3]
        forwards = cameras.forwards.astype(np.float64)  # [N, 3]
        forwards /= np.linalg.norm(forwards, axis=1, keepdims=True)
        out: list[FrozenView | None] = []
        with self._lock:
            for center, forward in zip(centers, forwards):
                r = self._nearest(center, forward) if np.isfinite(center).all() else None
                out.append(r.frozen_view() if r is not None and r.frozen else None)
        return out if any(v is not None for v in out) else None

    # ------------------------------------------------------------------ one update
    def observe(self, players: Sequence[PlayerState], newest_chunk_id: int) -> dict[str, SeenView]:
        """Match each player's view to a record (making one where none matches) and freeze the
        records active at the last call that no player stands in now, at ``newest_chunk_id``.

        Returns the record each player (by id) stands in; players with non-finite poses are left out.
        """
        with self._lock:
            matched: dict[str, SeenView] = {}
            for p in players:
                center = np.asarray(p.pose.position, np.float64)
                forward = pose_forward(p.pose)
                if not (np.isfinite(center).all() and np.isfinite(forward).all() and math.isfinite(p.fov_y)):
                    continue  # a bad client pose must not become a record
                record = self._nearest(center, forward)
                if record is None:
                    record = self._add(center, forward, p.fov_y, None)
                matched[p.player_id] = record
            now_active = {r.id: r for r in matched.values() if not r.frozen}
            for rid, record in self._active.items():
                if rid not in now_active:
                    record.cap_chunk_id = int(newest_chunk_id)
                    self._frozen_count += 1
            self._active = now_active
            self._count()
            return matched

    def add_pending(self, record: SeenView, job: GenerationJob) -> bool:
        """Make ``job`` pending on ``record`` if its first keyframe is the record's view.

        Returns whether it did. A job that already landed raises the cap at once.
        """
        center = job.cameras.centers[0].astype(np.float64)
        forward = job.cameras.forwards[0].astype(np.float64)
        forward /= np.linalg.norm(forward)
        with self._lock:
            d = center - record.center
            if float(d @ d) > self.radius_m * self.radius_m or float(forward @ record.forward) < self._cos_angle:
                return False
            landed = self._landed.get(job.id)
            if landed is not None:
                self._raise_cap(record, landed)
                return True
            record.pending_jobs.add(job.id)
            self._pending_on.setdefault(job.id, []).append(record)
            return True

    def job_landed(self, job_id: int, chunk_ids: Iterable[int]) -> None:
        """A job's chunks are in the scene: raise the cap of the frozen records it was pending on."""
        newest = max(chunk_ids, default=NO_CHUNK)
        with self._lock:
            self._landed[job_id] = newest
            while len(self._landed) > LANDED_JOBS_KEPT:
                self._landed.popitem(last=False)
            for record in self._pending_on.pop(job_id, ()):
                record.pending_jobs.discard(job_id)
                self._raise_cap(record, newest)

    @staticmethod
    def _raise_cap(record: SeenView, newest: int) -> None:
        # An active record needs nothing: it freezes later, at a cap at least this new.
        if record.cap_chunk_id is not None:
            record.cap_chunk_id = max(record.cap_chunk_id, newest)

    def forget_jobs(self, live_job_ids: Iterable[int]) -> None:
        """Drop pending jobs that ended without landing (failed, cancelled, skipped as covered)."""
        live = set(live_job_ids)
        with self._lock:
            for job_id in [j for j in self._pending_on if j not in live]:
                for record in self._pending_on.pop(job_id):
                    record.pending_jobs.discard(job_id)

    def _count(self) -> None:
        self.stats.seen_views = len(self._records)
        self.stats.seen_views_frozen = self._frozen_count

    # ------------------------------------------------------------------ persistence
    def to_state(self, newest_chunk_id: int) -> list:
        """JSON-able rows ``[cx, cy, cz, fx, fy, fz, fov_y, cap_chunk_id]``.

        Active records are written frozen at ``newest_chunk_id`` (the scene saved with
        them): a reopened world has no players yet, so they would freeze there anyway.
        Pending jobs are not kept: they do not survive a restart.
        """
        with self._lock:
            return [
                [*map(float, r.center), *map(float, r.forward), r.fov_y, int(newest_chunk_id) if r.cap_chunk_id is None else r.cap_chunk_id]
                for r in self._records
            ]

    def load_state(self, rows: Sequence[Sequence], newest_chunk_id: int) -> None:
        """Load :meth:`to_state` rows into an empty index; records that were active freeze at
        ``newest_chunk_id`` (their players are gone, and so are their pending jobs)."""
        with self._lock:
            if self._records:
                raise RuntimeError("SeenViews.load_state needs an empty index")
            for i, row in enumerate(rows):
                if len(row) != 8:
                    raise ValueError(f"seen_views[{i}] must hold 8 values (centre, forward, fov_y, cap), got {len(row)}")
                center = np.asarray(row[0:3], np.float64)
                forward = np.asarray(row[3:6], np.float64)
                if not (np.isfinite(center).all() and np.isfinite(forward).all() and abs(np.linalg.norm(forward) - 1.0) < 1e-3):
                    raise ValueError(f"seen_views[{i}]: centre must be finite and forward a unit vector")
                cap = int(newest_chunk_id) if row[7] is None else int(row[7])
                self._add(center, forward, float(row[6]), cap)
            self._count()
