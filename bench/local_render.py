"""Local rendering (the browser draws the splats, clients/web/src/local/): what it costs
the network and how fast it draws, in real headless Chromium against a real server.

Chromium here has no GPU: WebGL is SwiftShader (software), so the frame rates are a floor
for a laptop's GPU, not an estimate of it. The server runs the procedural generator and the
CPU renderer (its video keeps playing under the local view, as in the product).

* ``first frame``: from asking for the splats (the welcome) to the first chunk decoded and
  to the first local frame (the client shows the local view once the feed has paused for
  0.4 s: the view's region is in). ``fresh world``: a new world, so the first chunk is also
  generated; ``existing world``: a second player joining it (download and decode only).
* ``bytes per m² explored``: a player flies straight ahead (6 m/s) for ``--explore-s``
  seconds, then waits for generation and the feed to finish; the `.spz` bytes received over
  the ground the server explored around it (explored cells × cell area).
* ``fps``: local frames drawn per second by the page (its animation-frame loop, video
  playing underneath) at each ``--sizes`` window while turning (Q held) and walking (W held);
  standing still the page redraws only when something changed (a chunk, an avatar, a sort
  finishing), so that column counts redraws, not capacity.

    .venv/bin/python -m bench.local_render                      # 640x360 and 1280x720
    .venv/bin/python -m bench.local_render --sizes 640x360 --explore-s 5 --json out/local.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types
import uuid
from pathlib import Path

from bench.common import describe_machine, format_table, write_json
from bench.stream import start_server

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
LOCAL_SETTINGS = "localStorage.setItem('worldstream.settings', JSON.stringify({ renderMode: 'local' }));"


def local(page) -> dict:
    return page.evaluate("() => window.__worldstream.local")


def open_local(browser, url: str, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(LOCAL_SETTINGS)
    page = context.new_page()
    page.goto(url)
    return context, page


def wait_first_frame(page, timeout_s: float = 180.0) -> dict:
    page.wait_for_function("() => window.__worldstream && window.__worldstream.local.firstFrameMs !== null", timeout=timeout_s * 1000)
    return local(page)


def wait_quiet(page, timeout_s: float = 180.0) -> dict:
    """Until no generation runs and no piece came for 2 s."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        s = local(page)
        busy = page.evaluate("() => window.__worldstream.generation.active")
        if s["pieces"] != last or busy:
            last, since = s["pieces"], time.monotonic()
        elif time.monotonic() - since > 2.0:
            return s
        page.wait_for_timeout(250)
    return local(page)


def fps_over(page, seconds: float, key: str | None = None) -> float:
    if key:
        page.keyboard.down(key)
    before = local(page)["framesDrawn"]
    start = time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    frames = local(page)["framesDrawn"] - before
    elapsed = time.monotonic() - start
    if key:
        page.keyboard.up(key)
    return frames / elapsed


def create_world(page, name: str) -> None:
    page.fill("#start-name", "Bench")
    page.fill("#start-caption", "a quiet valley with a river")
    page.fill("#start-seed", "7")
    page.fill("#start-world-name", name)
    page.click("#start-create")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640x360,1280x720", help="browser windows (device pixel ratio 1)")
    parser.add_argument("--explore-s", type=float, default=6.0, help="seconds flying ahead for bytes per m²")
    parser.add_argument("--fps-s", type=float, default=4.0, help="seconds per frame-rate sample")
    parser.add_argument("--resolution", default="320x180", help="the server's video size")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    server_args = types.SimpleNamespace(
        renderer="cpu", generator="procedural", codec="h264", resolution=args.resolution, fps=30, bitrate=None, crf=None, server_cores=None
    )
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(server_args, Path(tmp))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
                world = f"bench-{uuid.uuid4().hex[:6]}"
                # 1. A fresh world: generation, download and decode before the first local frame.
                ctx, page = open_local(browser, url + "/", *sizes[0])
                create_world(page, world)
                fresh = wait_first_frame(page)
                renderer = fresh["capability"]["renderer"]
                # 2. Exploring: fly ahead, let generation and the feed finish.
                quiet = wait_quiet(page)
                bytes0, area0 = quiet["bytes"], quiet["exploredM2"]
                page.keyboard.press("f")
                page.keyboard.down("w")
                page.wait_for_timeout(args.explore_s * 1000)
                page.keyboard.up("w")
                explored = wait_quiet(page)
                ctx.close()
                results["first_frame"] = [
                    {"case": "fresh world", "first_chunk_ms": fresh["firstChunkMs"], "first_frame_ms": fresh["firstFrameMs"]},
                ]
                results["explore"] = {
                    "bytes_at_spawn": bytes0, "m2_at_spawn": area0, "bytes": explored["bytes"], "m2": explored["exploredM2"],
                    "splats_held": explored["splats"], "chunks_held": explored["chunks"],
                    "bytes_per_m2": explored["bytes"] / max(explored["exploredM2"], 1e-9),
                    "bytes_per_m2_exploring": (explored["bytes"] - bytes0) / max(explored["exploredM2"] - area0, 1e-9),
                }
                # 3. An existing world, per window size: first frame, then frame rates.
                results["fps"] = []
                for width, height in sizes:
                    ctx, page = open_local(browser, f"{url}/?world={world}&name=Visitor", width, height)
                    first = wait_first_frame(page)
                    settled = wait_quiet(page)
                    results["first_frame"].append(
                        {"case": f"existing world, {width}x{height}", "first_chunk_ms": first["firstChunkMs"], "first_frame_ms": first["firstFrameMs"]}
                    )
                    results["fps"].append({
                        "window": f"{width}x{height}", "splats": settled["splats"],
                        "still_fps": round(fps_over(page, args.fps_s), 1), "turning_fps": round(fps_over(page, args.fps_s, "KeyQ"), 1),
                        "walking_fps": round(fps_over(page, args.fps_s, "KeyW"), 1),
                    })
                    ctx.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(15)

    print(f"# Local rendering — {describe_machine()}")
    print(f"WebGL: {renderer} (software: frame rates are a floor, not a GPU's)\n")
    print(format_table(results["first_frame"], [("case", "case"), ("first_chunk_ms", "first chunk decoded (ms)"), ("first_frame_ms", "first local frame (ms)")]))
    e = results["explore"]
    print()
    print(format_table([e], [("bytes", "bytes received"), ("m2", "m² explored"), ("bytes_per_m2", "bytes / m²"),
                             ("bytes_per_m2_exploring", "bytes / m² (flying part)"), ("splats_held", "Gaussians held"), ("chunks_held", "chunks")]))
    print()
    print(format_table(results["fps"], [("window", "window"), ("splats", "Gaussians drawn"), ("turning_fps", "fps turning"), ("walking_fps", "fps walking"), ("still_fps", "redraws/s standing")]))
    write_json(args.json, {"webgl_renderer": renderer, **results})


if __name__ == "__main__":
    main()
