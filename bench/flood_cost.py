"""What one bad message or refused connection costs the server's event loop, for each kind
the ``bench.attacks`` bad-message flood sends.

Starts a server (no players: its loop then does nothing but what this bench makes it do),
and for each kind opens real WebSocket connections from this process (each kind from its
own ``X-Forwarded-For`` address, through ``--trust-proxy 127.0.0.1``, so per-address
buckets start fresh), does the kind ``--count`` times and divides the CPU time the server's
main thread (its event loop, ``/proc/<pid>/task/<pid>/schedstat``) ran meanwhile, less what
it runs idle, by the count. CPU time, not wall time: other work on the machine hardly
changes it (the wall-clock column does change with load).

Kinds (what the server does with each):

* ``ping``: a valid ``ping``, answered with ``pong`` (the cheapest real message, to compare);
* ``bad_field``, ``nan``, ``far_head_pose``, ``unknown_type``, ``garbage``, ``text_frame``,
  ``bad_world``: small malformed messages, each answered with a typed ``error``;
* ``over_bucket``: a ``ping`` past its type's token bucket: decoded and dropped (one
  ``rate_limited`` a second);
* ``accept_close``: a connection opened and closed by the client without a message;
* ``read_8mib``: an 8 MiB message of empty arrays read whole (the address has a large-message
  token) and refused by ``protocol.decode`` (``too_large``);
* ``close_1009``: the same message with no large-message token left: the connection is closed
  (1009) from the frame's header;
* ``refused_429``: a handshake from an address with too many 1009 closes: HTTP 429;
* ``sustained``: 8 connections from one address sending ``bad_field`` messages as fast as the
  server reads them for 5 s (the worst a flood of small bad messages does: reads are held at
  ``FRAME_RATE_HZ`` per connection, 20 a second answered, the rest dropped): the number to
  read is the loop's CPU in % of one core; its items are an upper bound of the reads.

The connection kinds include their handshake and close; the message kinds are sent 30 per
connection (within the ``other`` bucket's burst), so a connection's share is small.

Example::

    .venv/bin/python -m bench.flood_cost --count 200
    .venv/bin/python -m bench.flood_cost --kinds bad_field,close_1009 --json out/flood_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.attacks import loop_cpu_ns
from bench.common import describe_machine, format_table, write_json
from bench.stream import ONE_HOST_QUOTAS, run_loop, start_server
from protocol import messages as m
from runtime.client import ws_url
from runtime.stream.websocket import FRAME_BURST, FRAME_RATE_HZ

PER_CONNECTION = 30
"""Small messages sent per connection (the ``other`` bucket's burst is ``OTHER_BURST``)."""
BIG = b"\xdc\x00\x7f" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 127  # 8.3 M empty arrays in 8 MiB, as bench.attacks
SETTLE_S = 0.2
"""Each measured stretch ends this long after the client saw its last answer: the server's
own work after the answer (closing, its handler's end) is counted too."""


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


SMALL = {
    "ping": (_raw({"type": "ping", "id": 1}), "pong"),
    "bad_field": (_raw({"type": "input", "seq": "seven"}), "bad_field"),
    "nan": (_raw({"type": "input", "seq": 1, "forward": float("nan")}), "bad_field"),
    "far_head_pose": (_raw({"type": "head_pose", "seq": 1, "position": [1e9, 0, 0], "orientation": [1, 0, 0, 0]}), "bad_field"),
    "unknown_type": (_raw({"type": "fly_to_moon"}), "unknown_type"),
    "garbage": (b"\xc1garbage", "bad_message"),
    "text_frame": ("a text frame", "bad_message"),
    "bad_world": (_raw({"type": "hello", "protocol_version": m.PROTOCOL_VERSION, "world": "../../etc"}), "bad_field"),
}
KINDS = (*SMALL, "over_bucket", "accept_close", "read_8mib", "close_1009", "refused_429", "sustained")
SUSTAINED_S = 5.0
SUSTAINED_CONNECTIONS = 8


@dataclass
class Meter:
    """Loop CPU (ns) and wall time (s) over measured stretches, and how many items they held."""

    pid: int
    idle_ns_per_s: float = 0.0
    cpu_ns: int = 0
    wall_s: float = 0.0
    items: int = 0
    outcomes: dict = field(default_factory=dict)
    sys_ticks: int = 0
    ticks: int = 0
    _t0: float = 0.0
    _c0: int = 0
    _ticks0: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._c0, self._t0, self._ticks0 = loop_cpu_ns(self.pid), time.monotonic(), loop_ticks(self.pid)

    async def stop(self, items: int, outcome: str | list[str]) -> None:
        """End a stretch of ``items`` items with ``outcome`` (one for all, or one each)."""
        await asyncio.sleep(SETTLE_S)
        self.cpu_ns += loop_cpu_ns(self.pid) - self._c0
        self.wall_s += time.monotonic() - self._t0
        user, system = loop_ticks(self.pid)
        self.ticks += user + system - sum(self._ticks0)
        self.sys_ticks += system - self._ticks0[1]
        self.items += items
        for one in [outcome] * items if isinstance(outcome, str) else outcome:
            self.outcomes[one] = self.outcomes.get(one, 0) + 1

    def per_item_us(self) -> float:
        return (self.cpu_ns - self.idle_ns_per_s * self.wall_s) / 1e3 / max(1, self.items)


def loop_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks the server's main thread has run: which share of its time
    the kernel spent (socket calls, the loopback's delivery) and which the interpreter."""
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _code(data) -> str:
    reply = msgpack.unpackb(data)
    return reply.get("code") or reply.get("type")


def _headers(address: str) -> dict:
    return {"X-Forwarded-For": address}


async def _replies(ws, count: int) -> str:
    """Wait for ``count`` replies; the last one's code (or type)."""
    code = ""
    for _ in range(count):
        code = _code(await asyncio.wait_for(ws.recv(), 30))
    return code


async def small_messages(url: str, meter: Meter, kind: str, count: int, address: str) -> None:
    data, _ = SMALL[kind]
    sent = 0
    while sent < count:
        n = min(PER_CONNECTION, count - sent)
        async with connect(url, compression=None, additional_headers=_headers(address)) as ws:
            meter.start()
            for _ in range(n):
                await ws.send(data)
            code = await _replies(ws, n)
            await meter.stop(n, code)
        sent += n


async def over_bucket(url: str, meter: Meter, count: int, address: str) -> None:
    """``ping`` messages past the ``other`` bucket: the connection first empties it (not
    measured), then sends ``count`` more; an ``input`` (its own bucket) marks the end."""
    data = SMALL["ping"][0]
    marker = _raw({"type": "input", "seq": 1})  # not joined yet: answered with not_joined
    async with connect(url, compression=None, additional_headers=_headers(address)) as ws:
        for _ in range(m.OTHER_BURST):
            await ws.send(data)
        await _replies(ws, m.OTHER_BURST)
        sent = 0
        while sent < count:  # the frame bucket (FRAME_BURST) would hold a long batch back: 100 at a time
            n = min(100, count - sent)
            meter.start()
            for _ in range(n):
                await ws.send(data)
            await ws.send(marker)
            while (code := await _replies(ws, 1)) != "not_joined":
                pass
            await meter.stop(n, "dropped")
            sent += n
            await asyncio.sleep(1.0)  # the frame bucket refills


async def accept_close(url: str, meter: Meter, count: int, address: str) -> None:
    for _ in range(count):
        meter.start()
        async with connect(url, compression=None, additional_headers=_headers(address)):
            pass
        await meter.stop(1, "closed by client")


async def big_frames(url: str, meter: Meter, count: int, addresses, want: str) -> None:
    """8 MiB messages, one per connection. ``want`` ``read``: from addresses with large-message
    tokens left (the first 2 of each); ``close``: from addresses whose tokens are spent (by
    two 70 KB pings first, not measured) and with fewer than 4 closes for them."""
    done = 0
    while done < count:
        address = next(addresses)
        if want == "close":
            async with connect(url, compression=None, additional_headers=_headers(address)) as ws:
                for _ in range(2):
                    await ws.send(_raw({"type": "ping", "id": 1, "pad": "x" * 70_000}))
                await _replies(ws, 2)
        for _ in range(2 if want == "read" else 4):
            if done >= count:
                break
            meter.start()
            try:
                async with connect(url, compression=None, max_size=None, additional_headers=_headers(address)) as ws:
                    await ws.send(BIG)
                    outcome = await _replies(ws, 1)
            except ConnectionClosed as exc:
                outcome = f"closed {exc.rcvd.code if exc.rcvd else None}"
            await meter.stop(1, outcome)
            done += 1


async def refused_429(url: str, meter: Meter, count: int, address: str) -> None:
    """Handshakes from an address with 4 closes for oversized frames (not measured), 50 at a time
    (each refusal is answered after a pause of about a second)."""
    async with connect(url, compression=None, additional_headers=_headers(address)) as ws:
        for _ in range(2):
            await ws.send(_raw({"type": "ping", "id": 1, "pad": "x" * 70_000}))
        await _replies(ws, 2)
    for _ in range(4):
        try:
            async with connect(url, compression=None, max_size=None, additional_headers=_headers(address)) as ws:
                await ws.send(BIG)
                await _replies(ws, 1)
        except ConnectionClosed:
            pass

    async def one() -> str:
        try:
            async with connect(url, compression=None, open_timeout=30, additional_headers=_headers(address)):
                return "accepted"
        except InvalidStatus as exc:
            return f"HTTP {exc.response.status_code}"

    done = 0
    while done < count:
        n = min(50, count - done)
        meter.start()
        await meter.stop(n, await asyncio.gather(*(one() for _ in range(n))))
        done += n


async def sustained(url: str, meter: Meter, address: str) -> None:
    """``SUSTAINED_CONNECTIONS`` connections send ``bad_field`` as fast as the server reads them
    for ``SUSTAINED_S`` (or until its keepalive closes them: their pongs wait behind the flood).
    The items are the messages it can have read meanwhile: at most ``FRAME_BURST`` plus
    ``FRAME_RATE_HZ`` a second per connection (the rest waits in TCP)."""
    data = SMALL["bad_field"][0]
    counts = []

    async def one() -> None:
        sent, start = 0, time.monotonic()
        ws = await connect(url, compression=None, additional_headers=_headers(address))
        replies = asyncio.create_task(_drain(ws))
        try:
            while time.monotonic() < start + SUSTAINED_S:
                await ws.send(data)  # waits while the server holds its reads (TCP pushes back)
                sent += 1
        except ConnectionClosed:  # the server's keepalive: its pings' answers wait behind the flood
            pass
        replies.cancel()
        ws.transport.abort()  # not a closing handshake behind the messages still in TCP
        counts.append(min(sent, FRAME_BURST + FRAME_RATE_HZ * (time.monotonic() - start)))

    meter.start()
    await asyncio.gather(*(one() for _ in range(SUSTAINED_CONNECTIONS)))
    await meter.stop(int(sum(counts)), "read at most")


async def _drain(ws) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def measure(url: str, pid: int, kinds: list[str], count: int, big_count: int) -> list[dict]:
    rows = []
    await asyncio.sleep(3.0)  # the server's start-up work (settling its heap) is over
    for i, kind in enumerate(kinds):
        meter = Meter(pid)
        c0, t0 = loop_cpu_ns(pid), time.monotonic()
        await asyncio.sleep(1.0)
        meter.idle_ns_per_s = (loop_cpu_ns(pid) - c0) / (time.monotonic() - t0)
        address = f"198.51.100.{i + 1}"
        addresses = iter(f"203.0.{i}.{k}" for k in range(1, 255))
        if kind in SMALL:
            await small_messages(url, meter, kind, count, address)
        elif kind == "over_bucket":
            await over_bucket(url, meter, count, address)
        elif kind == "accept_close":
            await accept_close(url, meter, count, address)
        elif kind == "read_8mib":
            await big_frames(url, meter, big_count, addresses, "read")
        elif kind == "close_1009":
            await big_frames(url, meter, big_count, addresses, "close")
        elif kind == "refused_429":
            await refused_429(url, meter, count, address)
        elif kind == "sustained":
            await sustained(url, meter, address)
        rows.append({
            "kind": kind,
            "items": meter.items,
            "loop_cpu_us": round(meter.per_item_us(), 1),
            "wall_ms": round(1e3 * meter.wall_s / max(1, meter.items), 2),
            "idle_loop_pct": round(meter.idle_ns_per_s / 1e7, 2),
            "loop_core_pct": round(100 * (meter.cpu_ns / 1e9 / meter.wall_s - meter.idle_ns_per_s / 1e9), 1) if meter.wall_s else None,
            "kernel_pct": round(100 * meter.sys_ticks / meter.ticks) if meter.ticks else None,
            "outcomes": ", ".join(f"{k} {v}" for k, v in meter.outcomes.items()),
        })
        print(f"  {kind}: {rows[-1]['loop_cpu_us']} us loop CPU each ({rows[-1]['items']} items: {rows[-1]['outcomes']})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    p.add_argument("--count", type=int, default=200, help="items per kind (default 200)")
    p.add_argument("--big-count", type=int, default=12, help="8 MiB messages per big kind (default 12)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown := set(kinds) - set(KINDS):
        raise SystemExit(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="flood-cost-") as tmp:
        server_args = argparse.Namespace(renderer="cpu", generator="procedural", codec="h264", resolution="320x180", fps=30,
                                         bitrate=None, crf=None, server_cores=None)
        # The server-wide budget for large messages would refuse read_8mib's later messages:
        # raised, so each kind costs what it names.
        proc, url = start_server(server_args, Path(tmp), extra_args=(*ONE_HOST_QUOTAS, "--trust-proxy", "127.0.0.1",
                                                                     "--max-large-read-mib-per-s", "1024"))
        try:
            rows = run_loop(measure(ws_url(url), proc.pid, kinds, args.count, args.big_count))
        finally:
            proc.terminate()
            proc.wait(20)
    print()
    print(format_table(rows, [("kind", "kind"), ("items", "items"), ("loop_cpu_us", "loop CPU us each"),
                              ("wall_ms", "wall ms each"), ("loop_core_pct", "loop % of a core"), ("idle_loop_pct", "idle loop %"), ("kernel_pct", "in kernel %"), ("outcomes", "outcomes")]))
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
