"""The server-wide budget for large client messages (``runtime.stream.large_reads``): many
client addresses, each within its own budget, still get no more read than the server's.
Counted, not timed: bytes the server process read, frames admitted, close frames."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import launch_server, until
from runtime.stream.large_reads import BURST_S, MIB, LargeReads
from runtime.stream.websocket import MAX_FRAME_BYTES
from test_hardening import EMPTY_ARRAYS_8MIB, bytes_read, metric, raw_websocket

RATE_MIB_PER_S = 1
IN_FLIGHT = 2
READ = 'worldstream_large_messages_total{outcome="read"}'


def refusals(limit: str) -> str:
    return f'worldstream_limit_refusals_total{{limit="{limit}"}}'


def test_the_budget_charges_bytes_and_places_in_flight():
    now = [0.0]
    reads = LargeReads(1 * MIB, 2, largest=8 * MIB, clock=lambda: now[0])
    assert reads.burst == 8 * MIB  # 4 s of 1 MiB/s is less than one largest frame
    assert reads.refusal(5 * MIB) is None
    reads.start(5 * MIB)
    assert reads.refusal(4 * MIB) == "max_large_read_mib_per_s"
    assert reads.refusal(3 * MIB) is None
    reads.start(3 * MIB)
    assert reads.refusal(1) == "max_large_reads"  # two in flight
    reads.finish()
    now[0] = 2.0  # 2 MiB more
    assert reads.refusal(2 * MIB) is None and reads.refusal(2 * MIB + 1) == "max_large_read_mib_per_s"
    now[0] = 100.0
    assert reads.refusal(8 * MIB) is None and reads.refusal(8 * MIB + 1) == "max_large_read_mib_per_s"  # the burst


@pytest.fixture(scope="module")
def wide_capped_server(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("large-reads"),
        extra_args=("--max-large-read-mib-per-s", str(RATE_MIB_PER_S), "--max-large-reads", str(IN_FLIGHT)),
        startup_timeout_s=300,  # a loaded machine
    )
    yield proc
    proc.stop()


def frame_header(size: int) -> bytes:
    """A masked binary frame's header for ``size`` bytes (mask 0: the payload goes as it is)."""
    return b"\x82\xff" + struct.pack("!Q", size) + bytes(4)


def close_frame(sock: socket.socket) -> tuple[int, str]:
    """The close frame the server sends (code, reason), skipping anything before it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, f"closed without a close frame after {data[:64]!r}"
        data += chunk
        while len(data) >= 2:
            length = data[1] & 0x7F
            if len(data) < 2 + length:
                break
            if data[0] == 0x88:
                return struct.unpack("!H", data[2:4])[0], data[4:2 + length].decode()
            data = data[2 + length:]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="bytes read are counted from /proc (Linux)")
def test_large_reads_in_flight_are_capped_server_wide(wide_capped_server):
    """Two addresses each start sending a 100 KiB message and stall mid-payload: a third
    address's large message is refused from its header (close 1009 naming
    ``max_large_reads``) while they hold their places; once one is read whole, the next is read."""
    url = wide_capped_server.url
    size = 100 * 1024
    answered = 'worldstream_protocol_errors_total{code="bad_message"}'  # 100 KiB of zeros is no message
    before = {name: metric(url, name) for name in (READ, refusals("max_large_reads"), answered)}
    stalled = [raw_websocket(url, f"127.0.0.{31 + i}") for i in range(IN_FLIGHT)]
    try:
        for sock in stalled:
            sock.sendall(frame_header(size) + bytes(1024))
        asyncio.run(until(lambda: metric(url, READ) == before[READ] + IN_FLIGHT, 30, "both large reads started"))
        with raw_websocket(url, "127.0.0.33") as third:
            third.sendall(frame_header(size) + bytes(size))
            code, reason = close_frame(third)
        assert code == 1009 and "max_large_reads" in reason, (code, reason)
        assert metric(url, refusals("max_large_reads")) == before[refusals("max_large_reads")] + 1
        stalled[0].sendall(bytes(size - 1024))  # read whole: its place is free
        asyncio.run(until(lambda: metric(url, answered) == before[answered] + 1, 30, "the first read whole and answered"))
        with raw_websocket(url, "127.0.0.34") as fourth:
            fourth.sendall(frame_header(size) + bytes(size))
            asyncio.run(until(lambda: metric(url, READ) == before[READ] + IN_FLIGHT + 1, 30, "a fourth read"))
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="bytes read are counted from /proc (Linux)")
def test_many_addresses_get_no_more_read_than_the_server_wide_budget(wide_capped_server):
    """Eight addresses (127.0.0.41-48) each send two 8 MiB messages at once: each address's
    own budget (2) would let all sixteen be read, 128 MiB; the server-wide one (1 MiB/s, at
    least one largest frame at once) lets about one be read, the rest are refused from their
    header (close 1009 naming ``max_large_read_mib_per_s``) and not read."""
    url, pid = wide_capped_server.url, wide_capped_server.proc.pid
    time.sleep(1.0)  # the budget refills after the test before (100s of KiB)
    limit = "max_large_read_mib_per_s"
    before = {name: metric(url, name) for name in (READ, refusals(limit))}
    reasons: list[str] = []

    async def one(ws) -> None:
        with contextlib.suppress(Exception):  # closed mid-send
            for _ in range(2):
                await ws.send(EMPTY_ARRAYS_8MIB)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 60)
        except ConnectionClosed:
            if ws.close_code == 1009:
                reasons.append(ws.close_reason)

    async def scenario() -> tuple[int, float]:
        sockets = [await connect(wide_capped_server.ws_url, max_size=None, local_addr=(f"127.0.0.{41 + i}", 0)) for i in range(8)]
        t0 = time.monotonic()
        read0 = bytes_read(pid)
        await asyncio.gather(*(one(ws) for ws in sockets))
        return bytes_read(pid) - read0, time.monotonic() - t0

    got, seconds = asyncio.run(scenario())
    n = len(EMPTY_ARRAYS_8MIB) + 16  # its frame's payload, header aside
    allowed = int((max(BURST_S * RATE_MIB_PER_S * MIB, MAX_FRAME_BYTES) + seconds * RATE_MIB_PER_S * MIB) // len(EMPTY_ARRAYS_8MIB))
    counted = {name: metric(url, name) - before[name] for name in (READ, refusals(limit))}
    report = f"{got / 2**20:.1f} MiB read in {seconds:.1f} s, {allowed} messages allowed; {counted}; {reasons}"
    assert 1 <= counted[READ] <= allowed, report
    assert counted[READ] + counted[refusals(limit)] >= 8, report  # every address's first frame was decided
    assert reasons and all(limit in reason for reason in reasons), report  # the close names the limit
    assert got < (allowed + 1) * n, report  # the address budgets alone: 16 messages
