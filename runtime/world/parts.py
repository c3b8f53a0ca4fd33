"""What a world's parts share: one typed object instead of positional wiring.

:class:`.world.World` builds one :class:`WorldParts` and hands it to each part (planner,
job runner, chunk builder, masked display). A part reads what it needs from it at use
time, so a map that :meth:`.world.World.restore` replaces is seen by every part at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import WorldConfig
from .events import EventBus
from .frontier.coverage import ExploredMap, SkyDirections
from .frontier.jobs import JobQueue
from .generators.base import DepthEstimator, Generator
from .keyframes.memory import FrameMemory
from .keyframes.optimise import ChunkOptimiser
from .movement.collision import SceneCollider
from .render.base import Renderer
from .scene import Scene
from .sky import Sky


@dataclass
class WorldStats:
    """A world's counters (``World.stats`` gives them by name).

    Each part adds to its own fields from its own thread; a read may be a moment stale.
    Times are milliseconds summed over all calls.
    """

    # Planning and jobs (world update, frontier planner, job runner).
    updates: int = 0
    probes_rendered: int = 0
    jobs_created: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_skipped: int = 0
    # Revisit consistency when a chunk lands: Gaussians dropped because earlier keyframes
    # saw something else there, and the time the check took.
    gaussians_dropped: int = 0
    revisit_check_ms: float = 0.0
    # Keyframes made from inside geometry (nearly all depth under ChunkBuilder's
    # INSIDE_DEPTH): dropped, they land no splats and no memory frame.
    keyframes_inside: int = 0
    # Refinement: coarse Gaussians retired because a closer keyframe remade their surface,
    # and jobs a player's view asked for because what it shows was made too coarse.
    gaussians_refined: int = 0
    detail_jobs: int = 0
    # Refining jobs made at detail_scale x the keyframe size (the generator had slack).
    fine_jobs: int = 0
    # The far field: splats it holds (summed over landings) and the time building them took.
    far_gaussians: int = 0
    far_field_ms: float = 0.0
    # Colour fitting of new chunks against their keyframes (keyframes/fit.py or, with
    # fit_solve_iterations, keyframes/colour_solve.py): chunks fitted, wall time, CPU time of
    # the fitting thread (load-independent: the solve is single threaded), and the views
    # (own keyframes and earlier ones) the solves matched.
    chunks_fitted: int = 0
    fit_ms: float = 0.0
    fit_cpu_ms: float = 0.0
    fit_views: int = 0
    # Outrunning generation: jobs traced coarse (fill coarse first), refining jobs
    # cancelled so a job filling empty space could run, and queued refining jobs cancelled
    # because a player was shown a hole a fill job was asked for.
    coarse_jobs: int = 0
    # Jobs asked for by the look-around (a ring heading's holes inside explored space).
    look_around_jobs: int = 0
    jobs_preempted: int = 0
    jobs_yielded: int = 0
    # Gaussians of jobs filling the holes a player looks at that the revisit check would
    # have dropped and that were kept (near the player; see ChunkBuilder.build).
    gaussians_spared: int = 0
    # Revisit consistency at display: views players were shown (all / frozen / found
    # unfinished, so shown plain), Gaussians of later chunks hidden from frozen views
    # (summed over masks), render calls for frozen-view groups, masks computed and their
    # time (pictures included).
    seen_views: int = 0
    seen_views_frozen: int = 0
    seen_views_unfinished: int = 0
    hidden_gaussians: int = 0
    masked_renders: int = 0
    masks_computed: int = 0
    mask_ms: float = 0.0
    # Chunk optimisation (opt-in, CUDA): chunks fitted to their keyframes, those whose fit
    # was not kept (it did not reproduce the keyframes better), the time it took and the
    # keyframe PSNR gained (dB, summed over kept chunks).
    chunks_optimised: int = 0
    chunks_optimise_rejected: int = 0
    optimise_ms: float = 0.0
    optimise_gain_db: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)


@dataclass
class WorldParts:
    """The state a world's parts share.

    Attributes:
        config: identity and generation settings.
        generator: makes keyframes; ``depth_estimator`` turns RGB-only ones into depth (or None).
        renderer: draws pictures and probe alpha.
        sky: the background behind every picture.
        start_image: ``[H, W, 3]`` uint8 image the world started from, or None.
        scene, memory, collider: the Gaussians, the kept keyframes, collision from the scene.
        explored, sky_directions: the coverage maps; replaced on restore, so read them here
            at use and keep no reference of your own.
        lock: the planner lock (an RLock): subscribers, jobs, view records, id counters and
            captions change together under it.
        jobs: queued and running jobs (under ``lock``).
        events: delivers what the world tells its subscribers.
        stats: the counters.
        optimiser: fits each new chunk to its keyframes before it lands, or None (off;
            :mod:`.keyframes.optimise`).
        clock: seconds for scheduling (``time.monotonic``, or a simulated clock).
    """

    config: WorldConfig
    generator: Generator
    depth_estimator: DepthEstimator | None
    renderer: Renderer
    sky: Sky
    start_image: np.ndarray | None
    scene: Scene
    memory: FrameMemory
    collider: SceneCollider
    explored: ExploredMap
    sky_directions: SkyDirections
    lock: threading.RLock
    jobs: JobQueue
    events: EventBus
    stats: WorldStats
    optimiser: ChunkOptimiser | None = None
    clock: Callable[[], float] = time.monotonic
