"""Refusals answered after a pause, so a client that retries in a loop costs little.

A client refused for a quota or a full server (``limit_reached``, ``server_busy``, a
handshake refused with HTTP 403/429) usually tries again as soon as it hears the answer.
Answered at once, one attacker's few connections make the server refuse hundreds of times
a second, each refusal a handshake and a hello on the event loop that the players' frames
then wait for. Answered after :data:`REFUSAL_DELAY_S`, each of its connections costs one
refusal a second, and the waiting costs nothing but a sleeping task and an open socket.
A client refused at the door for flooding (HTTP 429: it keeps knocking at its connection
limit) waits as long as its ``Retry-After`` says. At most :data:`MAX_HELD_REFUSALS`
refusals wait at once; beyond that they are answered at once, so the server never holds an
unbounded number of sockets open.
"""

from __future__ import annotations

import asyncio
import random

REFUSAL_DELAY_S = 1.0
"""Seconds a refusal waits before it is sent (a person hardly notices; a retry loop slows
to one attempt a second per connection)."""
MAX_HELD_REFUSALS = 256
"""Refusals waiting at once, all clients together. Each holds a socket open: with the
default ``--max-connections`` (256) the server stays far below the common limit of 1024
open files per process."""
JITTER = 0.25
"""Each pause is up to this fraction longer, at random: refusals that began together (a
flood's connections, opened at once) then end spread out, not in one burst of work on the
event loop."""


class SlowRefusals:
    """The server's waiting refusals (event loop only).

    Args:
        delay_s: how long each refusal waits (0: answered at once).
        max_held: how many may wait at once; more are answered at once.
    """

    def __init__(self, delay_s: float = REFUSAL_DELAY_S, max_held: int = MAX_HELD_REFUSALS) -> None:
        if delay_s < 0 or max_held < 0:
            raise ValueError(f"SlowRefusals: delay_s and max_held must be >= 0, got {delay_s} and {max_held}")
        self.delay_s = delay_s
        self.max_held = max_held
        self.held = 0

    async def wait(self, seconds: float | None = None) -> None:
        """Wait ``seconds`` (default ``delay_s``; none when ``delay_s`` is 0) before answering
        a refusal; at once when ``max_held`` refusals wait already."""
        seconds = self.delay_s if seconds is None or self.delay_s <= 0 else seconds
        if seconds <= 0 or self.held >= self.max_held:
            return
        self.held += 1
        try:
            await asyncio.sleep(seconds * (1.0 + JITTER * random.random()))
        finally:
            self.held -= 1
