"""How much disk and memory a world's start image takes: the PNG a client sends against the
world folder, and what the open world holds in memory.

    .venv/bin/python -m bench.start_image                  # 1024, 2048 and 4096 pixels square
    .venv/bin/python -m bench.start_image --sizes 4096 --json out.json

Each image is a smooth gradient (PNG compresses it to a few KB per megapixel, as a
photo's sky or a drawing would). A world is created from it through ``WorldLibrary``
(the server's path), and the table shows the PNG's size, the world folder's size, and
what the same pixels took as the raw ``start.npz`` worlds kept before; then the memory
the open world holds: how much the process's resident memory grew from before the world
was created until it is open (garbage collected; big arrays are mapped and given back when
freed, so a decoded picture the world dropped does not count) and the start image pixels
the world keeps.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import numpy as np

from bench.common import describe_machine, format_table, process_memory_bytes, write_json
from runtime.world.formats.media import encode_png
from runtime.world.render.cpu import CpuRenderer
from runtime.world.store import WorldLibrary
from runtime.world.store.chunk_io import encode_image
from runtime.world.world import WorldConfig


def gradient(side: int) -> np.ndarray:
    """``[side, side, 3]`` uint8: red along x, green along y."""
    y, x = np.mgrid[0:side, 0:side]
    return np.stack([x * 256 // side, y * 256 // side, np.full_like(x, 90)], -1).astype(np.uint8)


def resident_bytes() -> int:
    """This process's resident memory (``VmRSS``, Linux)."""
    return process_memory_bytes("VmRSS")


def measure(side: int, renderer) -> dict:
    pixels = gradient(side)
    png = encode_png(pixels)
    del pixels  # only the PNG goes in, as from a client
    with tempfile.TemporaryDirectory(prefix="start-image-") as tmp:
        gc.collect()
        before = resident_bytes()
        world = WorldLibrary(tmp).create(WorldConfig(name="w"), start_image_bytes=png, renderer=renderer)
        gc.collect()
        held = resident_bytes() - before
        kept = 0 if world.start_image is None else world.start_image.nbytes
        world.close()
        folder = sum(p.stat().st_size for p in (Path(tmp) / "w").rglob("*") if p.is_file())
    return {
        "pixels": f"{side}x{side}",
        "png_kb": round(len(png) / 1e3, 1),
        "world_folder_kb": round(folder / 1e3, 1),
        "raw_npz_mb": round(len(encode_image(gradient(side))) / 1e6, 1),
        "open_world_mb": round(held / 1e6, 1),
        "kept_image_mb": round(kept / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024,2048,4096", help="square image sides in pixels, comma-separated")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    print(describe_machine())
    renderer = CpuRenderer()
    rows = [measure(int(s), renderer) for s in args.sizes.split(",")]
    print(format_table(rows, [("pixels", "start image"), ("png_kb", "PNG sent KB"), ("world_folder_kb", "world folder KB"),
                              ("raw_npz_mb", "as start.npz before MB"), ("open_world_mb", "open world RSS growth MB"),
                              ("kept_image_mb", "of which start image MB")]))
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
