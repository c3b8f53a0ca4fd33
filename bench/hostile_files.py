"""Hostile files given to the ``worldstream`` command: peak memory and time of each refusal.

    .venv/bin/python -m bench.hostile_files              # every case, Markdown table
    .venv/bin/python -m bench.hostile_files --json out.json
    .venv/bin/python -m bench.hostile_files --repo /tmp/old   # another checkout's CLI, to compare

Each case builds its file in a temporary folder (a few MB at most: the bombs are made of
repeated deflate blocks, not compressed on the spot), then runs ``python -m runtime.cli``
on it in a subprocess whose address space and CPU time are capped (3 GiB, 120 s), and
reports its exit code, wall time, peak RSS (``wait4``) and last line of stderr. The same
builders make the files of ``tests/test_hostile_files.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


ADDRESS_SPACE_LIMIT = 3 << 30  # the CLI needs ~0.1 GB; every hostile case tried 4-5 GB
CPU_LIMIT_S = 120
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float


# Runs the CLI and, at its exit, writes its own peak RSS (VmHWM, kB) to the file named by
# the environment. wait4's ru_maxrss cannot be used: the child is forked from the test
# process, and Linux carries the forked image's high-water mark across exec, so a test
# process that had loaded torch or Ray made every CLI run look ~600 MB large.
_PEAK_REPORTER = """
import atexit, os, runpy, sys

def report_peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["WORLDSTREAM_PEAK_RSS_FILE"], "w") as out:
        out.write(kib)

atexit.register(report_peak)
runpy.run_module("runtime.cli", run_name="__main__", alter_sys=True)
"""


def run_bounded(*args: str, cwd: Path, python_path: tuple[Path, ...] = (), repo: Path = REPO) -> Run:
    """``python -m runtime.cli ARGS`` (the CLI of checkout ``repo``) with capped memory and CPU;
    its peak RSS as the process itself saw it (VmHWM at exit; wait4's figure where it died
    before it could say)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))

    paths = [str(repo), *map(str, python_path), os.environ.get("PYTHONPATH")]
    peak_file = cwd / ".cli-peak-rss"
    peak_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "WORLDSTREAM_PEAK_RSS_FILE": str(peak_file)}
    out, err = cwd / ".cli-stdout", cwd / ".cli-stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PEAK_REPORTER, *args], cwd=cwd, env=env, stdout=o, stderr=e, preexec_fn=limit
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reported = peak_file.read_text().strip() if peak_file.exists() else ""
    peak_kib = int(reported) if reported.isdigit() else usage.ru_maxrss
    return Run(proc.returncode, out.read_text(), err.read_text(), peak_kib / 1024)


# ---------------------------------------------------------------- building hostile files
ZEROS = bytes(64 << 20)


def _zero_deflate_block() -> bytes:
    """Raw deflate of 64 MiB of zeros ending on a byte boundary with a fresh dictionary
    (a full flush), so copies of it concatenate into a valid stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH)


def gzip_bomb(prefix: bytes, zero_blocks: int) -> bytes:
    """A gzip stream of ``prefix`` then ``zero_blocks`` x 64 MiB of zeros (~64 KiB per block on disk)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(zero_blocks):
        crc = zlib.crc32(ZEROS, crc)
    size = (len(prefix) + zero_blocks * len(ZEROS)) & 0xFFFFFFFF
    body = head + _zero_deflate_block() * zero_blocks + b"\x03\x00"  # \x03\x00: the empty final block
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + struct.pack("<II", crc, size)


def zip_archive(entries: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A zip of already-deflated entries ``name -> (raw deflate, crc32, uncompressed size)``;
    sizes go in zip64 extra fields, so an entry may inflate past 4 GiB."""
    local, central = b"", b""
    for name, (data, crc, size) in entries.items():
        encoded = name.encode()
        extra = struct.pack("<HHQQ", 1, 16, size, len(data))
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra))
        local += encoded + extra + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0, offset
        )
        central += encoded + extra
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return local + central + end


def deflated(data: bytes) -> tuple[bytes, int, int]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """The header of a ``.npy`` file holding an array of ``shape`` (its data not included)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def ply_header(*lines: str, fmt: str = "binary_little_endian") -> bytes:
    return ("\n".join(["ply", f"format {fmt} 1.0", *lines, "end_header"]) + "\n").encode()


INRIA_DEGREE0 = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def small_vertex_ply(n: int = 4, extra_lines: tuple[str, ...] = (), extra_data: bytes = b"", first_lines: tuple[str, ...] = (), first_data: bytes = b"") -> bytes:
    rows = np.zeros((n, len(INRIA_DEGREE0)), "<f4")
    rows[:, 0] = np.arange(n)
    rows[:, 7:10] = -3.0
    rows[:, 10] = 1.0
    lines = [*first_lines, f"element vertex {n}", *(f"property float {p}" for p in INRIA_DEGREE0), *extra_lines]
    return ply_header(*lines) + first_data + rows.tobytes() + extra_data


# ---------------------------------------------------------------- the cases
def cases() -> dict[str, tuple[str, bytes, list[str]]]:
    """``name -> (file name, bytes, CLI arguments)``."""
    spz_header = struct.Struct("<IIIBBBB")
    vertex_props = [f"property float {p}" for p in INRIA_DEGREE0]
    junk = npy_header((1 << 29,), "<f8")  # 4 GiB of float64, 4 MB on disk
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    junk_head = compressor.compress(junk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(junk)
    for _ in range(64):
        crc = zlib.crc32(ZEROS, crc)
    w2c = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    K = np.tile(np.array([[50, 0, 32], [0, 50, 18], [0, 0, 1]], np.float32), (2, 1, 1))
    npz = {f"{k}.npy": deflated(npy_bytes(v)) for k, v in {"w2c": w2c, "intrinsics": K}.items()}
    npz["junk.npy"] = (junk_head + _zero_deflate_block() * 64 + b"\x03\x00", crc, len(junk) + 64 * len(ZEROS))
    return {
        ".spz gzip bomb (6.4 GB of zeros)": ("bomb.spz", gzip_bomb(b"", 100), ["import", "bomb.spz", "--name", "x"]),
        ".spz header claiming 300 M points": (
            "huge.spz", gzip_bomb(spz_header.pack(0x5053474E, 3, 300_000_000, 0, 12, 0, 0), 100), ["import", "huge.spz", "--name", "x"]
        ),
        "PLY face list claiming 2^31 rows": (
            "list.ply", small_vertex_ply(extra_lines=("element face 2147483648", "property list uchar int vertex_indices")),
            ["import", "list.ply", "--name", "x"],
        ),
        "ASCII PLY claiming 2^31 vertices": (
            "ascii.ply", ply_header("element vertex 2147483648", *vertex_props, fmt="ascii") + b"0 " * 64, ["import", "ascii.ply", "--name", "x"]
        ),
        ".npz with a compressed 4 GiB extra array": (
            "trajectory.npz", zip_archive(npz), ["render", "--trajectory", "trajectory.npz", "--frames", "1", "--resolution", "32x18",
                                                  "--keyframe-size", "32x18", "--renderer", "cpu", "out.mp4"],
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose CLI runs (e.g. an older commit, to compare)")
    args = ap.parse_args()
    from bench.common import describe_machine, format_table, write_json

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (file_name, data, cli_args) in cases().items():
            (Path(folder) / file_name).write_bytes(data)
            t0 = time.perf_counter()
            run = run_bounded(*cli_args, cwd=Path(folder), repo=args.repo)
            lines = run.stderr.strip().splitlines()
            rows.append({
                "case": name, "file_mb": len(data) / 1e6, "exit": run.returncode, "seconds": time.perf_counter() - t0,
                "peak_rss_mb": run.max_rss_mb, "stderr": (lines[-1] if lines else "")[:100],
            })
    print(describe_machine())
    print(format_table(rows, [("case", "case"), ("file_mb", "file MB"), ("exit", "exit"), ("seconds", "s"),
                              ("peak_rss_mb", "peak RSS MB"), ("stderr", "last stderr line")]))
    write_json(args.json, {"hostile_files": rows})


if __name__ == "__main__":
    main()
