"""A world's identity and generation settings: what is saved with it and tunes its planning."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

MAX_COORD_M = 1e5
"""Largest absolute world coordinate in metres a file may place a camera or Gaussian at
(the protocol holds players to the same ``MAX_COORD``)."""
MAX_CAPTION_CHARS = 4000
"""Longest caption a world accepts (clients are held to the protocol's shorter limit)."""


@dataclass
class WorldConfig:
    """A world's identity and generation settings (saved with the world).

    Planning fields (all optional; defaults suit the procedural generator):
        probe_width, probe_height: resolution of coverage probes (pixels).
        hole_probe_width, hole_probe_height: resolution of the probes the hole test draws
            (``hole_fraction``: the player's view now and soon, the views ahead) for a player
            moving slower than ``coarse_speed``. Finer than ``probe_width`` x ``probe_height``:
            at 64x36 the renderer's 0.3-pixel low-pass spreads each splat over about ten
            stream pixels, which closes the thin gaps a player is shown at 640x360 (grazing
            ground at the horizon), so the hole test saw a tenth of them and asked for their
            fill a second late.
        ring_yaws: headings (radians, relative to the player's yaw) tested around
            each player; four at 90 degrees cover 360 degrees at keyframe FOV.
        frontier_distances: a probe is tested only when a point this many metres
            along its heading lies in an ungenerated explored-map cell.
        explored_cell: explored-map cell size (metres).
        explored_mark_distance: a generated frame marks cells only for its points
            within this horizontal distance (metres), where its splats are dense.
        generate_unexplored_ahead: the player's view and the view ahead count as
            uncovered while their position lies in an ungenerated cell, even when
            distant, coarse splats cover them in alpha (keeps detail near players).
        merge_distance, merge_angle: a view within this distance (metres) and
            angle (radians) of a queued, running or finished job's view is that job.
        keyframe_pitch_range: (min, max) pitch of generated keyframes (radians).
        job_yaw_offsets: the keyframes of one job, as yaw offsets (radians) from the
            uncovered view's heading.
        max_concurrent_jobs: jobs submitted to the executor at once.
        stale_job_s: a queued job no player has asked for in this long is cancelled.
        retry_after_s: a failed view is not requested again for this long.
        refine_ratio: existing Gaussians wider than this many times what a new keyframe
            makes at their depth are coarse for it: it remakes their surface and they retire
            (see :mod:`.keyframes.refine`); 0 turns refinement off.
        detail_max_px, detail_reference_m, detail_pixel_deg: detail-aware planning. A
            probe view is too coarse when the splats it would show, for a surface
            ``detail_reference_m`` metres away, span more than ``detail_max_px`` pixels of a
            ``detail_pixel_deg``-per-pixel stream (640x360 at 60 degrees: 1/6 degree):
            estimated from the nearest keyframe facing that way (``merge_angle``), which
            saw that surface from its distance plus the reference. Such a view gets a
            keyframe even where alpha covers it (view and ring probes: where the player
            stands), pitched down to ``detail_pitch_deg`` at most so it remakes the near
            ground too. 0 turns it off.
        far_field_near_m, far_field_stride: the far field (see :mod:`.keyframes.far_field`):
            every keyframe's surfaces at least ``far_field_near_m`` metres away, one splat
            per ``far_field_stride`` keyframe pixels, drawn behind the scene in place of
            the bare sky; 0 turns it off.
        far_field_cell_m, far_field_max_gaussians: far chunks merge per far cell, a
            ``far_field_cell_m`` square of the ground holding the keyframes' cameras (0: every
            job's far splats stay a chunk of their own); past ``far_field_max_gaussians`` far
            Gaussians the cells farthest from the newest landing are dropped (0: no cap). See
            :meth:`.scene.Scene.land_far`.
        seam_blend_px: where a keyframe's new splats meet the scene's, their colours are
            matched to the scene's over about this many keyframe pixels (see
            :mod:`.keyframes.seams`); 0 turns it off.
        split_sky_edges: reconstruction draws blocks at the sky's edge with one Gaussian per
            keyframe pixel of their surface, not one per block (silhouettes against the sky
            drawn to the keyframe's pixel; see :func:`.keyframes.reconstruct.reconstruct`).
        sky_edge_opacity: the opacity of those per-pixel Gaussians (the others' is 0.95).
        fit_iterations: Jacobi steps fitting a new chunk's colours to its keyframes (one
            render of the keyframes each; see :mod:`.keyframes.fit`); 0 turns it off.
        fit_solve_iterations: conjugate-gradient iterations solving a new chunk's colours by
            least squares against its keyframes, every pixel exact (one trace of each keyframe;
            see :mod:`.keyframes.colour_solve`); 0: the Jacobi steps of ``fit_iterations`` instead.
        fit_neighbour_views: the least-squares colour fit also matches up to this many earlier
            keyframes (frame memory) that see the new chunk, the new splats drawn into their
            cameras with the scene; 0: the chunk's own keyframes only.
        hole_fraction, hole_reach_m: the player's own view (now and a second on) and the
            view ahead are tested for holes even inside explored space, and get a keyframe
            when more than ``hole_fraction`` of their pixels show the player neither splats
            nor the far field behind them nor known sky (every pixel, near or far); a hole a
            player saw is filled instead of kept until the frontier moves on, and no refining
            job runs meanwhile. ``uncovered_fraction`` still applies to every probe. 0 turns
            the test off. A hole-filling job's Gaussians within ``hole_reach_m`` metres of
            its camera are spared the keyframe revisit check.
        detail_scale: refining (detail) keyframes are made at this x ``keyframe_width`` x
            ``keyframe_height`` (640x360 at the defaults: one splat per ~1.2 stream pixels at
            the keyframe's distance, against ~2.5 at 320x180) while the player they are for moves
            slower than ``coarse_speed``. Detail jobs run only when no job that fills empty space
            is queued or running (the generator has slack), so the extra cost (about
            ``detail_scale**2`` per keyframe) never delays the frontier; fill jobs stay at the
            keyframe size. 1 turns it off.
        detail_fov_y: vertical field of view (radians) of refining keyframes; 0: ``keyframe_fov_y``.
            A refining keyframe sharpens space fill keyframes already cover, so it need not
            span as wide: the stream's 60 degrees give its pixels 1.33x the angular resolution
            of 75 degrees for the same trace cost (silhouettes are most of the remaining error).
        coarse_scale, coarse_speed: fill coarse first. A job that fills empty space while
            generation is behind -- the player's view shows a hole, another such job is
            queued or running, or the player asking moves at ``coarse_speed`` m/s or
            faster -- is traced at ``coarse_scale``
            x the keyframe resolution (about ``coarse_scale**2`` of the cost) and upsampled
            before reconstruction. 1 turns it off.
        ahead_step_m: a moving player's view ahead is tested at the lookahead point and at
            points along the way about this many metres apart (at most four), nearest first,
            so a keyframe asked for far ahead does not leave the path before it unmade
            (see :func:`.frontier.coverage.probe_views`); 0: the lookahead point only.
        revisit_radius_m, revisit_angle_deg: a player's view within this distance
            (metres) and angle (degrees) of a view a player was shown earlier is that
            view again: it is displayed as it was then (see :mod:`.seen_views`).
        keep_keyframe_views: new chunks may not change what earlier keyframes'
            reconstructions show (their splats there are dropped; see
            :meth:`.frontier.chunk_builder.ChunkBuilder._keep_earlier_views`). Off by default:
            keyframes are made ahead of players, mostly of places no one was shown yet, and
            what players were shown is kept by the frozen seen views; keeping every keyframe's
            view kept a closer keyframe out of what a far one had made (see docs/world.md,
            "Revisits").
    """

    name: str
    seed: int = 0
    caption: str = ""
    generator: str = "procedural"
    generator_options: dict = field(default_factory=dict)
    keyframe_width: int = 320
    keyframe_height: int = 180
    keyframe_fov_y: float = math.radians(75.0)
    lookahead_s: float = 1.5
    uncovered_fraction: float = 0.15
    max_retrieved_frames: int = 5
    # ---- planning (additions to the contract; all defaulted) ----
    probe_width: int = 64
    probe_height: int = 36
    hole_probe_width: int = 160
    hole_probe_height: int = 90
    ring_yaws: tuple = (0.0, math.pi / 2, -math.pi / 2, math.pi)
    frontier_distances: tuple = (0.0, 3.0, 6.0)
    explored_cell: float = 4.0
    explored_mark_distance: float = 10.0
    merge_distance: float = 3.0
    merge_angle: float = math.radians(40.0)
    keyframe_pitch_range: tuple = (math.radians(-45.0), math.radians(15.0))
    job_yaw_offsets: tuple = (0.0,)
    generate_unexplored_ahead: bool = True
    reconstruct_stride: int = 2
    split_sky_edges: bool = True
    sky_edge_opacity: float = 0.95
    max_concurrent_jobs: int = 1
    stale_job_s: float = 5.0
    retry_after_s: float = 10.0
    revisit_radius_m: float = 0.5
    revisit_angle_deg: float = 20.0
    refine_ratio: float = 2.0
    detail_max_px: float = 10.0
    detail_reference_m: float = 5.0
    detail_pixel_deg: float = 60.0 / 360.0
    detail_pitch_deg: float = -15.0
    far_field_near_m: float = 40.0
    far_field_stride: int = 2
    far_field_cell_m: float = 64.0
    far_field_max_gaussians: int = 1_000_000
    seam_blend_px: float = 24.0
    fit_iterations: int = 3
    fit_solve_iterations: int = 6
    fit_neighbour_views: int = 0
    hole_fraction: float = 0.02
    hole_reach_m: float = 15.0
    coarse_scale: float = 0.5
    coarse_speed: float = 3.0
    ahead_step_m: float = 8.0
    detail_scale: float = 2.0
    detail_fov_y: float = 0.0
    keep_keyframe_views: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("WorldConfig.name must be a non-empty string")
        if not isinstance(self.caption, str) or len(self.caption) > MAX_CAPTION_CHARS:
            length = len(self.caption) if isinstance(self.caption, str) else type(self.caption).__name__
            raise ValueError(f"caption must be a string of at most {MAX_CAPTION_CHARS} characters, got {length}")
        for name in ("keyframe_width", "keyframe_height", "probe_width", "probe_height", "hole_probe_width", "hole_probe_height"):
            value = getattr(self, name)
            if int(value) != value or not 8 <= value <= 8192:
                raise ValueError(f"WorldConfig.{name} must be an integer in [8, 8192], got {value!r}")
        if not 0.0 < self.keyframe_fov_y < math.pi:
            raise ValueError(f"WorldConfig.keyframe_fov_y must be in (0, pi) radians, got {self.keyframe_fov_y}")
        if not 0.0 <= self.uncovered_fraction < 1.0:
            raise ValueError(f"WorldConfig.uncovered_fraction must be in [0, 1), got {self.uncovered_fraction}")
        if not 0.0 <= self.lookahead_s <= 30.0:
            raise ValueError(f"WorldConfig.lookahead_s must be in [0, 30] seconds, got {self.lookahead_s}")
        if int(self.max_retrieved_frames) != self.max_retrieved_frames or not 0 <= self.max_retrieved_frames <= 64:
            raise ValueError(f"WorldConfig.max_retrieved_frames must be an integer in [0, 64], got {self.max_retrieved_frames}")
        if not 1 <= len(self.job_yaw_offsets) <= 8:
            raise ValueError(f"WorldConfig.job_yaw_offsets must hold 1 to 8 offsets, got {len(self.job_yaw_offsets)}")
        if int(self.max_concurrent_jobs) != self.max_concurrent_jobs or self.max_concurrent_jobs < 1:
            raise ValueError(f"WorldConfig.max_concurrent_jobs must be an integer >= 1, got {self.max_concurrent_jobs}")
        if int(self.fit_iterations) != self.fit_iterations or not 0 <= self.fit_iterations <= 16:
            raise ValueError(f"WorldConfig.fit_iterations must be an integer in [0, 16], got {self.fit_iterations!r}")
        if int(self.fit_solve_iterations) != self.fit_solve_iterations or not 0 <= self.fit_solve_iterations <= 64:
            raise ValueError(f"WorldConfig.fit_solve_iterations must be an integer in [0, 64], got {self.fit_solve_iterations!r}")
        if int(self.fit_neighbour_views) != self.fit_neighbour_views or not 0 <= self.fit_neighbour_views <= 16:
            raise ValueError(f"WorldConfig.fit_neighbour_views must be an integer in [0, 16], got {self.fit_neighbour_views!r}")
        if not 0.0 < self.revisit_radius_m <= 10.0:
            raise ValueError(f"WorldConfig.revisit_radius_m must be in (0, 10] metres, got {self.revisit_radius_m}")
        for name in ("refine_ratio", "detail_max_px"):
            if not 0.0 <= getattr(self, name) <= 1000.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1000] (0 = off), got {getattr(self, name)!r}")
        if not 0.1 <= self.detail_reference_m <= 1000.0 or not 0.001 <= self.detail_pixel_deg <= 10.0:
            raise ValueError(
                f"WorldConfig.detail_reference_m must be in [0.1, 1000] m and detail_pixel_deg in [0.001, 10] degrees, "
                f"got {self.detail_reference_m!r} and {self.detail_pixel_deg!r}"
            )
        if not (self.far_field_near_m == 0.0 or 1.0 <= self.far_field_near_m <= 1000.0):
            raise ValueError(f"WorldConfig.far_field_near_m must be 0 (off) or in [1, 1000] metres, got {self.far_field_near_m!r}")
        if int(self.far_field_stride) != self.far_field_stride or not 1 <= self.far_field_stride <= 64:
            raise ValueError(f"WorldConfig.far_field_stride must be an integer in [1, 64], got {self.far_field_stride!r}")
        if not (self.far_field_cell_m == 0.0 or 1.0 <= self.far_field_cell_m <= 10_000.0):
            raise ValueError(f"WorldConfig.far_field_cell_m must be 0 (no merging) or in [1, 10000] metres, got {self.far_field_cell_m!r}")
        if int(self.far_field_max_gaussians) != self.far_field_max_gaussians or not 0 <= self.far_field_max_gaussians <= 100_000_000:
            raise ValueError(
                f"WorldConfig.far_field_max_gaussians must be an integer in [0, 100000000] (0 = no cap), got {self.far_field_max_gaussians!r}"
            )
        if not 0.0 <= self.seam_blend_px <= 256.0:
            raise ValueError(f"WorldConfig.seam_blend_px must be in [0, 256] keyframe pixels (0 = off), got {self.seam_blend_px!r}")
        if not 0.0 <= self.hole_fraction < 1.0 or not 1.0 <= self.hole_reach_m <= 1000.0:
            raise ValueError(
                f"WorldConfig.hole_fraction must be in [0, 1) (0 = off) and hole_reach_m in [1, 1000] m, "
                f"got {self.hole_fraction!r} and {self.hole_reach_m!r}"
            )
        if not (self.detail_fov_y == 0.0 or 0.0 < self.detail_fov_y < math.pi):
            raise ValueError(f"WorldConfig.detail_fov_y must be 0 (the keyframe's) or in (0, pi) radians, got {self.detail_fov_y!r}")
        if not 0.1 <= self.coarse_scale <= 1.0 or not 0.0 <= self.coarse_speed <= 100.0:
            raise ValueError(
                f"WorldConfig.coarse_scale must be in [0.1, 1] (1 = off) and coarse_speed in [0, 100] m/s, "
                f"got {self.coarse_scale!r} and {self.coarse_speed!r}"
            )
        if not 0.0 <= self.ahead_step_m <= 1000.0:
            raise ValueError(f"WorldConfig.ahead_step_m must be in [0, 1000] metres (0 = one probe), got {self.ahead_step_m!r}")
        if not 1.0 <= self.detail_scale <= 4.0 or max(self.keyframe_width, self.keyframe_height) * self.detail_scale > 8192:
            raise ValueError(
                f"WorldConfig.detail_scale must be in [1, 4] (1 = off) and keep the detail keyframe within 8192 pixels a side, "
                f"got {self.detail_scale!r} for {self.keyframe_width}x{self.keyframe_height}"
            )
        if not 0.0 < self.revisit_angle_deg < 180.0:
            raise ValueError(f"WorldConfig.revisit_angle_deg must be in (0, 180) degrees, got {self.revisit_angle_deg}")
        if not isinstance(self.split_sky_edges, bool):
            raise ValueError(f"WorldConfig.split_sky_edges must be true or false, got {self.split_sky_edges!r}")
        if not 0.05 <= self.sky_edge_opacity <= 0.99:
            raise ValueError(f"WorldConfig.sky_edge_opacity must be in [0.05, 0.99], got {self.sky_edge_opacity!r}")
        if not isinstance(self.keep_keyframe_views, bool):
            raise ValueError(f"WorldConfig.keep_keyframe_views must be true or false, got {self.keep_keyframe_views!r}")
        # JSON round trips turn tuples into lists; keep tuples so configs compare equal.
        for name in ("ring_yaws", "frontier_distances", "keyframe_pitch_range", "job_yaw_offsets"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))

    def to_dict(self) -> dict:
        """JSON-able copy."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @staticmethod
    def from_dict(d: dict) -> "WorldConfig":
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(WorldConfig)}
        return WorldConfig(**{k: v for k, v in d.items() if k in known})
