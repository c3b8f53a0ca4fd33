"""The web client in a real browser: Debian Chromium driven by Playwright, against the real
server (the ``server`` fixture in conftest.py), over loopback.

Each test reads the client's state from ``window.__worldstream`` (frames presented, pose,
players, latency, ...) and compares video pixels drawn to a canvas. The run also saves a
screenshot of the client to ``test-artifacts/screenshot.png`` (``scripts/screenshot`` copies it
to the README's ``docs/screenshot.png``), and the browser-measured numbers to
``test-artifacts/browser_metrics.json``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DIST_INDEX = ROOT / "clients" / "web" / "dist" / "index.html"
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "screenshot.png"

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra is not installed
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.skipif(
        not DIST_INDEX.exists(), reason="web client not built (cd clients/web && npm ci && npm run build)"
    ),
]

# Size of the grey thumbnail that frames are compared on: small enough to ignore codec noise.
THUMB_W, THUMB_H = 48, 27

SNAPSHOT_JS = f"""() => {{
  const video = document.getElementById("view");
  const canvas = document.createElement("canvas");
  canvas.width = {THUMB_W}; canvas.height = {THUMB_H};
  const ctx = canvas.getContext("2d", {{ willReadFrequently: true }});
  ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const grey = [];
  for (let i = 0; i < rgba.length; i += 4) grey.push((rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3);
  return grey;
}}"""

STATE_JS = """() => {
  const w = window.__worldstream;
  return {
    frames: w.framesPresented, fps: w.fps, connection: w.connectionState, rtc: w.rtcState,
    reconnects: w.reconnects, world: w.world, myId: w.myId, players: w.players, pose: w.pose,
    latency: w.latency, stats: w.stats, generation: w.generation, explored: w.exploredCells,
    inputs: w.inputsSent, overlay: w.overlay, shareUrl: w.shareUrl, resumed: w.resumed,
    lastError: w.lastError, videoRefreshes: w.videoRefreshes,
  };
}"""


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def state(page: "Page") -> dict:
    return page.evaluate(STATE_JS)


def snapshot(page: "Page") -> list[float]:
    """The current video frame as a small grey thumbnail."""
    return page.evaluate(SNAPSHOT_JS)


def difference(a: list[float], b: list[float]) -> float:
    """Mean absolute grey-level difference between two thumbnails (0..255)."""
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def wait_frames(page: "Page", more_than: int = 0, timeout_s: float = 10.0) -> None:
    page.wait_for_function(
        f"() => window.__worldstream && window.__worldstream.framesPresented > {more_than}",
        timeout=timeout_s * 1000,
    )


def wait_for_scenery(page: "Page", timeout_s: float = 90.0) -> None:
    """Wait until the world has generated ground the player can see (an empty world is all sky,
    and walking through sky changes no pixel). On a loaded machine the first chunk takes a while."""
    page.wait_for_function("() => window.__worldstream && window.__worldstream.exploredCells > 0", timeout=timeout_s * 1000)
    settle(page, 1.0)


def settle(page: "Page", seconds: float = 0.6) -> None:
    """Let a few new frames through (the last input reaches the picture)."""
    before = state(page)["frames"]
    page.wait_for_timeout(seconds * 1000)
    wait_frames(page, before + 2)


def hold(page: "Page", key: str, seconds: float) -> None:
    page.keyboard.down(key)
    page.wait_for_timeout(seconds * 1000)
    page.keyboard.up(key)


def drag_look(page: "Page", dx: int, dy: int = 0) -> None:
    """Look around by dragging with the mouse button held (pointer lock is optional)."""
    page.mouse.move(400, 300)
    page.mouse.down()
    steps = 10
    for i in range(1, steps + 1):
        page.mouse.move(400 + dx * i / steps, 300 + dy * i / steps)
        page.wait_for_timeout(20)
    page.mouse.up()


def failure_notes(page: "Page") -> str:
    """What a failed assertion should say: the client's state, and a screenshot in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"failure-{uuid.uuid4().hex[:6]}.png"
    page.screenshot(path=str(path))
    s = state(page)
    keys = ("frames", "fps", "connection", "rtc", "reconnects", "videoRefreshes", "overlay", "pose", "stats")
    return f"screenshot {path.name}; " + json.dumps({k: s.get(k) for k in keys})


def planar_distance(a: list[float], b: list[float]) -> float:
    return math.hypot(a[0] - b[0], a[2] - b[2])


def save_metrics(update: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "browser_metrics.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(update)
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def base_url(server) -> str:
    """The module's server (conftest.py), at 320x180."""
    return server.url.rstrip("/")


@pytest.fixture
def open_page(browser):
    """Open pages in fresh browser contexts (each its own storage: its own player)."""
    contexts = []

    def opener(url: str, width: int = 800, height: int = 450, init_script: str | None = None) -> "Page":
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        if init_script:  # runs before the page's own scripts, on every load
            context.add_init_script(init_script)
        page = context.new_page()
        page.on("pageerror", lambda error: print(f"page error: {error}"))
        page.goto(url)
        return page

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def world(browser, base_url) -> str:
    """A world created through the start screen; the other tests join it by link."""
    name = f"browser-{uuid.uuid4().hex[:8]}"
    context = browser.new_context(viewport={"width": 900, "height": 600})
    page = context.new_page()
    page.goto(base_url + "/")
    create_world_from_start_screen(page, name)
    page.wait_for_function(
        "() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=60_000
    )
    wait_frames(page, 0, timeout_s=30)
    wait_for_scenery(page)
    s = state(page)
    assert s["world"] == name
    assert page.url.endswith(f"?world={name}"), "the address bar should hold the world's link"
    assert s["shareUrl"].endswith(f"?world={name}")
    context.close()
    return name


def link(base_url: str, world: str, player: str) -> str:
    return f"{base_url}/?world={world}&name={player}"


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------


def test_link_joins_and_video_presents_frames(open_page, base_url, world):
    page = open_page(link(base_url, world, "Linker"))
    start = time.monotonic()
    wait_frames(page, 5, timeout_s=10)
    seconds = time.monotonic() - start
    s = state(page)
    assert s["connection"] == "joined"
    assert s["world"] == world
    assert s["overlay"] == "hidden"
    assert page.locator("#hud").is_visible()
    assert page.locator("#world-name").inner_text() == world
    # Frames keep coming: the stream is live, not one still picture.
    first = s["frames"]
    page.wait_for_timeout(1500)
    assert state(page)["frames"] > first + 5
    save_metrics({"first_frames_after_s": round(seconds, 2)})

    # The caption box steers generation; typing in it must not walk.
    pose = state(page)["pose"]
    page.click("#caption-input")
    page.keyboard.type("a waterfall over mossy rocks")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    assert "waterfall" in page.locator("#caption-current").inner_text()
    assert planar_distance(pose["position"], state(page)["pose"]["position"]) < 0.05
    assert state(page)["lastError"] is None


def test_walking_and_turning_change_the_view(open_page, base_url, world):
    page = open_page(link(base_url, world, "Walker"))
    wait_frames(page, 5)
    wait_for_scenery(page)

    still_a = snapshot(page)
    pose_a = state(page)["pose"]
    page.wait_for_timeout(600)
    still_b = snapshot(page)
    noise = difference(still_a, still_b)

    hold(page, "w", 1.5)
    moved = snapshot(page)
    pose_moved = state(page)["pose"]
    walk_change = difference(still_b, moved)
    walked = planar_distance(pose_a["position"], pose_moved["position"])
    assert walked > 0.5, f"holding W should walk (moved {walked:.2f} m)"
    assert walk_change > max(2.0, 3 * noise), (
        f"walking should change the picture ({walk_change:.2f} vs noise {noise:.2f}; grey range before "
        f"{min(still_b):.0f}..{max(still_b):.0f}, after {min(moved):.0f}..{max(moved):.0f}; {failure_notes(page)})"
    )

    # Released: the player stops, and so does the picture.
    settle(page, 0.8)
    stop_a = snapshot(page)
    pose_stop_a = state(page)["pose"]
    page.wait_for_timeout(800)
    stop_b = snapshot(page)
    pose_stop_b = state(page)["pose"]
    assert planar_distance(pose_stop_a["position"], pose_stop_b["position"]) < 0.05
    assert difference(stop_a, stop_b) < max(1.5, walk_change / 3)

    # Dragging the mouse to the right turns right (positive yaw) and changes the picture.
    drag_look(page, 220)
    settle(page, 0.8)
    turned = snapshot(page)
    pose_turned = state(page)["pose"]
    yaw_change = math.remainder(pose_turned["yaw"] - pose_stop_b["yaw"], math.tau)
    assert yaw_change > 0.2, f"dragging right should turn right (yaw changed by {yaw_change:.3f})"
    assert difference(stop_b, turned) > max(2.0, 3 * noise)

    # Latency was measured in the browser for these inputs.
    latency = state(page)["latency"]
    assert latency["samples"] > 0 and latency["p50"] is not None
    assert 0 < latency["p50"] <= latency["p95"] < 5000
    save_metrics({"walk_latency_ms": {"p50": latency["p50"], "p95": latency["p95"], "samples": latency["samples"]}})


def test_a_blocked_move_shows_the_blocked_cue(open_page, base_url, world):
    """Walking on open ground shows no cue; flying down into the ground (F, then C held) is
    blocked by it, and the client shows its "Blocked" cue from the server's frame_info."""
    page = open_page(link(base_url, world, "Bumper"))
    wait_frames(page, 5)
    wait_for_scenery(page)
    hold(page, "w", 1.5)  # onto ground the first keyframes show well
    settle(page, 0.5)
    assert page.evaluate("() => window.__worldstream.blockedCue.shown") == 0
    page.keyboard.press("f")
    page.keyboard.down("c")
    try:
        page.wait_for_function("() => window.__worldstream.blockedCue.shown > 0", timeout=15_000)
        page.wait_for_timeout(300)  # still held against the ground: the cue stays up
        assert page.evaluate("() => window.__worldstream.blockedCue.visible"), failure_notes(page)
    finally:
        page.keyboard.up("c")
    page.wait_for_function("() => !window.__worldstream.blockedCue.visible", timeout=5_000)


def test_walking_into_new_space_shows_generation(open_page, base_url, world):
    page = open_page(link(base_url, world, "Explorer"))
    wait_frames(page, 5)
    settle(page, 0.5)
    before = state(page)
    explored_before = before["explored"]
    requested_before = before["generation"]["requested"]
    view_before = snapshot(page)

    # Run forward until the region ahead is requested (or give up after a generous while).
    page.keyboard.down("Shift")
    page.keyboard.down("w")
    try:
        page.wait_for_function(
            f"() => window.__worldstream.generation.requested > {requested_before}", timeout=30_000
        )
        page.wait_for_function("() => window.__worldstream.generation.indicatorShown > 0", timeout=5_000)
        assert page.locator("#generation").is_visible() or state(page)["generation"]["done"] > 0
        # The first job asked for may be the look-around where the player stands (cells
        # explored already): keep running until the new space ahead lands.
        try:
            page.wait_for_function(f"() => window.__worldstream.exploredCells > {explored_before}", timeout=60_000)
        except Exception:
            pass  # the assertion below says what is missing
    finally:
        page.keyboard.up("w")
        page.keyboard.up("Shift")

    page.wait_for_function("() => window.__worldstream.generation.done > 0", timeout=60_000)
    settle(page, 0.8)
    after = state(page)
    assert after["generation"]["failed"] == 0
    assert after["explored"] > explored_before, "the minimap should gain explored cells"
    assert difference(view_before, snapshot(page)) > 2.0, "new content should be in view"


def test_two_players_see_each_other(open_page, base_url, world):
    first = open_page(link(base_url, world, "Ada"))
    second = open_page(link(base_url, world, "Grace"))
    for page in (first, second):
        wait_frames(page, 3)
    both = "() => { const names = window.__worldstream.players.map(p => p.name); return names.includes('Ada') && names.includes('Grace'); }"
    for page in (first, second):
        page.wait_for_function(both, timeout=10_000)
        names = page.locator("#players .player-name").all_inner_texts()
        assert "Ada" in names and "Grace" in names
    # The one who walks shows up moved on the other's map.
    ada_id = state(first)["myId"]
    start = next(p for p in state(second)["players"] if p["id"] == ada_id)["position"]
    hold(first, "w", 1.2)
    second.wait_for_function(
        f"""() => {{
          const p = window.__worldstream.players.find(p => p.id === {json.dumps(ada_id)});
          return p && Math.hypot(p.position[0] - {start[0]}, p.position[2] - {start[2]}) > 0.3;
        }}""",
        timeout=10_000,
    )


def test_dropped_connection_reconnects_in_the_same_place(open_page, base_url, world):
    page = open_page(link(base_url, world, "Phoenix"))
    wait_frames(page, 5)
    hold(page, "w", 0.8)
    drag_look(page, 120)
    settle(page, 0.8)
    before = state(page)

    page.evaluate("() => window.__worldstream.dropConnection()")
    page.wait_for_function("() => window.__worldstream.reconnects >= 1", timeout=5_000)
    page.wait_for_function(
        "() => window.__worldstream.connectionState === 'joined' && window.__worldstream.overlay === 'hidden'",
        timeout=20_000,
    )
    frames = state(page)["frames"]
    wait_frames(page, frames + 5, timeout_s=10)
    after = state(page)
    assert after["myId"], "joined again"
    assert after["resumed"], "the server should have resumed this player"
    assert planar_distance(before["pose"]["position"], after["pose"]["position"]) < 0.1
    assert abs(math.remainder(before["pose"]["yaw"] - after["pose"]["yaw"], math.tau)) < 0.05


def test_video_renegotiates_on_the_same_connection(open_page, base_url, world):
    """What the delay guard does when the jitter buffer stays full: a new peer connection."""
    page = open_page(link(base_url, world, "Refresher"))
    wait_frames(page, 5)
    frames = state(page)["frames"]
    page.evaluate("() => window.__worldstream.refreshVideo()")
    page.wait_for_function("() => window.__worldstream.rtcState === 'connected'", timeout=10_000)
    wait_frames(page, frames + 10, timeout_s=10)
    hold(page, "w", 0.6)
    settle(page, 0.6)
    s = state(page)
    assert s["reconnects"] == 0 and s["connection"] == "joined"
    assert s["latency"]["samples"] > 0, "latency is measured again on the new stream"


def test_a_dead_media_worker_brings_the_video_back_at_once(open_page, start_server):
    """The server says video_ended when the process streaming a player's video dies; the
    client offers again at once instead of waiting for ICE to fail (tens of seconds)."""
    own = start_server()
    page = open_page(own.url + "/")
    create_world_from_start_screen(page, f"crash-{uuid.uuid4().hex[:6]}")
    page.wait_for_function(
        "() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=60_000
    )
    wait_frames(page, 5, timeout_s=30)
    frames = state(page)["frames"]
    assert own.kill_media_workers(), "the server runs no media worker"
    page.wait_for_function("() => window.__worldstream.videoRestarts >= 1", timeout=10_000)
    wait_frames(page, frames + 10, timeout_s=20)
    s = state(page)
    assert s["reconnects"] == 0 and s["connection"] == "joined" and s["rtc"] == "connected"


def test_unknown_world_link_offers_to_create_it(open_page, base_url):
    page = open_page(f"{base_url}/?world=nobody-{uuid.uuid4().hex[:6]}")
    page.wait_for_function("() => window.__worldstream && window.__worldstream.overlay === 'failed'", timeout=10_000)
    assert page.locator("#overlay-action").is_visible()
    assert "Create" in page.locator("#overlay-action").inner_text()
    assert page.locator(".toast-error").count() >= 1, "the server's error should show as a toast"


def test_start_screen_lists_worlds_to_join(open_page, base_url, world):
    page = open_page(base_url + "/")
    entry = page.locator("#recent-worlds button", has_text=world)
    entry.wait_for(timeout=10_000)
    entry.click()
    page.wait_for_function(
        "() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=30_000
    )
    assert state(page)["world"] == world


def create_world_from_start_screen(page: "Page", name: str, caption: str = "a quiet valley with a river") -> None:
    """Fill in and submit the start screen's "New world" form."""
    page.fill("#start-name", "Creator")
    page.fill("#start-caption", caption)
    page.fill("#start-seed", "7")
    page.fill("#start-world-name", name)
    page.click("#start-create")


def test_screenshot_of_the_running_client(open_page, start_server):
    """A README picture: a server at 640x360 (sharper than the other tests' 320x180), a few
    seconds of walking, HUD up. Saved to test-artifacts/; ``scripts/screenshot`` puts it in docs/."""
    sharp = start_server(resolution="640x360")
    page = open_page(sharp.url + "/", width=1280, height=720)
    create_world_from_start_screen(page, "screenshot")
    page.wait_for_function(
        "() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=60_000
    )
    wait_frames(page, 5, timeout_s=30)
    hold(page, "w", 2.0)
    drag_look(page, -90, -10)
    hold(page, "w", 1.0)
    # Let the regions ahead land (the CPU is shared with generation) and the HUD's 10 s
    # latency window roll past them, then look a little: the numbers show the settled stream.
    deadline = time.monotonic() + 60
    while state(page)["generation"]["active"] and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    page.wait_for_timeout(8000)
    drag_look(page, 40)
    settle(page, 2.0)
    s = state(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    save_metrics(
        {
            "screenshot_640x360": {
                "fps": s["fps"],
                "bitrate": s["stats"]["bitrate"],
                "latency_p50_ms": s["latency"]["p50"],
                "latency_p95_ms": s["latency"]["p95"],
                "latency_samples": s["latency"]["samples"],
                "jitter_buffer_ms": s["stats"]["jitterBufferMs"],
                "server_mtp_p50_ms": s["stats"]["serverMtpP50"],
            }
        }
    )


def test_keyboard_turns_with_q_e_and_arrows_and_strafes_with_a_d(open_page, base_url, world):
    page = open_page(link(base_url, world, "Turner"))
    wait_frames(page, 5)
    settle(page, 0.5)

    def yaw() -> float:
        return state(page)["pose"]["yaw"]

    for key, sign in (("e", 1), ("ArrowRight", 1), ("q", -1), ("ArrowLeft", -1)):
        before, position = yaw(), state(page)["pose"]["position"]
        hold(page, key, 0.5)
        settle(page, 0.5)
        turned = math.remainder(yaw() - before, math.tau)
        assert sign * turned > 0.3, f"holding {key} should turn {'right' if sign > 0 else 'left'} (yaw changed by {turned:.3f})"
        assert planar_distance(position, state(page)["pose"]["position"]) < 0.05, f"{key} turns in place"
    # A and D still strafe: the position moves, the heading does not.
    before, position = yaw(), state(page)["pose"]["position"]
    hold(page, "d", 0.8)
    settle(page, 0.5)
    assert abs(math.remainder(yaw() - before, math.tau)) < 0.01
    assert planar_distance(position, state(page)["pose"]["position"]) > 0.3


def test_start_image_problems_are_said_in_words(open_page, base_url):
    """A damaged PNG and a valid but 20000x20000 PNG: the player reads what is wrong, never
    the decoder's jargon."""
    from images import damaged_png, png_bytes

    for name, data, words in (
        ("huge.png", png_bytes(20000, 20000), "20000×20000 pixels"),
        ("broken.png", damaged_png(), "not a readable"),
    ):
        page = open_page(base_url + "/")
        page.set_input_files("#start-image", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
        create_world_from_start_screen(page, f"img-{uuid.uuid4().hex[:6]}")
        shown = page.locator(".start-error:visible, #overlay:visible, .toast-error")
        shown.first.wait_for(timeout=20_000)
        page.wait_for_function(f"() => document.body.innerText.includes({json.dumps(words)})", timeout=20_000)
        text = page.locator("body").inner_text()
        assert words in text, (name, text[:500])
        assert "avcodec" not in text and "Errno" not in text, (name, text[:500])


def test_a_caption_change_shows_for_every_player(open_page, base_url, world):
    first = open_page(link(base_url, world, "Steerer"))
    second = open_page(link(base_url, world, "Watcher"))
    for page in (first, second):
        wait_frames(page, 3)
    caption = f"a glacier lake {uuid.uuid4().hex[:4]}"
    first.click("#caption-input")
    first.keyboard.type(caption)
    first.keyboard.press("Enter")
    second.wait_for_function(
        f"() => document.getElementById('caption-current').innerText.includes({json.dumps(caption)})", timeout=10_000
    )
    assert caption in first.locator("#caption-current").inner_text()
    assert "Steerer" in second.locator("#toasts").inner_text()


def test_a_private_world_is_shared_by_invite_and_its_creator_revokes_the_link(open_page, base_url):
    """Create a private world on the start screen: its link carries the invite, a guest
    joins by it, the world is not listed, and the creator's "New link" makes the old link
    useless while the guest stays."""
    name = f"hidden-{uuid.uuid4().hex[:6]}"
    joined = "() => window.__worldstream && window.__worldstream.connectionState === 'joined'"
    owner = open_page(base_url + "/")
    owner.check("#start-private")
    create_world_from_start_screen(owner, name)
    owner.wait_for_function(joined, timeout=60_000)
    first_link = owner.url
    assert f"world={name}" in first_link and "invite=" in first_link, first_link
    assert state(owner)["shareUrl"] == first_link
    assert owner.locator("#revoke-invite").is_visible()
    assert "private" in owner.locator("#world-name").evaluate("e => getComputedStyle(e, '::after').content")

    guest = open_page(first_link + "&name=Guest")
    guest.wait_for_function(joined, timeout=60_000)
    assert state(guest)["world"] == name and guest.locator("#revoke-invite").is_hidden()
    assert name not in [w["name"] for w in guest.evaluate("() => fetch('/worlds').then(r => r.json())")["worlds"]]

    owner.click("#revoke-invite")
    owner.wait_for_function(f"() => window.location.href !== {json.dumps(first_link)}", timeout=10_000)
    assert "invite=" in owner.url and state(owner)["shareUrl"] == owner.url

    late = open_page(first_link + "&name=Late")
    late.wait_for_function("() => window.__worldstream && window.__worldstream.overlay === 'failed'", timeout=20_000)
    assert "private" in late.locator("body").inner_text()
    assert state(guest)["connection"] == "joined"


def test_an_idle_player_is_told_and_rejoins_when_it_wants(open_page, start_server):
    """--idle-timeout: a page that sends no input is disconnected with words saying why, does
    not reconnect by itself, and its Rejoin button brings it back to the same world."""
    own = start_server(extra_args=("--idle-timeout", "3"))
    page = open_page(own.url + "/")
    name = f"idle-{uuid.uuid4().hex[:6]}"
    create_world_from_start_screen(page, name)
    page.wait_for_function("() => window.__worldstream && window.__worldstream.overlay === 'failed'", timeout=30_000)
    text = page.locator("#overlay").inner_text()
    assert "Disconnected while idle" in text and "no input for 3 s" in text, text
    page.wait_for_timeout(1500)
    assert state(page)["overlay"] == "failed", "an idle player must not reconnect by itself"
    page.click("#overlay-action")
    page.wait_for_function("() => window.__worldstream.connectionState === 'joined'", timeout=30_000)
    assert state(page)["world"] == name


def test_a_tab_whose_player_another_tab_resumed_says_so_and_does_not_fight_for_it(open_page, base_url, world):
    """A duplicated tab carries the first tab's resume token and takes its player over; the
    server closes the first tab's connection 1008 "resumed on another connection". That tab
    says so in words and stays put (retrying would take the player back and forth, or
    start a second one); its button joins again, as another player, when the user wants."""
    first = open_page(link(base_url, world, "Twin"))
    first.wait_for_function("() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=30_000)
    key = f"worldstream.resume.{world}"
    token = first.evaluate(f"() => sessionStorage.getItem({json.dumps(key)})")
    assert token, "the first tab keeps its resume token"
    duplicate = first.context.new_page()  # what "Duplicate tab" does: same storage, a copy of sessionStorage
    duplicate.add_init_script(f"sessionStorage.setItem({json.dumps(key)}, {json.dumps(token)})")
    duplicate.goto(link(base_url, world, "Twin"))
    duplicate.wait_for_function("() => window.__worldstream && window.__worldstream.connectionState === 'joined'", timeout=30_000)
    assert state(duplicate)["resumed"], "the duplicate resumed the first tab's player"
    first.wait_for_function("() => window.__worldstream.overlay === 'failed'", timeout=15_000)
    text = first.locator("#overlay").inner_text()
    assert "Playing in another tab" in text and "another tab or window" in text, text
    first.wait_for_timeout(2500)
    assert state(first)["connection"] == "failed" and state(first)["reconnects"] == 0, "the displaced tab must not reconnect by itself"
    assert state(duplicate)["connection"] == "joined" and state(duplicate)["overlay"] == "hidden"
    first.click("#overlay-action")
    first.wait_for_function("() => window.__worldstream.connectionState === 'joined'", timeout=30_000)
    assert not state(first)["resumed"], "it joined as another player, leaving the duplicate its own"
    first.wait_for_timeout(1000)
    assert state(duplicate)["connection"] == "joined"
