"""Shared fixtures: the real worldstream server in a subprocess on a free loopback port.

* ``start_server(**options)`` (function scope): a factory starting a server and returning
  a :class:`ServerProcess` (``.url`` is ``http://127.0.0.1:PORT``); stopped after the test.
* ``server`` (module scope): one server per test module with test-friendly defaults
  (procedural generator, CPU renderer, 320x180 at 30 fps); ``server_url``: its URL.

The server runs in its own process so its rendering threads never compete with the
test's decoding for one interpreter lock. Its log goes to a file (``.log_text()``),
never to a pipe nobody reads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_QUOTAS = (
    "--max-connections-per-client", "1000", "--max-new-worlds-per-client", "1000", "--max-new-worlds", "1000",
    "--max-open-worlds", "1000",
)
"""Every test client connects from 127.0.0.1, so a module's many clients count as one client
address; quotas sized for the internet would refuse them. ``extra_args`` come after these and
win (tests/test_limits.py sets each limit it tests)."""
STARTUP_TIMEOUT_S = 90.0


@dataclass
class ServerProcess:
    """A running server: its URL, process and log file."""

    url: str
    proc: subprocess.Popen
    log_path: Path
    worlds: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def media_worker_pids(self) -> list[int]:
        """Its media worker processes: children running multiprocessing's spawn_main (its
        resource tracker is a child too, but runs something else). Linux only."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:  # exited meanwhile
                    continue
                if b"spawn_main" in cmdline:
                    pids.append(int(child))
        return pids

    def kill_media_workers(self) -> list[int]:
        """SIGKILL every media worker, as a crash would; returns their pids."""
        pids = self.media_worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (clean shutdown), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __str__(self) -> str:
        return self.url


def launch_server(
    directory: Path,
    *,
    generator: str = "procedural",
    renderer: str = "cpu",
    resolution: str = "320x180",
    fps: int = 30,
    codec: str = "h264",
    bitrate: str | None = "2M",
    worlds: Path | None = None,
    log_level: str = "info",
    extra_args: tuple[str, ...] = (),
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> ServerProcess:
    """Start ``python -m runtime.app`` on a free port and wait until it listens (a fresh GPU
    machine compiles gsplat's kernels first: give it a longer ``startup_timeout_s``)."""
    directory.mkdir(parents=True, exist_ok=True)
    worlds = worlds or directory / "worlds"
    log_path = directory / f"server-{time.monotonic_ns()}.log"
    args = [
        sys.executable, "-m", "runtime.app", "--host", "127.0.0.1", "--port", "0",
        "--generator", generator, "--renderer", renderer, "--resolution", resolution,
        "--fps", str(fps), "--codec", codec, "--worlds", str(worlds), "--log-level", log_level, *LOOPBACK_QUOTAS, *extra_args,
    ]
    if bitrate:
        args += ["--bitrate", bitrate]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + startup_timeout_s
    marker = "listening on "
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if marker in text:
            url = text.split(marker, 1)[1].split()[0]
            return ServerProcess(url, proc, log_path, worlds)
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{text}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not listen within {startup_timeout_s:g} s:\n{log_path.read_text(errors='replace')}")


async def until(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    """Wait until ``predicate()`` holds, checking every ``every`` s; AssertionError naming
    ``what`` after ``timeout`` s. For facts that come in their own time on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


def thread_stats(pid: int) -> dict[int, tuple[int, float]]:
    """Each thread of process ``pid``: ``{thread id: (nice, CPU seconds used, user + system)}``,
    read from /proc (Linux only; a thread ending meanwhile is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()  # from stat field 3 on
        except OSError:
            continue
        out[int(task.name)] = (int(fields[16]), (int(fields[11]) + int(fields[12])) / tick)  # fields 19; 14 + 15
    return out


@pytest.fixture
def start_server(tmp_path):
    """Factory: ``start_server(generator=..., renderer="cpu", resolution="320x180", fps=30, worlds=tmp_path)``."""
    servers: list[ServerProcess] = []

    def start(**options) -> ServerProcess:
        server = launch_server(tmp_path / f"server{len(servers)}", **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server per test module (see the module docstring for its settings)."""
    proc = launch_server(tmp_path_factory.mktemp("server"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server_url(server) -> str:
    return server.url
