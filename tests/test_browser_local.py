"""Local rendering in real Chromium (software WebGL: SwiftShader), against the real server:
the browser draws the world's splats itself (clients/web/src/local/, Spark on three.js).

* local mode loads the splats near spawn and draws frames, and its picture of a pose agrees
  with the server's CPU render of the same camera at the same resolution (PSNR >= 30 dB;
  the number goes to test-artifacts/browser_metrics.json, the pictures next to it);
* the far field reaches the page and is drawn behind the scene as the server draws it (a
  level view of the horizon agrees with the server's where a far-less picture does not);
* switching render modes keeps the pose;
* chunks generated after joining appear in the local view;
* two players in local mode see each other's avatar (in the 3D view, in the avatar's colour).
"""

from __future__ import annotations

import base64
import math
import time

import numpy as np
import pytest

from tests.test_browser import (  # noqa: F401  (fixtures used by name)
    ARTIFACTS,
    base_url,
    drag_look,
    hold,
    link,
    open_page,
    pytestmark,
    save_metrics,
    state,
    wait_frames,
    world,
)
from tests.test_browser_vr import browser  # noqa: F401  (Chromium with software WebGL)

from runtime.world.camera import Pose
from runtime.world.generators.procedural.generator import ProceduralGenerator
from runtime.world.render.avatars import avatar_color
from runtime.world.render.cpu import CpuRenderer
from runtime.world.scene import SceneSnapshot
from runtime.world.store.library import WorldLibrary

WORLD_CAPTION, WORLD_SEED = "a quiet valley with a river", 7  # tests/test_browser.py's world fixture
MIN_PSNR_DB = 30.0


@pytest.fixture
def open_local(open_page):
    """Open pages whose stored settings say render mode ``mode`` (each its own context: its own player)."""

    def opener(url: str, mode: str = "local", width: int = 640, height: int = 360):
        # Only the first load: a reload keeps what the page's settings panel stored since.
        settings = (
            f"if (!sessionStorage.getItem('set')) {{ sessionStorage.setItem('set', '1');"
            f" localStorage.setItem('worldstream.settings', JSON.stringify({{ renderMode: '{mode}' }})); }}"
        )
        return open_page(url, width, height, init_script=settings)

    return opener


def local(page) -> dict:
    return page.evaluate("() => window.__worldstream.local")


def wait_local_frames(page, more_than: int = 5, timeout_s: float = 90.0) -> None:
    page.wait_for_function(
        f"() => window.__worldstream && window.__worldstream.local.showing && window.__worldstream.local.framesDrawn > {more_than}",
        timeout=timeout_s * 1000,
    )


def wait_feed_quiet(page, timeout_s: float = 90.0) -> dict:
    """Until no generation runs and no splat piece came for 2 s; the local state then."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        s = local(page)
        busy = state(page)["generation"]["active"]
        if s["pieces"] != last or busy:
            last, since = s["pieces"], time.monotonic()
        elif time.monotonic() - since > 2.0:
            return s
        page.wait_for_timeout(250)
    raise AssertionError(f"the splat feed never went quiet: {local(page)}")


def capture(page, cameras) -> np.ndarray:
    """The page's local picture of ``cameras[0]`` (``[H, W, 3]`` uint8)."""
    view = {"w2c": cameras.w2c[0].reshape(-1).tolist(), "K": cameras.K[0].reshape(-1).tolist(), "width": cameras.width, "height": cameras.height}
    rgba = base64.b64decode(page.evaluate("(v) => window.__worldstream.captureLocal(v)", view))
    return np.frombuffer(rgba, np.uint8).reshape(cameras.height, cameras.width, 4)[:, :, :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def wire_ids(chunk) -> set[int]:
    """The ids a chunk goes by in the splat feed: a far chunk merged from several landings is
    sent per landing (its own id, then each later landing's)."""
    return {chunk.id} | {landing for landing, _ in chunk.far_parts[1:]}


def stored_chunks(server, world: str, held: set[int], timeout_s: float = 30.0, far: bool = False):
    """The world's chunks (``far``: its far-field chunks) as saved on disk, once every one the
    client holds (by its ids on the wire) is saved."""
    library = WorldLibrary(server.worlds)
    deadline = time.monotonic() + timeout_s
    while True:
        chunks = library.load_far(world, verify=False) if far else library.load_chunks(world, verify=False)
        if held <= set().union(*(wire_ids(c) for c in chunks)) or time.monotonic() > deadline:
            return chunks
        time.sleep(0.5)


def held_far(server, world: str, held: set[int]):
    """The saved far chunks the client holds (all of each: every landing)."""
    far = [c for c in stored_chunks(server, world, held, far=True) if wire_ids(c) & held]
    assert all(wire_ids(c) <= held for c in far), "the client holds only part of a far chunk"
    return far


def test_local_mode_loads_splats_near_spawn_and_matches_the_server(open_local, server, base_url, world):
    page = open_local(link(base_url, world, "Local"))
    wait_local_frames(page)
    s = wait_feed_quiet(page)
    assert s["mode"] == "local" and s["showing"]
    assert s["chunks"] > 0 and s["splats"] > 0 and s["badPieces"] == 0
    assert s["sky"] is not None, "the welcome carries the world's sky"

    pose = Pose(np.array(s["pose"]["position"], np.float32), s["pose"]["yaw"], s["pose"]["pitch"])
    chunks = stored_chunks(server, world, set(s["chunkIds"]))
    # Chunks whose bounds come within 10 m of the eye (terrain chunks are large boxes).
    near = {c.id for c in chunks if np.linalg.norm(np.maximum(np.maximum(c.bounds_min - pose.position, pose.position - c.bounds_max), 0)) < 10.0}
    assert near and near <= set(s["chunkIds"]), f"chunks near spawn not held locally: {near - set(s['chunkIds'])}"

    # The same camera at the server's own resolution (the module's server streams 320x180).
    cameras = pose.camera(320, 180)
    mine = capture(page, cameras)
    sky = ProceduralGenerator().sky(WORLD_CAPTION, WORLD_SEED)
    # The page draws the far-field chunks it holds behind its splats, as the server does
    # (under the whole scene as under the sky: see far_layer.ts).
    far = held_far(server, world, set(s["farChunkIds"]))
    theirs = CpuRenderer(far_see_through_from=None).render(SceneSnapshot(1, tuple(chunks), tuple(far)), cameras, sky).rgb[0]
    db = psnr(mine, theirs)
    ARTIFACTS.mkdir(exist_ok=True)
    from PIL import Image

    diff = np.clip(np.abs(mine.astype(int) - theirs.astype(int)) * 4, 0, 255).astype(np.uint8)
    Image.fromarray(np.concatenate([mine, theirs, diff], axis=0)).save(ARTIFACTS / "local_vs_server.png")
    save_metrics({"local_vs_server_psnr_db": round(db, 2), "local_chunks": s["chunks"], "local_splats": s["splats"], "local_bytes": s["bytes"]})
    assert db >= MIN_PSNR_DB, f"local picture vs the server's: {db:.1f} dB (test-artifacts/local_vs_server.png)"


def test_the_local_horizon_shows_the_far_field_as_the_server_does(open_local, server, base_url, world):
    """The far field (distant surfaces drawn behind the scene) reaches the page (splat_piece
    layer 'far') and is drawn there as the server draws it: at a level camera looking at the
    horizon, the local picture matches the server's with its far field, where a picture
    without it (what the page drew before the far field was fed) does not."""
    page = open_local(link(base_url, world, "Horizon"))
    wait_local_frames(page)
    s = wait_feed_quiet(page)
    assert s["farChunks"] > 0 and s["farSplats"] > 0, f"no far-field chunk reached the page: {s}"
    held = {c.id: c for c in stored_chunks(server, world, set(s["chunkIds"])) if c.id in set(s["chunkIds"])}
    far = held_far(server, world, set(s["farChunkIds"]))

    position = np.array(s["pose"]["position"], np.float32)
    sky = ProceduralGenerator().sky(WORLD_CAPTION, WORLD_SEED)
    # The page lays the far field under the whole scene as under the sky: it draws the
    # background before the scene, so it cannot weigh the far field by the scene's
    # transmittance as the server's video does (runtime/world/render/far_pass.py). The
    # server's renderer laying it the same way is the picture to match.
    renderer = CpuRenderer(far_see_through_from=None)
    rows, metrics = [], {}
    for k, yaw in enumerate((s["pose"]["yaw"], s["pose"]["yaw"] + 2.0)):
        cameras = Pose(position, yaw, 0.0).camera(320, 180)  # level: the horizon across the middle
        mine = capture(page, cameras)
        with_far = renderer.render(SceneSnapshot(1, tuple(held.values()), tuple(far)), cameras, sky).rgb[0]
        bare = renderer.render(SceneSnapshot(1, tuple(held.values())), cameras, sky).rgb[0]
        # Far pixels: where the far field changes the server's picture.
        changed = np.abs(with_far.astype(int) - bare.astype(int)).max(axis=2) > 8
        local_err = float(np.abs(mine.astype(int) - with_far.astype(int))[changed].mean()) if changed.any() else 0.0
        bare_err = float(np.abs(bare.astype(int) - with_far.astype(int))[changed].mean()) if changed.any() else 0.0
        metrics[f"horizon_{k}"] = {
            "far_pixels": round(float(changed.mean()), 4),
            "psnr_local_db": round(psnr(mine, with_far), 2),
            "psnr_without_far_db": round(psnr(bare, with_far), 2),
            "far_pixel_error_local": round(local_err, 1),
            "far_pixel_error_without_far": round(bare_err, 1),
        }
        rows.append(np.concatenate([mine, with_far, bare], axis=1))
    ARTIFACTS.mkdir(exist_ok=True)
    from PIL import Image

    Image.fromarray(np.concatenate(rows, axis=0)).save(ARTIFACTS / "local_far_field.png")
    save_metrics({"local_far_field": metrics, "local_far_chunks": s["farChunks"], "local_far_splats": s["farSplats"]})
    views = [v for v in metrics.values() if v["far_pixels"] > 0.002]
    assert views, f"no test view shows the far field: {metrics}"
    for v in views:
        assert v["psnr_local_db"] >= MIN_PSNR_DB, metrics
        assert v["psnr_local_db"] > v["psnr_without_far_db"] + 1.0, metrics
        assert v["far_pixel_error_local"] <= 0.5 * v["far_pixel_error_without_far"], metrics


SHOWS_VIDEO_JS = "() => { const s = window.__worldstream.local; return s.mode === 'video' && !s.showing && s.chunksHeld === 0; }"


def until_true(page, predicate_js: str, timeout_s: float = 30.0) -> None:
    """Wait at most ``timeout_s`` for ``predicate_js`` (the caller then asserts what it needs:
    a fixed wait was too short on a loaded machine, and a timeout here says less than the
    assertion's values)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # the module skips without playwright

    try:
        page.wait_for_function(predicate_js, timeout=timeout_s * 1000)
    except PlaywrightTimeoutError:
        pass


def until_poses_settle(page, metres: float, radians: float, still_s: float = 0.5, timeout_s: float = 30.0) -> None:
    """Wait at most ``timeout_s`` until the server's pose has not moved for ``still_s`` and the
    local prediction is within ``metres`` / ``radians`` of it (the server's reports settle the
    prediction; on a loaded machine they come late). The caller asserts what it needs."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        mine, server = local(page)["pose"], state(page)["pose"]
        now = (tuple(server["position"]), server["yaw"])
        if now != last:
            last, since = now, time.monotonic()
        agree = math.dist(mine["position"], server["position"]) < metres and abs(math.remainder(mine["yaw"] - server["yaw"], math.tau)) < radians
        if agree and time.monotonic() - since >= still_s:
            return
        page.wait_for_timeout(100)


def test_switching_render_modes_keeps_the_pose(open_local, base_url, world):
    page = open_local(link(base_url, world, "Switcher"))
    wait_local_frames(page)
    drag_look(page, 120, -30)
    hold(page, "w", 0.8)
    page.wait_for_timeout(1500)  # the server's reports settle the prediction
    until_poses_settle(page, 0.15, 0.02)  # (later on a loaded machine)
    before, server_before = local(page)["pose"], state(page)["pose"]
    assert math.dist(before["position"], server_before["position"]) < 0.15
    assert abs(math.remainder(before["yaw"] - server_before["yaw"], math.tau)) < 0.02

    def switch(mode: str) -> None:
        page.keyboard.press("o")
        page.select_option("#settings-render-mode", mode)
        page.keyboard.press("Escape")

    switch("video")
    until_true(page, SHOWS_VIDEO_JS)
    s = local(page)
    assert s["mode"] == "video" and not s["showing"] and s["chunksHeld"] == 0
    frames = state(page)["frames"]
    wait_frames(page, frames + 3, timeout_s=30.0)  # the video keeps playing
    for now in (s["pose"], state(page)["pose"]):
        assert math.dist(now["position"], before["position"]) < 0.05
        assert abs(math.remainder(now["yaw"] - before["yaw"], math.tau)) < 0.01
    assert abs(s["pose"]["pitch"] - before["pitch"]) < 1e-6

    switch("local")
    wait_local_frames(page, local(page)["framesDrawn"] + 3)
    after = local(page)["pose"]
    assert math.dist(after["position"], before["position"]) < 0.05
    assert abs(math.remainder(after["yaw"] - before["yaw"], math.tau)) < 0.01
    assert abs(after["pitch"] - before["pitch"]) < 1e-6


def test_new_chunks_appear_locally_after_generation(open_local, base_url, world):
    page = open_local(link(base_url, world, "Explorer"))
    wait_local_frames(page)
    first = set(wait_feed_quiet(page)["chunkIds"])
    done = state(page)["generation"]["done"]
    page.keyboard.press("f")  # fly: straight ahead, over whatever is there
    start = local(page)["pose"]["position"]
    # Held until the view has moved 5 m: software GL under load draws (and samples the keys)
    # only a frame or two a second, so a fixed hold would say little.
    page.keyboard.down("w")
    page.wait_for_function(
        f"() => {{ const p = window.__worldstream.local.pose.position, s = {start};"
        " return Math.hypot(p[0] - s[0], p[1] - s[1], p[2] - s[2]) > 5; }",
        timeout=60_000,
    )
    page.keyboard.up("w")
    page.wait_for_function(f"() => window.__worldstream.generation.done > {done}", timeout=120_000)
    s = wait_feed_quiet(page, timeout_s=120)
    assert set(s["chunkIds"]) - first, "chunks generated after joining never reached the local view"
    drawn = s["framesDrawn"]
    wait_local_frames(page, drawn + 3)


def test_two_players_see_each_other_in_local_mode(open_local, base_url, world):
    a = open_local(link(base_url, world, "Ann"))
    b = open_local(link(base_url, world, "Bob"))
    for page in (a, b):
        wait_local_frames(page)
        page.wait_for_function("() => window.__worldstream.local.avatars === 1", timeout=20_000)
    b.bring_to_front()  # keys go to the focused page

    def apart() -> float:
        me, players = state(a)["pose"]["position"], state(a)["players"]
        bob = next((p for p in players if p["id"] == state(b)["myId"]), None)
        return math.dist(me, bob["position"]) if bob else 0.0

    # Walked until the two stand 2 m apart: two pages drawing in software GL sample the keys
    # a frame or two a second at best, so a fixed hold says little.
    b.keyboard.down("w")
    deadline = time.monotonic() + 60
    while apart() < 2.0 and time.monotonic() < deadline:
        b.wait_for_timeout(100)
    b.keyboard.up("w")
    b.wait_for_timeout(1500)
    for viewer, other in ((a, b), (b, a)):
        them_id = state(other)["myId"]
        viewer.wait_for_function(f"() => window.__worldstream.players.some(p => p.id === {them_id!r})", timeout=10_000)
        me = state(viewer)["pose"]["position"]
        them = next(p for p in state(viewer)["players"] if p["id"] == them_id)
        d = np.subtract(them["position"], me)
        assert np.hypot(d[0], d[2]) > 1.0, "the two players stand apart"
        look = Pose(np.array(me, np.float32), math.atan2(d[0], d[2]), math.atan2(-d[1], np.hypot(d[0], d[2])))
        picture = capture(viewer, look.camera(320, 180))
        color = np.array(avatar_color(them_id))
        close = np.abs(picture.astype(int) - color).max(axis=2) <= 12
        # The figure covers about 0.6 m² facing the viewer: at least a third of that in pixels.
        focal = 0.5 * 180 / math.tan(math.radians(30))
        wanted = min(50.0, 0.2 * (focal / max(np.linalg.norm(d), 1.0)) ** 2)
        if close.sum() <= wanted:
            from PIL import Image

            ARTIFACTS.mkdir(exist_ok=True)
            Image.fromarray(picture).save(ARTIFACTS / "local_avatar_missing.png")
        assert close.sum() > wanted, f"the other player's avatar (colour {color.tolist()}, {np.linalg.norm(d):.1f} m away) is not in the local view (test-artifacts/local_avatar_missing.png)"
