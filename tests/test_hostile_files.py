"""Hostile files given to the ``worldstream`` command: each is refused (or read safely) in one
line, with exit code 2, in bounded memory and time, and leaves no world behind.

Every file is built here (builders shared with ``bench/hostile_files.py``). The CLI runs in
a subprocess whose address space and CPU time are capped (``RLIMIT_AS``, ``RLIMIT_CPU``), so
a regression fails fast instead of eating the machine, and whose peak RSS (``wait4``) is checked.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import textwrap
import zlib

import numpy as np
import pytest

from bench.hostile_files import (
    INRIA_DEGREE0,
    ZEROS,
    Run,
    _zero_deflate_block,
    deflated,
    gzip_bomb,
    npy_bytes,
    npy_header,
    ply_header,
    run_bounded,
    small_vertex_ply,
    zip_archive,
)
from runtime.world.camera import Pose, intrinsics_from_fov
from runtime.world.formats import SplatFormatError, read_splats
from runtime.world.formats.spz import HEADER, SPZ_MAGIC

MAX_RSS_MB = 400


def assert_refused(run: Run, *fragments: str) -> None:
    """Exit code 2, one line naming the problem, no traceback, bounded memory."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("worldstream: error: "), run.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb


def lyra_trajectory_arrays(n: int = 5, width: int = 64, height: int = 36) -> dict[str, np.ndarray]:
    w2c = np.stack([Pose(np.array([0.0, 0.0, 0.2 * i], np.float32)).w2c for i in range(n)]).astype(np.float32)
    K = np.broadcast_to(intrinsics_from_fov(width, height, math.radians(60.0)), (n, 3, 3)).astype(np.float32)
    return {"w2c": w2c, "intrinsics": K, "image_height": np.int64(height), "image_width": np.int64(width)}


# ---------------------------------------------------------------- .spz
@pytest.mark.parametrize(
    "case",
    ["zeros", "huge-count", "implausible-ratio"],
)
def test_spz_gzip_bombs_are_refused_in_bounded_memory(tmp_path, case):
    if case == "zeros":  # a plain bomb: 6.4 GB of zeros in ~6.3 MB (the size the issue reports)
        data = gzip_bomb(b"", 100)
        expected = "bad SPZ magic"
    elif case == "huge-count":  # a valid header claiming 300 M points, then the same bomb
        data = gzip_bomb(HEADER.pack(SPZ_MAGIC, 3, 300_000_000, 0, 12, 0, 0), 100)
        expected = "more than the limit of 10,000,000"
    else:  # 5 M degree-3 points (325 MB of arrays) claimed by a 64 KB bomb: SPZ data never compresses so well
        data = gzip_bomb(HEADER.pack(SPZ_MAGIC, 3, 5_000_000, 3, 12, 0, 0), 1)
        expected = "(325,000,000 bytes of arrays), more than 64 times the"
    (tmp_path / "bomb.spz").write_bytes(data)
    assert_refused(run_bounded("import", "bomb.spz", "--name", "bomb", cwd=tmp_path), "bomb.spz: ", expected)
    assert not (tmp_path / "worlds" / "bomb").exists()


def test_spz_inflates_only_what_its_header_needs(tmp_path):
    """A valid 10-point .spz followed, inside the same gzip stream, by 6.4 GB of zeros: the
    10 points are read and the zeros never inflated."""
    from runtime.world.formats.spz import encode_spz
    from runtime.world.gaussians import Gaussians

    rng = np.random.default_rng(0)
    quats = rng.normal(size=(10, 4)).astype(np.float32)
    ten = Gaussians(
        rng.uniform(-2, 2, (10, 3)).astype(np.float32), quats / np.linalg.norm(quats, axis=1, keepdims=True),
        np.full((10, 3), -3.0, np.float32), np.zeros(10, np.float32), np.full((10, 3), 0.5, np.float32),
    )
    raw = gzip.decompress(encode_spz(ten))
    (tmp_path / "padded.spz").write_bytes(gzip_bomb(raw, 100))
    run = run_bounded("import", "padded.spz", "--name", "padded", "--renderer", "cpu", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "imported 10 Gaussians" in run.stdout
    assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb


# ---------------------------------------------------------------- PLY
def test_ply_counts_beyond_the_file_are_refused_before_allocating(tmp_path):
    cases = {
        # a face list claiming 2^31 rows after a good vertex element
        "list.ply": small_vertex_ply(extra_lines=("element face 2147483648", "property list uchar int vertex_indices")),
        # 2^31 vertices, binary and ASCII
        "vertices.ply": ply_header("element vertex 2147483648", *(f"property float {p}" for p in INRIA_DEGREE0)) + bytes(64),
        "ascii.ply": ply_header("element vertex 2147483648", *(f"property float {p}" for p in INRIA_DEGREE0), fmt="ascii") + b"0 " * 64,
        # a 5,000-digit count
        "digits.ply": ply_header("element vertex " + "9" * 5000, "property float x") + bytes(64),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in ("list.ply", "vertices.ply", "ascii.ply"):
        assert_refused(run_bounded("import", name, "--name", "x", cwd=tmp_path), f"{name}: truncated data: header promises")
    assert_refused(run_bounded("import", "digits.ply", "--name", "x", cwd=tmp_path), "digits.ply: bad PLY header: element line")
    assert not (tmp_path / "worlds" / "x").exists()


def test_ply_list_elements_are_skipped_after_the_vertices_and_refused_before(tmp_path):
    faces = np.zeros(3, [("n", "u1"), ("i", "<i4", (3,))])
    faces["n"] = 3
    after = small_vertex_ply(extra_lines=("element face 3", "property list uchar int vertex_indices"), extra_data=faces.tobytes())
    (tmp_path / "mesh.ply").write_bytes(after)
    assert len(read_splats(tmp_path / "mesh.ply")) == 4
    before = small_vertex_ply(first_lines=("element face 3", "property list uchar int vertex_indices"), first_data=faces.tobytes())
    (tmp_path / "faces_first.ply").write_bytes(before)
    with pytest.raises(SplatFormatError, match=r"faces_first\.ply: element 'face' has list properties \(vertex_indices\)"):
        read_splats(tmp_path / "faces_first.ply")


def test_gaussians_far_outside_the_world_are_refused(tmp_path):
    data = bytearray(small_vertex_ply())
    header_len = data.index(b"end_header\n") + len(b"end_header\n")
    struct.pack_into("<f", data, header_len, 1e30)
    (tmp_path / "far.ply").write_bytes(bytes(data))
    assert_refused(run_bounded("import", "far.ply", "--name", "far", cwd=tmp_path), "far.ply: 1 Gaussian(s) lie beyond 1e+05 m")
    assert not (tmp_path / "worlds" / "far").exists()


# ---------------------------------------------------------------- trajectory.npz
def test_npz_extra_arrays_are_never_read(tmp_path):
    """A good trajectory plus a compressed 4 GiB array named 'junk' (4 MB on disk): only the
    four arrays the format names are read."""
    arrays = lyra_trajectory_arrays()
    entries = {f"{k}.npy": deflated(npy_bytes(v)) for k, v in arrays.items()}
    header = npy_header((1 << 29,), "<f8")  # 4 GiB of float64
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(64):
        crc = zlib.crc32(ZEROS, crc)
    entries["junk.npy"] = (head + _zero_deflate_block() * 64 + b"\x03\x00", crc, len(header) + 64 * len(ZEROS))
    (tmp_path / "trajectory.npz").write_bytes(zip_archive(entries))

    from runtime.world.movement.trajectory import load_trajectory

    assert len(load_trajectory(tmp_path / "trajectory.npz")) == 5
    run = run_bounded(
        "render", "--trajectory", "trajectory.npz", "--frames", "1", "--resolution", "32x18", "--keyframe-size", "32x18",
        "--renderer", "cpu", "out.mp4", cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.max_rss_mb < MAX_RSS_MB, run.max_rss_mb


def test_npz_arrays_are_checked_before_they_are_read(tmp_path):
    header = npy_header((4_000_000_000, 4, 4), "<f4")
    (tmp_path / "huge.npz").write_bytes(zip_archive({"w2c.npy": deflated(header + bytes(64))}))
    assert_refused(
        run_bounded("render", "--trajectory", "huge.npz", "x.mp4", cwd=tmp_path),
        "huge.npz: array 'w2c' has 64,000,000,000 elements",
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"image_width": np.int64(200_000)}, "image_width must be between 1 and 8192 pixels, got 200000"),
        ({"image_height": np.int64(200_000)}, "image_height must be between 1 and 8192 pixels"),
        ("translate", "camera 2 is at 1.1e+30 m from the origin; at most 1e+05 m"),
    ],
)
def test_trajectory_values_out_of_range_are_refused(tmp_path, change, expected):
    arrays = lyra_trajectory_arrays()
    if change == "translate":
        arrays["w2c"][2, 2, 3] = 1e30
    else:
        arrays.update(change)
    np.savez(tmp_path / "t.npz", **arrays)
    assert_refused(run_bounded("render", "--trajectory", "t.npz", "--renderer", "cpu", "x.mp4", cwd=tmp_path), f"t.npz: {expected}")
    assert not (tmp_path / "worlds").exists() or not any((tmp_path / "worlds").iterdir())


# ---------------------------------------------------------------- captions.json
@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        (json.dumps({"9" * 5000: "x"}), "caption key '99999999999999999999... (5000 characters)' is not a frame index"),
        (json.dumps({"0": "a field", "1": "x" * 5000}), "caption for frame 1 has 5,000 characters; at most 4,000"),
        (json.dumps({"0": "x" * (2 << 20)}), "captions file is 2,097,161 bytes; at most 1,048,576"),
    ],
)
def test_hostile_captions_are_refused(tmp_path, text, expected):
    np.savez(tmp_path / "t.npz", **lyra_trajectory_arrays())
    (tmp_path / "captions.json").write_text(text)
    run = run_bounded("render", "--trajectory", "t.npz", "--captions", "captions.json", "--renderer", "cpu", "x.mp4", cwd=tmp_path)
    assert_refused(run, f"captions.json: {expected}")


# ---------------------------------------------------------------- a render that fails leaves nothing
FAILING_GENERATOR = textwrap.dedent(
    """
    from runtime.world.generators.procedural import ProceduralGenerator


    class FailingGenerator(ProceduralGenerator):
        '''The procedural generator, except that every generation raises.'''

        def generate(self, *args, **kwargs):
            raise RuntimeError("the model ran out of memory")
    """
)


def test_render_whose_generator_fails_exits_nonzero_and_removes_its_world(tmp_path):
    """A generator that fails (here a real plugin, registered through the entry point
    group a third party would use) makes ``render`` exit 2 and delete the world it made."""
    plugins = tmp_path / "plugins"
    (plugins / "failing_generator-0.dist-info").mkdir(parents=True)
    (plugins / "failing_generator.py").write_text(FAILING_GENERATOR)
    (plugins / "failing_generator-0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-generator\nVersion: 0\n")
    (plugins / "failing_generator-0.dist-info" / "entry_points.txt").write_text(
        "[worldstream.generators]\nfailing = failing_generator:FailingGenerator\n"
    )
    np.savez(tmp_path / "t.npz", **lyra_trajectory_arrays())
    run = run_bounded(
        "render", "--trajectory", "t.npz", "--generator", "failing", "--renderer", "cpu", "--resolution", "32x18",
        "--keyframe-size", "32x18", "--world", "doomed", "x.mp4", cwd=tmp_path, python_path=(plugins,),
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert "worldstream: error: generation failed: RuntimeError: the model ran out of memory" in run.stderr
    assert not (tmp_path / "worlds" / "doomed").exists()
    assert not (tmp_path / "x.mp4").exists()


def test_render_into_a_missing_folder_removes_the_world_it_created(tmp_path):
    np.savez(tmp_path / "t.npz", **lyra_trajectory_arrays())
    run = run_bounded(
        "render", "--trajectory", "t.npz", "--renderer", "cpu", "--resolution", "32x18", "--keyframe-size", "32x18",
        "--world", "orphan", "missing/x.mp4", cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert not (tmp_path / "worlds" / "orphan").exists()


def test_depth_npy_claiming_more_than_it_holds_is_refused(tmp_path):
    """A 200-byte ``--depth`` .npy whose header claims 100,000 x 100,000 floats (np.load
    would allocate 37 GiB for it)."""
    from runtime.world.formats.media import write_image

    write_image(tmp_path / "first.png", np.full((36, 64, 3), 90, np.uint8))
    (tmp_path / "depth.npy").write_bytes(npy_header((100_000, 100_000), "<f4") + bytes(100))
    run = run_bounded("render", "--preset", "zoom-in", "--image", "first.png", "--depth", "depth.npy", "x.mp4", cwd=tmp_path)
    assert_refused(run, "depth.npy: depth array has 10,000,000,000 elements")


def test_import_refuses_more_gaussians_than_max_gaussians(tmp_path):
    (tmp_path / "four.ply").write_bytes(small_vertex_ply(4))
    run = run_bounded("import", "four.ply", "--name", "four", "--max-gaussians", "3", cwd=tmp_path)
    assert_refused(run, "four.ply: holds 4 Gaussians, more than the limit of 3")
    assert not (tmp_path / "worlds" / "four").exists()


@pytest.mark.parametrize(
    "manifest, expected",
    [
        ("[" * 100_000 + "]" * 100_000, "manifest.json is JSON nested too deeply to be a manifest"),
        (json.dumps({"format_version": 1, "chunks": [], "frames": [], "config": {"seed": "abc"}}), "manifest field of the wrong type"),
        (json.dumps({"format_version": 1, "chunks": [], "frames": [], "config": {}, "start_image": [1]}), "'start_image' must be a JSON object"),
    ],
)
def test_hostile_manifests_are_listed_as_unreadable(tmp_path, manifest, expected):
    (tmp_path / "worlds" / "evil").mkdir(parents=True)
    (tmp_path / "worlds" / "evil" / "manifest.json").write_text(manifest)
    listed = run_bounded("list", cwd=tmp_path)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    assert "evil" in listed.stdout and "unreadable" in listed.stdout and expected in listed.stdout
    assert_refused(run_bounded("info", "evil", cwd=tmp_path), expected)


def test_a_caption_longer_than_a_world_takes_is_refused(tmp_path):
    (tmp_path / "four.ply").write_bytes(small_vertex_ply(4))
    run = run_bounded("import", "four.ply", "--name", "four", "--caption", "x" * 5000, cwd=tmp_path)
    assert_refused(run, "caption must be a string of at most 4000 characters, got 5000")
    assert not (tmp_path / "worlds" / "four").exists()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` but whose data is a few bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_start_image_too_large_in_pixels_is_refused_before_decoding(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_claiming(20_000, 20_000))
    run = run_bounded("render", "--preset", "zoom-in", "--image", "huge.png", "x.mp4", cwd=tmp_path)
    assert_refused(run, "huge.png: image is 20000x20000 pixels; at most 67,108,864 pixels are read")


def test_ply_headers_that_contradict_themselves_are_refused(tmp_path):
    cases = {
        "two_vertex_elements.ply": (ply_header("element vertex 1", "property float x", "element vertex 1", "property float x"), "element 'vertex' appears twice"),
        "two_x.ply": (ply_header("element vertex 1", "property float x", "property float x"), "property 'x' appears twice"),
        "odd_type.ply": (ply_header("element vertex 1", "property float128 x"), "unknown property type 'float128'"),
        "no_format.ply": (b"ply\nelement vertex 1\nproperty float x\nend_header\n", "no 'format' line"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data + bytes(8))
        with pytest.raises(SplatFormatError, match=message):
            read_splats(tmp_path / name)
