"""A client that gets no video says which stage had nothing, within its timeout (issue 18).

Each stage is made to stall by a real condition: a port nobody listens on, media workers
stopped (SIGSTOP) before the offer, the server's own process stopped once the answer is
in (its media worker connects ICE and DTLS, but nothing renders). Loopback-only ICE is
``test_loopback_only``. The stream benchmark stops with the stage's name too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol import messages as m
from runtime.client import StreamStalled, WorldClient

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_nobody_listens_on_is_named():
    async def main():
        client = WorldClient(f"http://127.0.0.1:{_free_port()}", new_world=m.NewWorld(name="nobody"))
        started = time.monotonic()
        with pytest.raises(StreamStalled) as stalled:
            await client.connect(timeout=5)
        assert stalled.value.stage == "server not listening" and "127.0.0.1" in stalled.value.detail
        assert time.monotonic() - started < 5

    asyncio.run(main())


def test_stopped_media_workers_mean_no_answer(start_server):
    server = start_server()
    stopped = server.media_worker_pids()
    assert stopped
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)

    async def main():
        client = WorldClient(server.url, new_world=m.NewWorld(name="no-answer"), name="a")
        try:
            with pytest.raises(StreamStalled) as stalled:
                await client.connect(timeout=4)
            assert stalled.value.stage == "no answer", stalled.value
        finally:
            await client.close()

    try:
        asyncio.run(main())
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def test_a_stopped_server_after_the_answer_means_no_rtp(start_server):
    server = start_server()

    async def main():
        client = WorldClient(server.url, new_world=m.NewWorld(name="no-rtp"), name="a")
        await client.connect(timeout=20)
        server.proc.send_signal(signal.SIGSTOP)  # its media worker still connects ICE and DTLS
        try:
            with pytest.raises(StreamStalled) as stalled:
                await client.next_frame(timeout=6)
            assert stalled.value.stage == "no RTP", stalled.value
            assert "ICE completed, DTLS connected" in stalled.value.detail and "0 frames decoded" in stalled.value.detail
        finally:
            server.proc.send_signal(signal.SIGCONT)
            await client.close()
        frame = await _reconnected_frame(server.url)
        assert frame.rgb.shape == (180, 320, 3)  # nothing stuck once it runs again

    asyncio.run(main())


async def _reconnected_frame(url: str):
    async with WorldClient(url, world="no-rtp", name="b") as client:
        return await client.next_frame(timeout=30)


# ---------------------------------------------------------------- the benchmarks stop and say why
ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)


def test_stream_bench_stops_at_a_port_nobody_listens_on():
    done = _bench("-m", "bench.stream", "--url", f"http://127.0.0.1:{_free_port()}", "--players", "1", "--duration", "1", "--stage-timeout", "5")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "stalled: server not listening" in done.stderr


def test_stream_bench_stops_when_the_media_workers_never_answer(start_server):
    server = start_server()
    stopped = server.media_worker_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = _bench("-m", "bench.stream", "--url", server.url, "--players", "2", "--client-procs", "2", "--duration", "1", "--stage-timeout", "4")
        assert done.returncode == 3, done.stderr[-3000:]
        assert "stalled: no answer: no rtc_answer within 4 s" in done.stderr, done.stderr[-3000:]
        assert time.monotonic() - started < 60
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
