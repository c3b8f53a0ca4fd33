"""Streaming on a machine whose only network interface is loopback (issue 18).

The GPU machines' sandbox may have no interface but ``lo``. aioice gathers no host
candidate from loopback, so there every peer connection was answered and then stayed in
ICE state "new": no frame and no error. The test runs the real server and a real client
in a fresh network namespace (``unshare -rn``: only ``lo``), where that happened, and
there, with the loopback candidates turned off (``WORLDSTREAM_ICE_LOOPBACK=0``), checks
that the client names the stage that had nothing instead of waiting in silence.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


def _loopback_namespace_works() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    try:
        done = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


INSIDE = textwrap.dedent(
    """
    import asyncio, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    from pathlib import Path
    import ifaddr
    from conftest import launch_server
    from protocol import messages as m
    from runtime.client import StreamStalled, WorldClient

    interfaces = sorted(a.name for a in ifaddr.get_adapters())
    assert interfaces == ["lo"], interfaces
    server = launch_server(Path(sys.argv[2]))

    async def main():
        async with WorldClient(server.url, new_world=m.NewWorld(name="lo-only", seed=3), name="lo") as client:
            try:
                frame = await client.next_frame(timeout=float(sys.argv[3]))
            except StreamStalled as exc:
                print("STALLED", exc.stage, "|", exc.detail, flush=True)
            else:
                print("FRAME", frame.rgb.shape, client.pc.iceConnectionState, flush=True)

    try:
        asyncio.run(main())
    finally:
        server.stop()
        print(server.log_text()[-3000:])
    """
)


def _in_loopback_namespace(command: list[str], **env) -> subprocess.CompletedProcess:
    """Run ``command`` in a fresh network namespace whose only interface is ``lo`` (up)."""
    return subprocess.run(
        ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command],
        capture_output=True, text=True, timeout=150, env=dict(os.environ, PYTHONPATH=str(ROOT), **env), cwd=ROOT,
    )


def _stream_in_loopback_namespace(tmp_path, frame_timeout_s: float, **env) -> str:
    """Server and client in a namespace with only ``lo``; what the client saw and the server's log."""
    done = _in_loopback_namespace([sys.executable, "-c", INSIDE, str(ROOT), str(tmp_path), str(frame_timeout_s)], **env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    return out


needs_namespace = pytest.mark.skipif(
    not _loopback_namespace_works(), reason="needs unshare -rn (unprivileged network namespaces) and ip"
)


@needs_namespace
def test_video_reaches_a_client_where_loopback_is_the_only_interface(tmp_path):
    out = _stream_in_loopback_namespace(tmp_path, 60)
    assert "FRAME (180, 320, 3)" in out, out[-6000:]
    assert "ICE offers 127.0.0.1" in out  # the server said why it uses loopback


@needs_namespace
def test_without_candidates_the_client_says_ice_never_connected(tmp_path):
    out = _stream_in_loopback_namespace(tmp_path, 5, WORLDSTREAM_ICE_LOOPBACK="0")
    assert "STALLED ICE not connected | no frame within 5 s; ICE new" in out, out[-6000:]


@needs_namespace
def test_stream_bench_stops_naming_ice_and_shows_the_server_log(tmp_path):
    bench = [sys.executable, "-m", "bench.stream", "--players", "1", "--duration", "1", "--resolution", "320x180", "--stage-timeout", "15"]
    done = _in_loopback_namespace(bench, WORLDSTREAM_ICE_LOOPBACK="0")
    assert done.returncode == 3, done.stderr[-6000:]
    assert "stalled: ICE not connected: no frame within 15 s" in done.stderr, done.stderr[-6000:]
    assert "--- server log (tail) ---" in done.stderr and "WebRTC answered" in done.stderr


@needs_namespace
def test_media_bench_stops_naming_ice():
    bench = [sys.executable, "-m", "bench.media", "--players", "1", "--duration", "1", "--synthetic", "--resolution", "160x96", "--stage-timeout", "15"]
    done = _in_loopback_namespace(bench, WORLDSTREAM_ICE_LOOPBACK="0")
    assert done.returncode == 3, done.stderr[-6000:]
    assert "[bench] stalled: TimeoutError: ICE not connected: 1 of 1 videos not connected within 15 s" in done.stderr, done.stderr[-6000:]
