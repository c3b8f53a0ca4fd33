"""World leases: which server process owns which world, held in a Ray named actor.

Every server started with ``--ray`` shares one detached actor, ``worldstream-leases`` in the
server's Ray namespace. A server takes a world's lease before it opens or creates the world,
renews its leases every ``ttl/3`` seconds while the world is open, and gives the lease back
when it closes the world. A lease not renewed within ``ttl_s`` (its server died, or cannot
reach the cluster) has expired and the next server that asks takes it, loading the world from
the shared ``--worlds`` folder. A join for a world whose lease another live server holds is
redirected to that server's advertised URL.

Times are the actor's own clock (``time.monotonic`` in one process): servers' clocks never
need to agree.
"""

from __future__ import annotations

import time

LEASE_ACTOR = "worldstream-leases"


class LeaseBook:
    """The registry itself (runs as the named actor; a plain class, testable without Ray).

    ``holder`` is a server process's id, ``url`` where its players connect.
    """

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, str, float]] = {}  # world -> (holder, url, expires at)

    def acquire(self, world: str, holder: str, url: str, ttl_s: float) -> str | None:
        """Take or renew ``world`` 's lease for ``holder``: None if granted, else the URL of
        the server holding it."""
        now = time.monotonic()
        lease = self._leases.get(world)
        if lease is not None and lease[0] != holder and lease[2] > now:
            return lease[1]
        self._leases[world] = (holder, url, now + ttl_s)
        return None

    def renew(self, holder: str, url: str, worlds: list[str], ttl_s: float) -> list[str]:
        """Extend ``holder`` 's leases on ``worlds`` (taking back any that expired while
        nobody else took them); returns the worlds another server holds now."""
        return [w for w in worlds if self.acquire(w, holder, url, ttl_s) is not None]

    def release(self, world: str, holder: str) -> None:
        """Give ``world`` 's lease back (if ``holder`` still has it)."""
        lease = self._leases.get(world)
        if lease is not None and lease[0] == holder:
            del self._leases[world]

    def owners(self) -> dict[str, str]:
        """World -> URL of every live lease (for people and tests)."""
        now = time.monotonic()
        return {w: url for w, (_, url, expires) in self._leases.items() if expires > now}


class Leases:
    """One server's side of the lease registry (blocking calls: run them off the event loop).

    Args:
        url: where this server's players connect (``--advertise-url``), told to redirected players.
        ttl_s: how long a lease outlives its server's last renewal (``--lease-ttl``).
        namespace: the Ray namespace the registry actor lives in (the same for every server).
    """

    def __init__(self, url: str, ttl_s: float, namespace: str) -> None:
        import ray
        import uuid

        self._ray = ray
        self.url, self.ttl_s = url, ttl_s
        self.holder = uuid.uuid4().hex  # this process: a restarted server is a new holder
        # Detached: the registry outlives the server that happened to start it.
        self._book = ray.remote(LeaseBook).options(
            name=LEASE_ACTOR, namespace=namespace, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1
        ).remote()

    def acquire(self, world: str) -> str | None:
        """Take ``world`` 's lease: None if this server may open it, else the holder's URL."""
        return self._ray.get(self._book.acquire.remote(world, self.holder, self.url, self.ttl_s))

    def renew(self, worlds: list[str]) -> list[str]:
        """Renew the leases of the worlds open here; returns those another server holds now."""
        if not worlds:
            return []
        return self._ray.get(self._book.renew.remote(self.holder, self.url, worlds, self.ttl_s))

    def release(self, world: str) -> None:
        self._ray.get(self._book.release.remote(world, self.holder))

    def owners(self) -> dict[str, str]:
        return self._ray.get(self._book.owners.remote())
