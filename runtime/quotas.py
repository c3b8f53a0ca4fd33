"""What anonymous clients may make the server spend: limits per client address and server-wide.

Rate limits per connection (``runtime.stream.rate_limit``) stop one socket from flooding;
these stop one *client* — any number of sockets from one address — and all clients
together from using up worlds, threads, disk and generation time. Every limit is a
server flag (:class:`Limits`); hitting one raises :class:`LimitReached`, which the
stream layer turns into an ``error`` with code ``limit_reached`` and ``limit`` naming the
flag, and counts in ``worldstream_limit_refusals_total{limit}``.

A client is its IP address; IPv6 clients are their /64 network, since one host
usually holds a whole /64 and could otherwise step through addresses.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field, fields
from typing import Callable

from runtime.stream.rate_limit import TokenBucket

HOUR_S = 3600.0
MINUTE_S = 60.0
FLOOD_WINDOW_S = 5.0
"""A client refused a connection this recently and still at its limit is flooding: further
handshakes are refused at the door (HTTP 429, ``Retry-After: 5``), before any WebSocket is
set up. As long as the ``Retry-After`` it is told: refusals are answered after a pause
(``runtime.stream.slow_refusal``), so a shorter window would have passed by the time a
client in a retry loop knocks again, and it would get a whole WebSocket each time."""
MAX_TRACKED_CLIENTS = 100_000
"""Client entries kept at most; beyond, the idle ones are forgotten first (see :meth:`Quotas.prune`)."""


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    """Every quota, named as its flag (``max_open_worlds`` is ``--max-open-worlds``); each
    field's ``help`` metadata says what it bounds (the flag's help text)."""

    max_connections_per_client: int = _limit(8, "WebSocket connections open at once from one client address")
    max_connections: int = _limit(256, "WebSocket connections open at once, all clients")
    max_new_worlds_per_client: int = _limit(10, "worlds one client address may create per hour")
    max_new_worlds: int = _limit(100, "worlds all clients together may create per hour")
    max_open_worlds: int = _limit(32, "worlds loaded at once (each holds its scene and a generation thread)")
    max_jobs_per_player: int = _limit(6, "generation jobs queued or running that one player asked for")
    max_jobs_per_world: int = _limit(24, "generation jobs queued or running in one world")
    max_captions_per_client: int = _limit(20, "caption changes per minute from one client address")
    max_captions_per_world: int = _limit(30, "caption changes per minute in one world")
    max_large_read_mib_per_s: int = _limit(
        16,
        "MiB per second of client messages over 64 KiB (hellos with a start image) read, all clients together, "
        "4 s of it at once; charged from each frame's header, beyond it the frame is refused unread (close 1009)",
    )
    max_large_reads: int = _limit(8, "client messages over 64 KiB (hellos with a start image) being read at once, all clients together")
    idle_timeout: float = _limit(
        600.0,
        "seconds a player may neither move, turn, send a head pose nor a caption before it is disconnected "
        "(pings and inputs with nothing held do not count; 0: never)",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < (0 if f.name == "idle_timeout" else 1):
                raise ValueError(f"{f.name} must be {'>= 0' if f.name == 'idle_timeout' else '>= 1'}, got {value}")


class LimitReached(Exception):
    """A request refused by a quota; ``limit`` is the :class:`Limits` attribute (the flag's name)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit, self.message = limit, message


def client_key(address: str | None) -> str:
    """The quota key of a peer address: the IPv4 address, or the IPv6 /64 it lies in."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Client:
    """One client address: its open connections and its hourly/minutely allowances."""

    __slots__ = ("connections", "worlds", "captions", "refused_at")

    def __init__(self, limits: Limits, clock) -> None:
        self.connections = 0
        self.refused_at = -1e9  # when a connection of its was last refused (monotonic s)
        self.worlds = TokenBucket(limits.max_new_worlds_per_client / HOUR_S, limits.max_new_worlds_per_client, clock)
        self.captions = TokenBucket(limits.max_captions_per_client / MINUTE_S, limits.max_captions_per_client, clock)

    def idle(self) -> bool:
        """Nothing to remember: a fresh entry would behave the same."""
        return self.connections == 0 and self.worlds.full() and self.captions.full()


class Quotas:
    """The server's quota book (event loop only).

    Args:
        limits: the limits.
        refused: called with the limit's name on every refusal (the metrics counter).
        clock: monotonic seconds (tests may drive it).
    """

    def __init__(self, limits: Limits, refused: Callable[[str], None] = lambda limit: None, clock=time.monotonic) -> None:
        self.limits = limits
        self._refused = refused
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._world_captions: dict[str, TokenBucket] = {}
        self.connections = 0
        self._all_refused_at = -1e9
        self._new_worlds = TokenBucket(limits.max_new_worlds / HOUR_S, limits.max_new_worlds, clock)

    def _refuse(self, limit: str, message: str) -> LimitReached:
        self._refused(limit)
        return LimitReached(limit, message)

    def _client(self, key: str) -> _Client:
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= MAX_TRACKED_CLIENTS:
                self.prune()
            client = self._clients[key] = _Client(self.limits, self._clock)
        return client

    # ---- connections ----
    def open_connection(self, key: str) -> None:
        """Count a new connection from ``key`` (raises :class:`LimitReached`); pair with :meth:`close_connection`."""
        lim = self.limits
        client = self._client(key)
        if client.connections >= lim.max_connections_per_client:
            client.refused_at = self._clock()
            raise self._refuse(
                "max_connections_per_client",
                f"{lim.max_connections_per_client} connections from your address are open already; close one first",
            )
        if self.connections >= lim.max_connections:
            self._all_refused_at = self._clock()
            raise self._refuse("max_connections", f"the server has {lim.max_connections} connections open; try again later")
        client.connections += 1
        self.connections += 1

    def flooding(self, key: str) -> LimitReached | None:
        """For a handshake: the limit ``key`` keeps running into (it was refused a connection
        within :data:`FLOOD_WINDOW_S` and is still at the limit), else None. Refusing those at
        the door costs far less than a WebSocket each; the first refusal still goes over the
        WebSocket as a typed error a person can read."""
        lim, now = self.limits, self._clock()
        client = self._clients.get(key)
        if client is not None and client.connections >= lim.max_connections_per_client and now - client.refused_at < FLOOD_WINDOW_S:
            return self._refuse("max_connections_per_client", f"{lim.max_connections_per_client} connections from your address are open already")
        if self.connections >= lim.max_connections and now - self._all_refused_at < FLOOD_WINDOW_S:
            return self._refuse("max_connections", f"the server has {lim.max_connections} connections open; try again later")
        return None

    def close_connection(self, key: str) -> None:
        client = self._clients.get(key)
        if client is not None and client.connections > 0:
            client.connections -= 1
            self.connections -= 1
            if client.idle():
                del self._clients[key]

    # ---- worlds ----
    def may_create_world(self, key: str) -> None:
        """Raise if ``key`` or the server has no world creation left this hour (takes nothing:
        a creation that fails, e.g. on a broken start image, costs no allowance)."""
        lim = self.limits
        if not self._client(key).worlds.ready():
            raise self._refuse(
                "max_new_worlds_per_client",
                f"your address may create {lim.max_new_worlds_per_client} worlds per hour; join an existing one or wait",
            )
        if not self._new_worlds.ready():
            raise self._refuse("max_new_worlds", f"the server creates at most {lim.max_new_worlds} worlds per hour; join an existing one or wait")

    def created_world(self, key: str) -> None:
        """Count a world ``key`` created (after :meth:`may_create_world`, under the same lock)."""
        self._client(key).worlds.allow()
        self._new_worlds.allow()

    def open_world(self, loaded: int) -> None:
        """Refuse loading one more world when ``loaded`` worlds are loaded already."""
        if loaded >= self.limits.max_open_worlds:
            raise self._refuse(
                "max_open_worlds", f"the server has {self.limits.max_open_worlds} worlds loaded; join one of them or try again later"
            )

    # ---- captions ----
    def caption(self, key: str, world: str) -> None:
        """Take one caption change from ``key``'s and ``world``'s per-minute allowance (or raise)."""
        lim = self.limits
        client = self._client(key)
        bucket = self._world_captions.get(world)
        if bucket is None:
            bucket = self._world_captions[world] = TokenBucket(lim.max_captions_per_world / MINUTE_S, lim.max_captions_per_world, self._clock)
        if not client.captions.ready():
            raise self._refuse("max_captions_per_client", f"your address may change captions {lim.max_captions_per_client} times per minute")
        if not bucket.ready():
            raise self._refuse("max_captions_per_world", f"this world's caption may change {lim.max_captions_per_world} times per minute")
        client.captions.allow()
        bucket.allow()

    def forget_world(self, world: str) -> None:
        """The world was unloaded: drop its caption allowance."""
        self._world_captions.pop(world, None)

    # ---- upkeep ----
    def prune(self) -> int:
        """Forget clients a fresh entry would stand in for; returns how many are left."""
        for key in [k for k, c in self._clients.items() if c.idle()]:
            del self._clients[key]
        return len(self._clients)
