"""The server's link to a Ray cluster (``--ray``): connect once, one actor pool per generator.

:class:`RayGeneration` is what :mod:`runtime.sessions` asks for a world's generator when
``--ray`` is set. It connects in :meth:`RayGeneration.start` (blocking: call it off the
event loop), builds the server's generator pool there (so missing weights stop the server
at start, as without Ray) and a pool for any other generator a saved world names on first
use. Every world of the process shares its generator's pool.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

from .pool import ActorPool, PoolSettings, RayGenerator

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0
"""How long the server waits at start for its actors to load their generator (seconds)."""
FOLLOW_S = 15.0
"""How often pools without ``--ray-actors`` are resized to the cluster's resources (seconds)."""


@dataclass(frozen=True)
class RaySettings:
    """The ``--ray*`` flags.

    Attributes:
        address: ``auto`` (the cluster this machine belongs to: ``RAY_ADDRESS`` or a running
            ``ray start``; a private one-machine cluster if there is none) or a cluster
            address (``HOST:6379``, ``ray://HOST:10001``).
        actors: generator actors per pool; None: as many as the cluster's CPUs (or GPUs,
            with ``gpus_per_actor``) hold, followed as nodes join and leave.
        cpus_per_actor, gpus_per_actor: Ray resources each actor holds.
        namespace: the Ray namespace the server's actors and the world leases live in.
        advertise_url: where players reach this server (``--advertise-url``), for redirects;
            None: the URL it listens on.
        lease_ttl_s: how long a world's lease outlives its server's last renewal (``--lease-ttl``).
    """

    address: str = "auto"
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    namespace: str = "worldstream"
    advertise_url: str | None = None
    lease_ttl_s: float = 10.0
    init_kwargs: dict = field(default_factory=dict)  # extra ray.init arguments (tests)

    def actor_count(self, resources: dict) -> int:
        """Actors for a cluster with ``resources`` (``ray.cluster_resources()``)."""
        if self.actors is not None:
            return self.actors
        if self.gpus_per_actor > 0:
            return max(1, math.floor(resources.get("GPU", 0) / self.gpus_per_actor))
        return max(1, math.floor(resources.get("CPU", 1) / max(self.cpus_per_actor, 1e-3)))


class RayGeneration:
    """Generator pools on a Ray cluster, one per generator name (thread-safe)."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._pools: dict[str, ActorPool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def start(self, generator: str, options: dict) -> None:
        """Connect and make ``generator`` 's pool; raises the actors' error if they cannot load it."""
        import ray

        address = None if self.settings.address == "auto" else self.settings.address
        if not ray.is_initialized():
            ray.init(address=address, namespace=self.settings.namespace, **self.settings.init_kwargs)
        resources = ray.cluster_resources()
        log.info("ray: connected (%s CPUs, %s GPUs in the cluster)", resources.get("CPU", 0), resources.get("GPU", 0))
        self.pool(generator, options).wait_ready(READY_TIMEOUT_S)
        if self.settings.actors is None:  # the pools follow the cluster as it grows and shrinks
            self._follower = threading.Thread(target=self._follow_cluster, name="ray-pool-size", daemon=True)
            self._follower.start()

    def _follow_cluster(self) -> None:
        import ray

        while not self._stop.wait(FOLLOW_S):
            try:
                wanted = self.settings.actor_count(ray.cluster_resources())
            except Exception as exc:  # the cluster is unreachable for now: try again later
                log.warning("ray: cluster resources unavailable (%s)", type(exc).__name__)
                continue
            with self._lock:
                pools = dict(self._pools)
            for name, pool in pools.items():
                if len(pool.actors) != wanted:
                    log.info("ray: %s pool %d -> %d actors (the cluster changed)", name, len(pool.actors), wanted)
                    pool.resize(wanted)

    def pool(self, generator: str, options: dict) -> ActorPool:
        """``generator`` 's pool, started on first use (``options`` apply then)."""
        import ray

        with self._lock:
            pool = self._pools.get(generator)
            if pool is None:
                s = self.settings
                actors = s.actor_count(ray.cluster_resources())
                pool = ActorPool(PoolSettings(generator, dict(options), actors, s.cpus_per_actor, s.gpus_per_actor))
                self._pools[generator] = pool
                log.info("ray: %d %s actors (%g CPU, %g GPU each)", actors, generator, s.cpus_per_actor, s.gpus_per_actor)
            return pool

    def generator(self, name: str, options: dict) -> RayGenerator:
        """A world's generator: jobs go to ``name`` 's pool."""
        return RayGenerator(self.pool(name, options))

    def stats(self) -> dict[str, dict]:
        """Each pool's counters and in-flight jobs, by generator name (for /metrics)."""
        with self._lock:
            pools = dict(self._pools)
        return {name: {**vars(p.stats), "in_flight": p.in_flight, "actors": len(p.actors)} for name, p in pools.items()}

    def close(self) -> None:
        """Stop the actors this server started (the cluster stays up)."""
        self._stop.set()
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
