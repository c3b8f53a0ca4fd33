"""The server-wide budget for large client messages (over ``MAX_MESSAGE_BYTES``: hellos with a
start image), on top of each client address's own.

Reading a large message costs the event loop CPU in proportion to its size (websockets
unmasks every byte: about 6 ms per 8 MiB), whoever sends it. A per-address budget stops one
address; many addresses (a botnet) could each spend theirs at once. This bounds all of them
together: bytes of large messages read per second (with a few seconds' burst), and large
messages being read at once (a slow sender's frame holds its place until the last byte or
its connection's keepalive gives up). Both are charged from a frame's header, before its
payload is read; a read refused is closed 1009 like one over its address's budget.
"""

from __future__ import annotations

import time

from protocol.messages import MAX_MESSAGE_BYTES

MIB = 2**20
BURST_S = 4.0
"""Seconds of the byte rate that may be read at once (the bucket's size; at least one frame of the largest size)."""


class LargeReads:
    """Large-message reads of all connections (event loop only).

    Args:
        bytes_per_s: bytes of large messages read per second on average, all clients together.
        max_in_flight: large messages being read at once.
        largest: the largest frame read at all (bytes): the burst holds at least one.
        clock: monotonic seconds (tests may drive it).
    """

    def __init__(self, bytes_per_s: float, max_in_flight: int, largest: int, clock=time.monotonic) -> None:
        if bytes_per_s <= 0 or max_in_flight < 1:
            raise ValueError(f"LargeReads: bytes_per_s must be > 0 and max_in_flight >= 1, got {bytes_per_s} and {max_in_flight}")
        self.rate = float(bytes_per_s)
        self.burst = max(self.rate * BURST_S, float(largest))
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._clock = clock
        self._bytes = self.burst
        self._last = clock()

    def refusal(self, n: int) -> str | None:
        """Which server-wide limit a read of ``n`` bytes would go over now (the flag's name), else None."""
        if self.in_flight >= self.max_in_flight:
            return "max_large_reads"
        now = self._clock()
        self._bytes = min(self.burst, self._bytes + (now - self._last) * self.rate)
        self._last = now
        return "max_large_read_mib_per_s" if self._bytes < n else None

    def start(self, n: int) -> None:
        """Charge a read of ``n`` bytes that :meth:`refusal` allowed; pair with :meth:`finish`."""
        self._bytes -= n
        self.in_flight += 1

    def finish(self) -> None:
        """A read :meth:`start` counted ended (read whole, or its connection gone)."""
        self.in_flight = max(0, self.in_flight - 1)

    def describe(self, limit: str) -> str:
        """``limit`` in words, short enough for a close frame's reason."""
        if limit == "max_large_reads":
            return f"{limit}: the server reads {self.max_in_flight} messages over {MAX_MESSAGE_BYTES // 1024} KiB at once; try again"
        return f"{limit}: the server reads {self.rate / MIB:g} MiB/s of messages over {MAX_MESSAGE_BYTES // 1024} KiB; try again"
