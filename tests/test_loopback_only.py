"""Streaming on a machine whose only network interface is loopback (issue 18).

The GPU machines' sandbox may have no interface but ``lo``. aioice gathers no host
candidate from loopback, so there every peer connection was answered and then stayed in
ICE state "new": no frame and no error. The test runs the real server and a real client
in a fresh network namespace (``unshare -rn``: only ``lo``), where that happened.
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
    from runtime.client import WorldClient

    interfaces = sorted(a.name for a in ifaddr.get_adapters())
    assert interfaces == ["lo"], interfaces
    server = launch_server(Path(sys.argv[2]))

    async def main():
        async with WorldClient(server.url, new_world=m.NewWorld(name="lo-only", seed=3), name="lo") as client:
            frame = await client.next_frame(timeout=60)
            print("FRAME", frame.rgb.shape, client.pc.iceConnectionState, flush=True)

    try:
        asyncio.run(main())
    finally:
        server.stop()
        print(server.log_text()[-3000:])
    """
)


@pytest.mark.skipif(not _loopback_namespace_works(), reason="needs unshare -rn (unprivileged network namespaces) and ip")
def test_video_reaches_a_client_where_loopback_is_the_only_interface(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-c", INSIDE, str(ROOT), str(tmp_path)],
        capture_output=True, text=True, timeout=170, env=env, cwd=ROOT,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "FRAME (180, 320, 3)" in out, out[-6000:]
    assert "ICE offers 127.0.0.1" in out  # the server said why it uses loopback
