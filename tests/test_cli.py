"""The ``worldstream`` command, run as users run it (``python -m runtime.cli`` in a subprocess)."""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.world.camera import Pose, intrinsics_from_fov
from runtime.world.formats import read_splats
from runtime.world.formats.media import read_video_frames, write_image
from runtime.world.movement.trajectory import Trajectory, save_trajectory

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one clear line naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with a Lyra-style trajectory, captions, a start image, and a world 'walk' rendered from them."""
    cwd = tmp_path_factory.mktemp("cli")
    n = 9
    w2c = np.stack([Pose(np.array([0.0, 0.0, 0.4 * i], np.float32), yaw=0.05 * i).w2c for i in range(n)])
    K = intrinsics_from_fov(128, 72, math.radians(60.0))
    save_trajectory(cwd / "trajectory.npz", Trajectory(w2c, np.broadcast_to(K, (n, 3, 3)).copy(), 128, 72))
    (cwd / "captions.json").write_text(json.dumps({"0": "rolling hills"}))
    write_image(cwd / "first_frame.png", np.full((72, 128, 3), 100, np.uint8))
    result = run_cli(
        "render", "--image", "first_frame.png", "--trajectory", "trajectory.npz", "--captions", "captions.json",
        "--frames", "9", "--resolution", "96x54", "--keyframe-size", "64x36", "--renderer", "cpu", "--world", "walk", "walk.mp4",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 9 frames" in result.stdout
    return cwd


def test_help_lists_every_command(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "export", "import", "render", "flythrough", "list", "info"):
        assert command in result.stdout


def test_render_writes_video_and_world(workdir):
    assert read_video_frames(workdir / "walk.mp4").shape == (9, 54, 96, 3)
    assert (workdir / "worlds" / "walk" / "manifest.json").is_file()


def test_render_errors(workdir):
    assert_user_error(
        run_cli("render", "--trajectory", "nope.npz", "x.mp4", cwd=workdir), "nope.npz: no such file"
    )
    np.savez(workdir / "bad.npz", intrinsics=np.eye(3))
    assert_user_error(run_cli("render", "--trajectory", "bad.npz", "x.mp4", cwd=workdir), "bad.npz: missing array 'w2c'")
    assert_user_error(run_cli("render", "x.mp4", cwd=workdir), "exactly one of --trajectory")
    assert_user_error(
        run_cli("render", "--trajectory", "trajectory.npz", "--frames", "50", "x.mp4", cwd=workdir), "has only 9 poses"
    )


def test_list_and_info(workdir):
    result = run_cli("list", cwd=workdir)
    assert result.returncode == 0 and "walk" in result.stdout and "GAUSSIANS" in result.stdout
    result = run_cli("--worlds", "worlds", "list", "--json", cwd=workdir)
    [entry] = [w for w in json.loads(result.stdout) if w["name"] == "walk"]
    assert entry["chunks"] > 0 and entry["gaussians"] > 0 and entry["caption"] == "rolling hills"
    result = run_cli("info", "walk", "--json", cwd=workdir)
    assert result.returncode == 0 and json.loads(result.stdout)["chunks"] == entry["chunks"]
    assert "gaussians:" in run_cli("info", "walk", cwd=workdir).stdout
    assert_user_error(run_cli("info", "nowhere", cwd=workdir), "no world named 'nowhere'")
    assert_user_error(run_cli("info", "../etc", cwd=workdir), "invalid world name '../etc'")
    empty = run_cli("list", "--worlds", "elsewhere", cwd=workdir)
    assert empty.returncode == 0 and "no worlds" in empty.stdout


def test_export_and_import(workdir):
    info = json.loads(run_cli("info", "walk", "--json", cwd=workdir).stdout)
    gaussians, far = info["gaussians"], info["far_gaussians"]
    for name in ("walk.ply", "walk.splat", "walk.spz"):  # the far field follows the scene's Gaussians
        result = run_cli("export", "walk", name, cwd=workdir)
        assert result.returncode == 0, result.stderr
        assert len(read_splats(workdir / name)) == gaussians + far
    result = run_cli("export", "walk", "walk-scene.ply", "--no-far-field", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert len(read_splats(workdir / "walk-scene.ply")) == gaussians
    result = run_cli("import", "walk-scene.ply", "--name", "walk-copy", "--caption", "snowy peaks", "--renderer", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    info = json.loads(run_cli("info", "walk-copy", "--json", cwd=workdir).stdout)
    assert info["gaussians"] == gaussians and info["frames"] == 0 and info["caption"] == "snowy peaks"

    obj = run_cli("export", "walk", "walk.obj", cwd=workdir)
    assert_user_error(obj, "walk.obj: unknown splat format '.obj'")
    assert obj.stderr.count("walk.obj") == 1, obj.stderr  # the file is named once
    missing = run_cli("export", "walk", "nowhere/walk.ply", cwd=workdir)
    assert_user_error(missing, "nowhere/walk.ply: folder 'nowhere' does not exist")
    assert ".tmp-" not in missing.stderr
    assert_user_error(run_cli("export", "ghost", "g.ply", cwd=workdir), "no world named 'ghost'")
    (workdir / "broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nend_header\n")
    assert_user_error(run_cli("import", "broken.ply", "--name", "broken", cwd=workdir), "broken.ply: truncated")
    assert_user_error(run_cli("import", "walk.ply", "--name", "walk", cwd=workdir), "already exists")
    assert_user_error(run_cli("import", "walk.ply", "--name", "Bad Name", cwd=workdir), "invalid world name")


def test_flythrough(workdir):
    result = run_cli("-q", "flythrough", "walk", "orbit.mp4", "--orbit", "--frames", "6", "--resolution", "64x36", "--renderer", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_video_frames(workdir / "orbit.mp4").shape == (6, 36, 64, 3)
    result = run_cli("flythrough", "walk", "path.mp4", "--path", "trajectory.npz", "--resolution", "64x36", "--renderer", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_video_frames(workdir / "path.mp4").shape[0] == 9
    # Neither --path nor --orbit: an orbit. A .gif is written as a GIF (odd sizes allowed).
    result = run_cli("-q", "flythrough", "walk", "orbit.gif", "--frames", "4", "--resolution", "63x35", "--renderer", "cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "orbit.gif").read_bytes()[:6] == b"GIF89a"
    assert read_video_frames(workdir / "orbit.gif").shape == (4, 35, 63, 3)
    assert_user_error(
        run_cli("flythrough", "walk", "x.mp4", "--orbit", "--path", "trajectory.npz", cwd=workdir), "not both"
    )
    assert_user_error(run_cli("flythrough", "walk", "x.avi", cwd=workdir), "x.avi: cannot write video as '.avi'", ".mp4 (H.264)")
    assert_user_error(run_cli("render", "--preset", "zoom-in", "x.webm", cwd=workdir), "x.webm: cannot write video as '.webm'")
    assert_user_error(run_cli("flythrough", "walk", "gone/x.mp4", cwd=workdir), "folder 'gone' does not exist")
    assert not (workdir / "x.avi").exists() and not (workdir / "x.webm").exists()
    assert_user_error(
        run_cli("flythrough", "walk", "x.mp4", "--orbit", "--resolution", "63x36", cwd=workdir), "even width and height"
    )


def test_serve_starts_and_stops(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "--worlds", str(tmp_path / "w"), "serve", "--port", "0", "--renderer", "cpu"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        # Read the pipe's bytes, not lines through the file object: its read-ahead buffer
        # can hold the "listening" line where select() no longer sees it.
        fd = proc.stdout.fileno()
        while "listening on" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                seen += chunk.decode(errors="replace")
        assert "listening on http://" in seen, seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert (tmp_path / "w").is_dir(), "--worlds reaches the server"
    assert_user_error(run_cli("serve", "--port", "not-a-port", cwd=tmp_path), "--port")


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert_user_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_refuses_in_one_line(tmp_path):
    """What stops the server from starting is one line naming the flag, exit 2, no traceback."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        busy = run_cli("serve", "--port", str(port), "--renderer", "cpu", "--worlds", str(tmp_path / "w"), cwd=tmp_path)
    assert_one_line_error(busy, f"port {port} on 127.0.0.1 is already in use (--port)")
    assert busy.stderr.startswith("worldstream serve: error:")

    (tmp_path / "a-file").write_text("")
    assert_one_line_error(
        run_cli("serve", "--port", "0", "--renderer", "cpu", "--worlds", str(tmp_path / "a-file" / "w"), cwd=tmp_path),
        "--worlds", "cannot save worlds there",
    )
    for fps in ("0", "-5", "241", "ten"):
        assert_user_error(run_cli("serve", "--fps", fps, cwd=tmp_path), "--fps", "fps must be")
    assert_user_error(run_cli("serve", "--max-players", "0", cwd=tmp_path), "--max-players")
    help_text = run_cli("serve", "--help", cwd=tmp_path)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: worldstream serve"), help_text.stdout[:200]


def test_optimise_chunks_without_a_gpu_is_one_line(tmp_path):
    from runtime.world.render import cuda_available

    if cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    served = run_cli("serve", "--port", "0", "--optimise-chunks", "300", "--worlds", str(tmp_path / "w"), cwd=tmp_path)
    assert_one_line_error(served, "--optimise-chunks 300:", "CUDA")
    rendered = run_cli("--worlds", str(tmp_path / "w"), "render", "o.mp4", "--preset", "zoom-in", "--optimise-chunks", "300", cwd=tmp_path)
    assert_one_line_error(rendered, "--optimise-chunks 300:", "CUDA")
    assert_user_error(run_cli("serve", "--optimise-chunks", "-1", cwd=tmp_path), "--optimise-chunks")


def test_gsplat_without_a_gpu_is_one_line(tmp_path, workdir):
    from runtime.world.render import cuda_available

    if cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    served = run_cli("serve", "--port", "0", "--renderer", "gsplat", "--worlds", str(tmp_path / "w"), cwd=tmp_path)
    assert_one_line_error(served, "--renderer gsplat:")
    flown = run_cli("flythrough", "walk", "g.mp4", "--renderer", "gsplat", cwd=workdir)
    assert_one_line_error(flown, "--renderer gsplat:")
