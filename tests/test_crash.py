"""Crash safety: SIGKILL a process that is generating and saving a world, at random moments and inside
the manifest-write window; every time, the world loads and matches its last complete manifest."""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runtime.world.store import WorldLibrary
from runtime.world.store.manifest import TEST_PAUSE_ENV
from runtime.world.world import retired_mask

REPO = Path(__file__).resolve().parents[1]
WORLD = "crash"

GENERATE_SCRIPT = f"""
import os, sys
import numpy as np
from runtime.world.camera import Pose
from runtime.world.world import PlayerState, WorldConfig
from runtime.world.store import WorldLibrary

try:
    from runtime.world.render import create_renderer
    renderer = create_renderer("cpu")
except ImportError:
    from runtime.world.render.cpu import CpuRenderer
    renderer = CpuRenderer()

root, mode = sys.argv[1], sys.argv[2]
library = WorldLibrary(root)
config = WorldConfig(name="{WORLD}", seed=5, keyframe_width=64, keyframe_height=36, probe_width=32, probe_height=18)
world = library.open("{WORLD}", renderer=renderer) if library.exists("{WORLD}") else library.create(config, renderer=renderer)
start = len(world.scene.snapshot().chunks)
if mode == "pause-manifest":
    world.flush()  # the open's own manifest update is done; pause only the ones that add chunks
    os.environ["{TEST_PAUSE_ENV}"] = "120"
print("ready", start, flush=True)
k = 0
while True:  # walk onto new ground forever; the test kills us
    pose = Pose(np.array([0.0, 0.0, 6.0 * (start + k)], np.float32), yaw=0.9 * k)
    world.update([PlayerState("p", pose, np.array([0.0, 0.0, 3.0], np.float32))])
    world.wait_idle(60)
    k += 1
    print("chunks", len(world.scene.snapshot().chunks), flush=True)
"""


def cpu_renderer():
    try:
        from runtime.world.render import create_renderer
    except ImportError:
        from runtime.world.render.cpu import CpuRenderer

        return CpuRenderer()
    return create_renderer("cpu")


class GeneratorProcess(subprocess.Popen):
    """The generator script's process, with :meth:`read_line` over its stdout."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.line_buffer = bytearray()

    def read_line(self, deadline: float) -> list[str] | None:
        """The next line it printed, split into words; None at the deadline or its end.

        Reads the pipe's bytes into its own buffer: lines read ahead through the file object
        would sit where select() no longer sees them."""
        fd = self.stdout.fileno()
        while b"\n" not in self.line_buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                return None
            self.line_buffer += chunk
        line, _, rest = bytes(self.line_buffer).partition(b"\n")
        self.line_buffer[:] = rest
        return line.decode(errors="replace").split()


def start_generator(tmp_path: Path, root: Path, mode: str) -> GeneratorProcess:
    script = tmp_path / "generate.py"
    script.write_text(GENERATE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(TEST_PAUSE_ENV, None)
    return GeneratorProcess(
        [sys.executable, str(script), str(root), mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )


def wait_ready(proc: GeneratorProcess, timeout: float = 60.0) -> int:
    """Chunks the process found when it opened the world (it prints 'ready N')."""
    line = proc.read_line(time.monotonic() + timeout)
    assert line is not None, "generator did not start"
    assert line[:1] == ["ready"], line
    return int(line[1])


def wait_for_growth(proc: GeneratorProcess, start: int, timeout: float = 60.0) -> None:
    """Until the process reports more chunks than it started with (so we kill it mid-stream, not mid-start)."""
    deadline = time.monotonic() + timeout
    while (line := proc.read_line(deadline)) is not None:
        if line[:1] == ["chunks"] and int(line[1]) > start:
            return
    raise AssertionError("generator made no chunk in time")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()


def verify_against_manifest(root: Path) -> dict:
    """The saved world matches its manifest exactly: every referenced file is whole; loading reads just those."""
    world_dir = root / WORLD
    manifest = json.loads((world_dir / "manifest.json").read_bytes())
    for rec in manifest["chunks"] + manifest["frames"] + manifest.get("far", []):
        data = (world_dir / rec["file"]).read_bytes()
        assert len(data) == rec["bytes"] and hashlib.sha256(data).hexdigest() == rec["sha256"], rec["file"]
    world = WorldLibrary(root).open(WORLD, read_only=True, renderer=cpu_renderer())
    try:
        chunks = world.scene.snapshot().chunks
        # Chunk files hold the Gaussians as generated; refinement may since have retired some
        # (the manifest's state says which), and loading leaves those out.
        retired = {int(cid): int(retired_mask(packed).sum()) for cid, packed in manifest.get("state", {}).get("retired", {}).items()}
        expected = [(r["id"], r["gaussians"] - retired.get(r["id"], 0)) for r in manifest["chunks"]]
        assert [(c.id, len(c.gaussians)) for c in chunks] == [(cid, n) for cid, n in expected if n > 0]
        assert [f.id for f in world.memory.frames()] == sorted(r["id"] for r in manifest["frames"])
        far = world.scene.snapshot().far  # the far field comes back with the world
        assert [(c.id, len(c.gaussians)) for c in far] == sorted((r["id"], r["gaussians"]) for r in manifest.get("far", []))
        state = world.state_dict()
        assert state["next_frame_id"] >= max([r["id"] + 1 for r in manifest["frames"]], default=0)
    finally:
        world.close()
    return manifest


def referenced_and_present(root: Path, manifest: dict) -> tuple[set[str], set[str]]:
    world_dir = root / WORLD
    referenced = {r["file"] for r in manifest["chunks"] + manifest["frames"] + manifest.get("far", [])}
    present = {p.relative_to(world_dir).as_posix() for sub in ("chunks", "frames", "far") if (world_dir / sub).is_dir() for p in (world_dir / sub).iterdir()}
    return referenced, present


def test_random_sigkills_never_corrupt_the_world(tmp_path):
    root = tmp_path / "worlds"
    rng = random.Random(20261125)
    counts, sequences = [], []
    for i in range(12):
        proc = start_generator(tmp_path, root, "random")
        if i % 3 == 1:
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere: while starting, opening, cleaning up or generating
        else:
            wait_for_growth(proc, wait_ready(proc))
            time.sleep(rng.uniform(0.0, 0.5))  # while generating and saving
        kill(proc)
        if not (root / WORLD / "manifest.json").exists():
            continue  # killed before the world was first created: nothing to check yet
        manifest = verify_against_manifest(root)
        counts.append(len(manifest["chunks"]))
        sequences.append(manifest["sequence"])
    assert counts == sorted(counts), f"a kill lost saved chunks: {counts}"
    assert sequences == sorted(sequences)
    assert counts and counts[-1] > 0, f"nothing was ever saved: {counts}"

    # Opening for writing cleans whatever the kills left half-done.
    WorldLibrary(root).open(WORLD, renderer=cpu_renderer()).close()
    manifest = verify_against_manifest(root)
    referenced, present = referenced_and_present(root, manifest)
    assert present == referenced
    assert not [p for p in (root / WORLD).rglob("*") if ".tmp-" in p.name]


def test_kill_inside_the_manifest_write_window(tmp_path):
    root = tmp_path / "worlds"
    proc = start_generator(tmp_path, root, "random")
    wait_ready(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((root / WORLD / "chunks").glob("*.npz")):
        time.sleep(0.05)
    kill(proc)
    before = verify_against_manifest(root)

    proc = start_generator(tmp_path, root, "pause-manifest")
    wait_ready(proc)
    old_manifest = (root / WORLD / "manifest.json").read_bytes()
    deadline = time.monotonic() + 90
    pending = []
    while time.monotonic() < deadline and not pending:
        pending = list((root / WORLD).glob(".manifest.json.tmp-*"))
        time.sleep(0.02)
    assert pending, "the generator never reached a manifest write"
    kill(proc)  # the new manifest is written and fsynced under its temp name, but not renamed

    new = json.loads(pending[0].read_bytes())
    assert len(new["chunks"]) > len(json.loads(old_manifest)["chunks"]), "the paused write should add a chunk"
    assert (root / WORLD / "manifest.json").read_bytes() == old_manifest
    after = verify_against_manifest(root)
    assert [r["id"] for r in after["chunks"]] == [r["id"] for r in json.loads(old_manifest)["chunks"]]
    assert len(after["chunks"]) >= len(before["chunks"])
    referenced, present = referenced_and_present(root, after)
    assert present - referenced, "the chunk written before the manifest stays on disk, unreferenced"

    WorldLibrary(root).open(WORLD, renderer=cpu_renderer()).close()
    referenced, present = referenced_and_present(root, verify_against_manifest(root))
    assert present == referenced
    assert not list((root / WORLD).glob(".manifest.json.tmp-*"))
    assert np.isfinite(after["updated_at"])
