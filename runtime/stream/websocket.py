"""One WebSocket connection: the transport under one player.

The connection reads, checks and decodes what a client sends, answers ``ping`` and hands
every other message to its :class:`Link`, the layer above (``runtime.lobby.PlayerLink``:
``hello`` makes it a player in a session); what the layer above sends goes out through the
connection's :class:`ClientChannel` side. Nothing here knows of sessions, players or worlds.

What a client sends costs a bounded amount of work: frames are read at most
``FRAME_RATE_HZ`` a second (beyond that the server stops reading and TCP pushes back),
each message's size and value count are checked before it is unpacked (``protocol.decode``
with ``sender="client"``), a message larger than ``MAX_MESSAGE_BYTES`` (a ``hello`` with a
start image) is read only on a token of its client address's large-message budget and
within the server-wide one (``runtime.stream.large_reads``), both taken when its frame's
header arrives (:class:`SizeGuardedConnection`), and every message type
has a token bucket. Anything refused is answered with an ``error`` naming the
code and field, and the connection carries on. Outgoing messages go through a bounded queue
drained by one sender task, so a slow client can never block a session's loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable, Iterable, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, PayloadTooBig
from websockets.frames import CloseCode

from protocol import PROTOCOL_VERSION, ProtocolError, VersionMismatch, decode, encode, messages as m
from runtime.metrics import ServerMetrics
from runtime.stream.forwarded import Network, RequestSource, request_source
from runtime.stream.large_reads import LargeReads
from runtime.stream.rate_limit import BucketsByKey, TokenBucket
from runtime.stream.slow_refusal import SlowRefusals

log = logging.getLogger("worldstream.ws")
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+

OUTBOX_SIZE = 512
"""Messages waiting for a slow client; beyond this new ones are dropped (all are periodic or best-effort
except errors, which are small and rare)."""

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_IDLE = 1000  # a normal close: clients should not reconnect by themselves
CLOSE_REDIRECT = 1000  # after a redirect message: the client connects to the server it names


async def refuse_connection(ws: ServerConnection, limit: str, message: str, metrics: ServerMetrics, refusals: SlowRefusals) -> None:
    """Tell a connection over a connection quota why (a typed error naming ``limit``), then
    close it (1013); after ``refusals``' pause, so a client reconnecting in a loop is slowed."""
    metrics.protocol_errors.labels("limit_reached").inc()
    await refusals.wait()
    error = m.ErrorMessage(code="limit_reached", message=message[: m.MAX_ERROR_CHARS], limit=limit)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode(error))
        await ws.close(CLOSE_TRY_AGAIN, limit)

FRAME_RATE_HZ = m.INPUT_RATE_HZ + m.OTHER_RATE_HZ + m.CAPTION_RATE_HZ + m.SPLAT_RATE_HZ
"""Frames read per connection per second at most (every type's rate together): a client
sending faster is not read, so its flood waits in its own TCP buffers, not in the server."""
FRAME_BURST = m.INPUT_BURST + m.OTHER_BURST + m.CAPTION_BURST + m.SPLAT_RATE_HZ
LARGE_RATE_HZ = 0.2
"""Messages over ``MAX_MESSAGE_BYTES`` (hellos with a start image) per client address (see
``Connection``'s ``large_messages``): a burst of ``LARGE_BURST``, then one per 5 s. The token
is taken when the frame's header says the message grows past the limit; with none left the
connection is closed (1009) before the payload is read (``SizeGuardedConnection``)."""
LARGE_BURST = 2
OVERSIZE_STRIKES = 4
OVERSIZE_FORGIVE_S = 10.0
"""A client address whose connections were closed for oversized frames (1009) more than
``OVERSIZE_STRIKES`` times has further handshakes refused (HTTP 429) until one strike is
forgiven, every ``OVERSIZE_FORGIVE_S``: reconnecting to send 8 MiB again and again costs the
server a handshake and the start of each frame; this makes it cost a short HTTP reply."""
MAX_FRAME_BYTES = m.MAX_HELLO_BYTES + 4096
"""Largest WebSocket message read at all (beyond it: close 1009); ``decode`` refuses more
than ``MAX_HELLO_BYTES`` with ``too_large``."""
OVERSIZE_ABORT_S = 1.0
"""After closing a connection for an oversized frame (1009), the server stops reading it and
drops the TCP connection this long later (the time its close frame has to reach the client)."""


ADDRESS_BUDGET_REFUSAL = (f"message over {m.MAX_MESSAGE_BYTES} bytes with none of the address's budget for them left "
                          f"({LARGE_BURST}, then 1 per {1 / LARGE_RATE_HZ:g} s)")


class LargeMessageRefused(PayloadTooBig):
    """A frame taking its message past ``MAX_MESSAGE_BYTES`` with no large-message budget left:
    refused from its header (close 1009, ``reason`` its close reason), before its payload is
    read. ``limit``: the server-wide limit's flag (``runtime.stream.large_reads``), or None
    for the client address's own budget."""

    def __init__(self, size: int, limit: str | None, reason: str) -> None:
        super().__init__(size, m.MAX_MESSAGE_BYTES)
        self.limit, self.reason = limit, reason

    def __str__(self) -> str:
        return self.reason


def _no_large_message(n: int, starts: bool) -> Callable[[], None]:
    raise LargeMessageRefused(n, None, f"a message over {m.MAX_MESSAGE_BYTES // 1024} KiB before the server knows who sent it")


def _nothing() -> None:
    pass


class SizeGuardedConnection(ServerConnection):
    """websockets' server connection with two guards on large frames, both decided from a
    frame's header, before its payload is read:

    * a message growing past ``MAX_MESSAGE_BYTES`` takes a token from ``admit_large`` (the
      client address's large-message bucket and the server-wide budget, set by
      :class:`Connection`) at that moment, and without one it is refused (close 1009); each
      later frame of that message is charged to the server-wide budget alone. A frame
      admitted holds its place among the large reads in flight until its last byte is read
      or its connection is gone. websockets parses frames as their bytes arrive,
      ahead of what the server has handled (up to ``max_queue`` messages), so a limit set
      before each read would be checked against frames already under way: in a flood of 8
      connections, 17 messages of 8 MiB were read in 5 s on a budget of 2
      (``bench.loop_profile``), 10-15 ms of the event loop's CPU each.
    * once closed for an oversized frame (1009) the connection stops reading at once and is
      dropped ``OVERSIZE_ABORT_S`` later. websockets itself reads on and throws away the
      rest of the frame until the client's end of stream: up to 8 MiB copied through the
      event loop, 3-5 ms of its CPU per close (``bench.flood_cost``)."""

    _oversize_abort: asyncio.TimerHandle | None = None
    _finish_large: Callable[[], None] | None = None  # ends the large read under way
    large_refusal: LargeMessageRefused | None = None
    """Why a large frame was refused (the connection was closed 1009 for it), if one was."""
    source: RequestSource | None = None
    client_key: str | None = None
    """Who opened the connection and what per-client quotas count it by: worked out once, by
    the first of the server's handshake hooks that asks."""

    def __init__(self, protocol, *args, **kwargs) -> None:
        super().__init__(protocol, *args, **kwargs)
        # (frame's payload bytes, does it start the large message?) -> a call that ends its
        # read; raises LargeMessageRefused. None before the handler says whose budget pays.
        self.admit_large: Callable[[int, bool], Callable[[], None]] = _no_large_message
        # The parser fetches reader.read_exact anew for each frame; a frame's payload is
        # read with one call, after its header.
        read_exact = protocol.reader.read_exact

        def read_exact_within_budget(n: int):
            so_far = protocol.current_size or 0  # of a fragmented message under way
            if so_far + n <= m.MAX_MESSAGE_BYTES:
                return read_exact(n)
            try:
                finish = self.admit_large(n, so_far <= m.MAX_MESSAGE_BYTES)
            except LargeMessageRefused as exc:
                self.large_refusal = exc
                raise
            return self._read_large(read_exact(n), finish)

        protocol.reader.read_exact = read_exact_within_budget

    def _read_large(self, reading, finish: Callable[[], None]):
        """``reading`` (a payload's read_exact), then ``finish`` (or when the parser is dropped)."""
        self._finish_large = finish
        try:
            return (yield from reading)
        finally:
            self._end_large()

    def _end_large(self) -> None:
        finish, self._finish_large = self._finish_large, None
        if finish is not None:
            finish()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        close = self.protocol.close_sent
        if close is None or close.code != CloseCode.MESSAGE_TOO_BIG:
            return
        self.transport.pause_reading()  # again after websockets resumed it (its queue drained)
        if self._oversize_abort is None:
            self._oversize_abort = self.loop.call_later(OVERSIZE_ABORT_S, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._oversize_abort is not None:
            self._oversize_abort.cancel()
        self._end_large()  # a frame cut off mid-payload
        super().connection_lost(exc)


class ClientChannel(Protocol):
    """What the layer above may do with a client's connection."""

    peer: str  # "host:port", for logs
    client_address: str  # the client's IP address (behind a trusted proxy: the one it forwarded)

    def send(self, msg: m.Message | bytes) -> None:
        """Queue a message (or one already encoded) for the client; never blocks."""
        ...

    def error(self, code: str, message: str, field: str | None = None, ref_type: str | None = None, limit: str | None = None) -> None:
        """Send an ``error`` naming the code, the field, the message type it answers and the limit reached."""
        ...

    async def close(self, code: int, reason: str, flush: bool = True) -> None:
        """Send what is queued (with ``flush``; at most 2 s), then close the connection with ``code``."""
        ...


class Link(Protocol):
    """What a connection hands its client's messages to (the layer above: one per connection)."""

    @property
    def joined(self) -> bool:
        """A ``hello`` was accepted: other messages may follow."""
        ...

    async def hello(self, hello: m.Hello) -> bool:
        """Join (or refuse, with an ``error``); False ends the connection."""
        ...

    async def handle(self, msg: m.Message) -> None:
        """A joined client's message (anything but ``hello`` and ``ping``)."""
        ...

    async def closed(self) -> None:
        """The connection ended (either side)."""
        ...


class Connection:
    """The state of one WebSocket connection (see the module docstring).

    Args:
        ws: the accepted WebSocket.
        open_link: makes the connection's :class:`Link`, given its :class:`ClientChannel` side.
        hello_timeout_s: a connection with no accepted ``hello`` by then is closed.
        metrics: ``protocol_errors`` counts every error sent.
        large_messages: the server's buckets for messages over ``MAX_MESSAGE_BYTES``, by client address.
        large_reads: the server-wide budget for them (None: none).
        source: who opened ``ws``, if the server worked it out already (else it is, from
            ``ws``'s peer and request headers).
        oversize_strikes: the server's buckets of closes for oversized frames (1009), by client
            address (see ``OVERSIZE_STRIKES``); None counts nothing.
        trusted_proxies: proxies whose ``X-Forwarded-For`` names the client (``--trust-proxy``).
        idle_timeout_s: a joined client sending no input, head pose or caption for this long is
            disconnected (0: never).
    """

    def __init__(
        self,
        ws: ServerConnection,
        open_link: Callable[[ClientChannel], Link],
        hello_timeout_s: float,
        metrics: ServerMetrics,
        large_messages: BucketsByKey,
        trusted_proxies: Iterable[Network] = (),
        idle_timeout_s: float = 0.0,
        oversize_strikes: BucketsByKey | None = None,
        large_reads: LargeReads | None = None,
        source: RequestSource | None = None,
    ) -> None:
        self.ws = ws
        self._large_reads = large_reads
        self._oversize_strikes = oversize_strikes
        peer = ws.remote_address[:2] if ws.remote_address else ("?", 0)
        source = source or request_source(peer[0], ws.request.headers, trusted_proxies)
        self.client_address = source.address
        """The client's IP address (from a trusted proxy's ``X-Forwarded-For`` when there is one)."""
        self.peer = source.address if source.forwarded else "%s:%s" % peer  # for logs
        self.hello_timeout_s = hello_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.last_active = time.monotonic()  # when the client last played (idle timeout; see _plays)
        self.metrics = metrics
        self.link = open_link(self)
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_SIZE)
        self._dropped = 0
        self._buckets = {
            "input": TokenBucket(m.INPUT_RATE_HZ, m.INPUT_BURST),
            "caption": TokenBucket(m.CAPTION_RATE_HZ, m.CAPTION_BURST),
            # Acks answer pieces the server sent at most SPLAT_RATE_HZ a second; they may arrive bunched.
            "splat": TokenBucket(m.SPLAT_RATE_HZ, m.SPLAT_RATE_HZ),
            "other": TokenBucket(m.OTHER_RATE_HZ, m.OTHER_BURST),
            "large": large_messages.get(self.client_address),  # per address: reconnecting does not refill it
        }
        self._frames = TokenBucket(FRAME_RATE_HZ, FRAME_BURST)
        if isinstance(ws, SizeGuardedConnection):  # the server's own; a bare websockets one (tests) has no large-message guard
            ws.admit_large = self._admit_large

    # ------------------------------------------------------------------ sending
    def send(self, msg: m.Message | bytes) -> None:
        """Queue ``msg`` (a message, or one already encoded: broadcasts encode once) for the
        client; drops it if the client is far behind."""
        try:
            self._outbox.put_nowait(msg if isinstance(msg, bytes) else encode(msg))
        except asyncio.QueueFull:
            self.metrics.messages_dropped.labels("client_not_reading").inc()
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                log.warning("%s: client is not reading; %d messages dropped", self.peer, self._dropped)

    def error(self, code: str, message: str, field: str | None = None, ref_type: str | None = None, limit: str | None = None) -> None:
        self.metrics.protocol_errors.labels(code).inc()
        log.debug("%s: error %s: %s (field %s)", self.peer, code, message, field)
        self.send(m.ErrorMessage(code=code, message=message[: m.MAX_ERROR_CHARS], field=field, ref_type=ref_type, limit=limit))

    async def _sender(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                await self.ws.send(data)
            finally:
                self._outbox.task_done()

    async def close(self, code: int, reason: str, flush: bool = True) -> None:
        if flush:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 2.0)
        await self.ws.close(code, reason[:120])

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        sender = asyncio.create_task(self._sender(), name=f"send:{self.peer}")
        deadline = time.monotonic() + self.hello_timeout_s
        idle_s = self.idle_timeout_s
        try:
            while True:
                if not self.link.joined:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        self.error("not_joined", f"no valid hello within {self.hello_timeout_s:g} s")
                        await self.close(CLOSE_POLICY, "no hello in time")
                        return
                elif idle_s > 0:
                    timeout = self.last_active + idle_s - time.monotonic()
                    if timeout <= 0:
                        await self._close_idle(idle_s)
                        return
                else:
                    timeout = None
                if not self._frames.allow():  # over the frame rate: stop reading for a while
                    self.metrics.read_holds.inc()
                    while not self._frames.allow():
                        await asyncio.sleep(self._frames.seconds_to_token())
                try:
                    data = await self._recv(timeout)
                except asyncio.TimeoutError:
                    continue
                if not await self._handle(data):
                    return
                # Connections take turns, one message each per turn of the loop: a frame
                # already read comes back from recv() without waiting, and would otherwise be
                # handled before other connections' messages that arrived with it.
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            await self.link.closed()
            close = self.ws.protocol.close_sent
            if close is not None and close.code == 1009:
                self.metrics.connections_closed.labels("message_too_big").inc()
                refusal = getattr(self.ws, "large_refusal", None)
                server_busy = refusal is not None and refusal.limit is not None  # not the client's doing: no strike
                if self._oversize_strikes is not None and not server_busy:  # one strike
                    self._oversize_strikes.get(self.client_address).allow()

    async def _recv(self, timeout: float | None) -> bytes | str:
        """The next frame, within ``timeout`` s (None: no limit). Not ``wait_for``, which on
        Python 3.11 runs every read in a task of its own: 15-20 us of the event loop's CPU per
        message, a third of what a refused message costs it (``bench.flood_cost``)."""
        if _timeout is None:  # Python 3.10
            return await asyncio.wait_for(self.ws.recv(), timeout)
        async with _timeout(timeout):
            return await self.ws.recv()

    async def _handle(self, data: bytes | str) -> bool:
        """Handle one incoming frame (one over ``MAX_MESSAGE_BYTES`` took its large-message
        token before it was read: ``SizeGuardedConnection``); False ends the connection."""
        try:
            msg = decode(data, sender="client")  # bounded: see the module docstring
        except ProtocolError as exc:
            if not self._allow("other", exc.ref_type):
                return True
            if isinstance(exc, VersionMismatch) and not self.link.joined:
                return await self._refuse_version(exc.version)
            self.error(exc.code, exc.message, exc.field, exc.ref_type)
            return True
        bucket = {"input": "input", "head_pose": "input", "caption": "caption", "splat_ack": "splat"}.get(msg.TYPE, "other")
        if not self._allow(bucket, msg.TYPE):
            return True
        if _plays(msg):
            self.last_active = time.monotonic()
        try:
            return await self._dispatch(msg)
        except Exception:
            log.exception("%s: handling %s failed", self.peer, msg.TYPE)
            self.error("internal", f"the server failed to handle {msg.TYPE!r}; it carries on", None, msg.TYPE)
            return True

    def _admit_large(self, n: int, starts: bool) -> Callable[[], None]:
        """Admit a frame of ``n`` payload bytes whose header just came, of a message over
        ``MAX_MESSAGE_BYTES`` (``starts``: the frame takes it past that): takes a token of the
        client address's large-message budget (``starts`` only) and ``n`` bytes and a place in
        flight of the server-wide one; returns what ends the read, or raises
        :class:`LargeMessageRefused` (``SizeGuardedConnection`` asks)."""
        address = self._buckets["large"]
        reads = self._large_reads
        if starts and not address.ready():
            refusal = LargeMessageRefused(n, None, ADDRESS_BUDGET_REFUSAL)
        elif reads is not None and (limit := reads.refusal(n)) is not None:
            refusal = LargeMessageRefused(n, limit, reads.describe(limit))
            self.metrics.limit_refusals.labels(limit).inc()
        else:
            refusal = None
        if refusal is not None:
            self.metrics.large_messages.labels("refused").inc()
            raise refusal
        if starts:
            address.allow()
            self.metrics.large_messages.labels("read").inc()
        if reads is None:
            return _nothing
        reads.start(n)
        return reads.finish

    def _allow(self, bucket_name: str, ref_type: str | None) -> bool:
        """Take a token from the bucket; when empty, drop the message (``ref_type``, if
        known) and say so at most once a second."""
        bucket = self._buckets[bucket_name]
        if bucket.allow():
            return True
        if bucket.should_complain():
            rate = {"input": m.INPUT_RATE_HZ, "caption": m.CAPTION_RATE_HZ, "splat": m.SPLAT_RATE_HZ, "other": m.OTHER_RATE_HZ}[bucket_name]
            self.error("rate_limited", f"more than {rate} {bucket_name} messages per second; the excess is dropped", None, ref_type)
        return False

    async def _dispatch(self, msg: m.Message) -> bool:
        if isinstance(msg, m.Ping):
            self.send(m.Pong(id=msg.id, t_ms=msg.t_ms, server_ms=time.time() * 1e3))
            return True
        if isinstance(msg, m.Hello):
            if self.link.joined:
                self.error("already_joined", "this connection already joined a world; open a new connection", None, "hello")
                return True
            return await self.link.hello(msg)
        if not self.link.joined:
            self.error("not_joined", f"send hello before {msg.TYPE!r}", None, msg.TYPE)
            return True
        await self.link.handle(msg)
        return True

    async def _close_idle(self, idle_s: float) -> None:
        """Disconnect a client that stopped playing: its seat and its world's thread go to others."""
        self.metrics.limit_refusals.labels("idle_timeout").inc()
        log.info("%s: idle for %g s: disconnected", self.peer, idle_s)
        self.error("limit_reached", f"no input for {idle_s:g} s; disconnected (join again to play on)", None, None, "idle_timeout")
        await self.close(CLOSE_IDLE, f"idle for {idle_s:g} s")

    # ------------------------------------------------------------------ hello
    async def _refuse_version(self, version: int) -> bool:
        text = f"protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
        self.error("version_mismatch", text, "protocol_version", "hello")
        log.info("%s: refused: %s", self.peer, text)
        await self.close(CLOSE_POLICY, f"protocol version {version} unsupported, server speaks {PROTOCOL_VERSION}")
        return False


def _plays(msg: m.Message) -> bool:
    """Is ``msg`` someone playing (for the idle timeout)? Movement or turning, a VR head pose, a
    caption; not pings, and not the web client's once-a-second keepalive input with nothing held."""
    if isinstance(msg, m.Input):
        return bool(msg.forward or msg.right or msg.up or msg.yaw_delta or msg.pitch_delta)
    return isinstance(msg, (m.HeadPose, m.Caption))
