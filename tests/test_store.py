"""World persistence: a saved world comes back exactly; bad names, newer formats and corrupt files are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.world.camera import Pose
from runtime.world.gaussians import Gaussians
from runtime.world.generators.procedural.generator import ground_height_y
from runtime.world.store import (
    FORMAT_VERSION,
    InvalidWorldName,
    WorldBusy,
    WorldExists,
    WorldFormatError,
    WorldLibrary,
    WorldNotFound,
)
from runtime.world.world import PlayerState, WorldConfig


def cpu_renderer():
    try:
        from runtime.world.render import create_renderer
    except ImportError:
        from runtime.world.render.cpu import CpuRenderer

        return CpuRenderer()
    return create_renderer("cpu")


def small_config(name: str, seed: int = 7) -> WorldConfig:
    return WorldConfig(name=name, seed=seed, caption="a quiet valley", keyframe_width=64, keyframe_height=36, probe_width=32, probe_height=18)


def walk(world, steps: int, start: float = 0.0) -> None:
    """A player walking forward and turning, eyes 1.7 m above the generator's ground (+y is
    down), waiting for generation after each step. (A camera under the ground sees only
    the terrain's inside, and such keyframes land nothing.)"""
    for k in range(steps):
        z = start + 3.0 * k
        eye_y = float(ground_height_y(0.0, z, world.config.seed)) - 1.7
        pose = Pose(np.array([0.0, eye_y, z], np.float32), yaw=0.6 * k)
        world.update([PlayerState("p", pose, np.array([0.0, 0.0, 2.0], np.float32))])
        assert world.wait_idle(60)


VIEW = Pose(np.array([0.3, -0.4, 1.0], np.float32), yaw=0.4, pitch=-0.1).camera(80, 48)


@pytest.fixture
def generated(tmp_path):
    """A library with world 'valley' holding a few generated chunks (closed), and facts taken before closing."""
    library = WorldLibrary(tmp_path / "worlds")
    world = library.create(small_config("valley"), start_image=np.full((12, 16, 3), 90, np.uint8), renderer=cpu_renderer())
    world.set_caption("a pine forest")
    walk(world, 4)
    facts = {
        "pixels": world.render(VIEW).rgb.copy(),
        "chunks": world.scene.snapshot().chunks,
        "frames": world.memory.frames(),
        "state": json.loads(json.dumps(world.state_dict())),
    }
    world.close()
    assert len(facts["chunks"]) >= 2, "the walk should have generated several chunks"
    return library, facts


def test_reopened_world_renders_the_same_pixels(generated):
    library, facts = generated
    world = library.open("valley", renderer=cpu_renderer())
    try:
        assert np.array_equal(world.render(VIEW).rgb, facts["pixels"])
        chunks = world.scene.snapshot().chunks
        assert [c.id for c in chunks] == [c.id for c in facts["chunks"]]
        for a, b in zip(chunks, facts["chunks"]):
            for name in ("means", "quats", "log_scales", "opacity_logits", "colors"):
                assert np.array_equal(getattr(a.gaussians, name), getattr(b.gaussians, name))
            assert np.array_equal(a.bounds_min, b.bounds_min) and np.array_equal(a.bounds_max, b.bounds_max)
            assert a.source == b.source
        frames = world.memory.frames()
        assert [f.id for f in frames] == [f.id for f in facts["frames"]] and frames
        for a, b in zip(frames, facts["frames"]):
            assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
            assert np.array_equal(a.w2c, b.w2c) and np.array_equal(a.K, b.K)
            assert (a.chunk_id, a.caption) == (b.chunk_id, b.caption)
        assert json.loads(json.dumps(world.state_dict())) == facts["state"]
        assert world.caption == "a pine forest"
        assert world.config.seed == 7 and world.config.keyframe_width == 64
        assert world.start_image is not None and world.start_image.shape == (12, 16, 3)
    finally:
        world.close()


def test_reopened_world_keeps_growing_with_fresh_ids(generated):
    library, facts = generated
    before = max(c.id for c in facts["chunks"])
    world = library.open("valley", renderer=cpu_renderer())
    walk(world, 3, start=40.0)
    new_ids = [c.id for c in world.scene.snapshot().chunks if c.id > before]
    world.close()
    assert new_ids, "walking new ground should generate"
    info = library.info("valley")
    assert info.chunks == len(facts["chunks"]) + len(new_ids)
    again = library.open("valley", read_only=True, renderer=cpu_renderer())
    assert len(again.scene.snapshot().chunks) == info.chunks
    again.close()


def test_list_and_info(generated):
    library, facts = generated
    [info] = library.list()
    assert info.name == "valley" and info.error is None
    assert info.chunks == len(facts["chunks"])
    assert info.gaussians == sum(len(c.gaussians) for c in facts["chunks"])
    assert info.frames >= info.chunks
    assert info.size_bytes > 0 and info.format_version == FORMAT_VERSION
    assert info.last_played >= info.created_at > 0
    assert library.info("valley") == info


def test_newer_format_is_refused_with_upgrade_hint(generated):
    library, _ = generated
    manifest_path = library.path("valley") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 2
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WorldFormatError) as err:
        library.open("valley", renderer=cpu_renderer())
    assert str(err.value) == (
        f"world 'valley' was written by format {FORMAT_VERSION + 2}; this worldstream reads up to {FORMAT_VERSION} — upgrade"
    )
    assert library.list()[0].error is not None


def test_corrupt_chunk_file_is_named(generated):
    library, _ = generated
    chunk = sorted((library.path("valley") / "chunks").iterdir())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(WorldFormatError, match=rf"{chunk.name} is corrupt: sha256"):
        library.open("valley", renderer=cpu_renderer())
    chunk.write_bytes(bytes(data[:-10]))
    with pytest.raises(WorldFormatError, match=rf"{chunk.name} is corrupt: {len(data) - 10} bytes"):
        library.open("valley", renderer=cpu_renderer())
    chunk.unlink()
    with pytest.raises(WorldFormatError, match=rf"{chunk.name} is missing"):
        library.open("valley", renderer=cpu_renderer())


def test_unreferenced_files_are_ignored_and_cleaned(generated):
    library, facts = generated
    root = library.path("valley")
    stray = root / "chunks" / "99999999.npz"
    stray.write_bytes(b"half a chunk")
    tmp = root / ".manifest.json.tmp-12345"
    tmp.write_bytes(b"{")
    world = library.open("valley", read_only=True, renderer=cpu_renderer())
    assert len(world.scene.snapshot().chunks) == len(facts["chunks"])
    world.close()
    assert stray.exists() and tmp.exists(), "read-only opens leave the directory alone"
    world = library.open("valley", renderer=cpu_renderer())
    world.close()
    assert not stray.exists() and not tmp.exists()


def test_one_writer_at_a_time(generated):
    library, _ = generated
    world = library.open("valley", renderer=cpu_renderer())
    try:
        with pytest.raises(WorldBusy):
            library.open("valley", renderer=cpu_renderer())
        reader = library.open("valley", read_only=True, renderer=cpu_renderer())
        reader.close()
    finally:
        world.close()
    library.open("valley", renderer=cpu_renderer()).close()  # the lock went with close


@pytest.mark.parametrize("name", ["", "A", "../evil", "a/b", ".hidden", "-dash", "x" * 65, "with space", "ünï", "a\x00b", None])
def test_unsafe_names_are_rejected(tmp_path, name):
    library = WorldLibrary(tmp_path / "worlds")
    with pytest.raises(InvalidWorldName, match=r"\[a-z0-9\]\[a-z0-9_-\]\{0,63\}"):
        library.path(name)
    with pytest.raises(InvalidWorldName):
        library.exists(name)
    with pytest.raises(InvalidWorldName):
        library.open(name)
    if isinstance(name, str) and name:
        with pytest.raises(InvalidWorldName):
            library.create(WorldConfig(name=name), renderer=cpu_renderer())
    assert not any(tmp_path.rglob("*")) or list(tmp_path.iterdir()) == [tmp_path / "worlds"]
    assert not (tmp_path / "evil").exists()


def test_safe_names_and_missing_worlds(tmp_path):
    library = WorldLibrary(tmp_path / "worlds")
    for name in ("a", "0", "my-world_2", "x" * 64):
        assert library.path(name).parent == library.root
    with pytest.raises(WorldNotFound, match="no world named 'nope'"):
        library.open("nope")
    assert library.list() == []


def test_create_refuses_to_overwrite(tmp_path):
    library = WorldLibrary(tmp_path)
    library.create(small_config("once"), renderer=cpu_renderer()).close()
    with pytest.raises(WorldExists):
        library.create(small_config("once"), renderer=cpu_renderer())


def test_delete_removes_a_closed_world_and_refuses_an_open_one(tmp_path):
    library = WorldLibrary(tmp_path)
    world = library.create(small_config("gone"), renderer=cpu_renderer())
    with pytest.raises(WorldBusy):
        library.delete("gone")
    world.close()
    library.delete("gone")
    assert not library.path("gone").exists() and library.list() == []
    with pytest.raises(WorldNotFound):
        library.delete("gone")


def test_imported_scene_is_saved_and_marks_its_region_explored(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    means = np.stack([rng.uniform(-6, 6, n), np.full(n, 1.6), rng.uniform(2, 14, n)], axis=1)
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    g = Gaussians(means, quats, np.full((n, 3), math.log(0.15)), np.full(n, 3.0), rng.random((n, 3)))
    library = WorldLibrary(tmp_path)
    world = library.import_gaussians("imported", g, caption="a meadow", renderer=cpu_renderer())
    explored = json.dumps(world.state_dict()["explored"])
    pixels = world.render(VIEW).rgb.copy()
    world.close()
    info = library.info("imported")
    assert info.gaussians == n and info.chunks == 1 and info.frames == 0
    world = library.open("imported", renderer=cpu_renderer())
    try:
        assert json.dumps(world.state_dict()["explored"]) == explored
        assert np.array_equal(world.render(VIEW).rgb, pixels)
        assert world.scene.snapshot().chunks[0].source.generator == "import"
    finally:
        world.close()


def test_start_image_is_kept_as_its_png_or_jpeg_bytes(tmp_path):
    from runtime.world.store.start_image import StartImageError, encode_png

    library = WorldLibrary(tmp_path / "worlds")
    y, x = np.mgrid[0:1024, 0:1024]
    pixels = np.stack([x // 4, y // 4, np.full_like(x, 60)], axis=-1).astype(np.uint8)
    png = encode_png(pixels)
    world = library.create(small_config("pictured"), start_image_bytes=png, renderer=cpu_renderer())
    assert np.array_equal(world.start_image, pixels)
    world.close()
    folder = tmp_path / "worlds" / "pictured"
    assert (folder / "start.png").read_bytes() == png  # 3 MB of pixels, a few KB on disk
    assert library.info("pictured").size_bytes < len(png) + 100_000
    world = library.open("pictured", renderer=cpu_renderer())
    assert np.array_equal(world.start_image, pixels)
    world.close()
    # pixels (the CLI's images) are saved as PNG too
    small = library.create(small_config("small"), start_image=pixels[:12, :16], renderer=cpu_renderer())
    small.close()
    assert (tmp_path / "worlds" / "small" / "start.png").stat().st_size < 2000
    # an unusable image is refused before anything is written
    with pytest.raises(StartImageError):
        library.create(small_config("broken"), start_image_bytes=b"\x89PNG\r\n\x1a\n" + b"\0" * 64, renderer=cpu_renderer())
    assert not library.exists("broken")


def test_worlds_saved_with_a_raw_start_image_still_open(tmp_path):
    from runtime.world.store.chunk_io import encode_image
    from runtime.world.store.durable import sha256_hex
    from runtime.world.store.manifest import read_manifest, write_manifest

    library = WorldLibrary(tmp_path / "worlds")
    pixels = np.full((20, 30, 3), 77, np.uint8)
    library.create(small_config("old"), start_image=pixels, renderer=cpu_renderer()).close()
    folder = tmp_path / "worlds" / "old"
    data = encode_image(pixels)  # as worlds were saved before: start.npz
    (folder / "start.npz").write_bytes(data)
    (folder / "start.png").unlink()
    manifest = read_manifest(folder, "old")
    manifest["start_image"] = {"file": "start.npz", "bytes": len(data), "sha256": sha256_hex(data)}
    write_manifest(folder, manifest)
    world = library.open("old", renderer=cpu_renderer())
    assert np.array_equal(world.start_image, pixels)
    world.close()
