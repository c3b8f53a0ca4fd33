"""WebXR in real Chromium with an emulated Quest 3 in the page (Meta's ``iwer`` from npm,
installed over the browser's own WebXR): Enter VR starts an immersive-vr session, the video
turns stereo, the head pose reaches the server as ``head_pose`` at the headset's frame rate,
moving and turning the emulated head moves the player and changes the picture, the thumbsticks
walk and snap-turn, and leaving VR returns to the page and to mono video.

WebGL here is Chromium's software GL (SwiftShader); no GPU is involved."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_browser import (  # noqa: F401  (fixtures used by name)
    CHROMIUM,
    LAUNCH_ARGS,
    SNAPSHOT_JS,
    base_url,
    difference,
    link,
    pytestmark,
    state,
    sync_playwright,
    wait_frames,
    world,
)

ROOT = Path(__file__).resolve().parents[1]
IWER = ROOT / "clients" / "web" / "node_modules" / "iwer" / "build" / "iwer.min.js"
INSTALL_QUEST = "window.__xrDevice = new IWER.XRDevice(IWER.metaQuest3); window.__xrDevice.installRuntime({ forceInstall: true });"

pytestmark = pytestmark + [pytest.mark.skipif(not IWER.exists(), reason="iwer not installed (cd clients/web && npm ci)")]


@pytest.fixture(scope="module")
def browser():
    """Chromium with software WebGL (the shared fixture disables the GPU process's GL)."""
    with sync_playwright() as p:
        args = [a for a in LAUNCH_ARGS if a != "--disable-gpu"] + ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield chromium
        chromium.close()


def vr(page) -> dict:
    return page.evaluate("() => window.__worldstream.vr")


def me(page) -> dict:
    s = state(page)
    return next(p for p in s["players"] if p["id"] == s["myId"])


def wait_server_pose(page, condition: str, timeout_ms: int = 10_000) -> None:
    """Until this player's pose as the server reports it (``players``) meets ``condition`` (JS on ``p``)."""
    page.wait_for_function(
        f"() => {{ const w = window.__worldstream; const p = w.players.find(p => p.id === w.myId); return p && ({condition}); }}",
        timeout=timeout_ms,
    )


def test_enter_vr_head_pose_locomotion_and_back(browser, base_url, world):
    context = browser.new_context(viewport={"width": 800, "height": 450})
    try:
        context.add_init_script(path=str(IWER))
        context.add_init_script(INSTALL_QUEST)
        page = context.new_page()
        page.on("pageerror", lambda error: print(f"page error: {error}"))
        page.goto(link(base_url, world, "Headset"))
        wait_frames(page, 2, timeout_s=30)
        page.wait_for_function("() => window.__worldstream.vr.buttonShown", timeout=10_000)
        start = me(page)

        # ---- enter: stereo video, head poses at the headset's rate, frames drawn per eye ----
        page.click("#enter-vr")
        page.wait_for_function("() => window.__worldstream.vr.active", timeout=10_000)
        page.wait_for_function(
            "() => { const w = window.__worldstream; return w.viewRequested.stereo && w.connectionState === 'joined' && w.vr.framesDrawn > 5; }",
            timeout=30_000,
        )
        # One head pose per headset frame (display rate; headless Chromium's frames are slow).
        page.wait_for_function(f"() => window.__worldstream.vr.headPosesSent > {vr(page)['headPosesSent'] + 10}", timeout=20_000)
        before = vr(page)
        page.wait_for_timeout(2000)
        after = vr(page)
        frames, poses = after["xrFrames"] - before["xrFrames"], after["headPosesSent"] - before["headPosesSent"]
        assert frames > 10 and poses >= 0.9 * frames, (frames, poses)
        s = state(page)
        assert s["resumed"], "switching to stereo must keep the player's place"
        assert math.dist(me(page)["position"], start["position"]) < 0.2

        # ---- the head moves 0.6 m right and turns: the server follows, the picture changes ----
        before = page.evaluate(SNAPSHOT_JS)
        x0 = me(page)["position"][0]
        page.evaluate("() => { const d = window.__xrDevice; d.position.x += 0.6; }")
        wait_server_pose(page, f"Math.abs(p.position[0] - {x0}) > 0.4")
        page.evaluate("() => { const d = window.__xrDevice; d.quaternion.set(0, Math.sin(-Math.PI / 4), 0, Math.cos(-Math.PI / 4)); }")
        yaw0 = me(page)["yaw"]
        wait_server_pose(page, f"Math.abs(Math.atan2(Math.sin(p.yaw - {yaw0}), Math.cos(p.yaw - {yaw0}))) > 1.2")
        page.wait_for_timeout(800)
        assert difference(before, page.evaluate(SNAPSHOT_JS)) > 3.0, "turning the head should change the picture"

        # ---- left thumbstick forward walks ~1.5 m/s where the head looks; right stick snaps 30 degrees ----
        p0 = me(page)["position"]
        page.evaluate("() => window.__xrDevice.controllers.left.updateAxes('thumbstick', 0, -1)")
        page.wait_for_timeout(1000)
        assert vr(page)["vignette"] > 0.5, "the comfort vignette darkens the edges while the stick moves you"
        page.evaluate("() => window.__xrDevice.controllers.left.updateAxes('thumbstick', 0, 0)")
        page.wait_for_function("() => window.__worldstream.vr.vignette === 0", timeout=5_000)
        page.wait_for_timeout(400)
        walked = math.dist([p0[0], p0[2]], [me(page)["position"][0], me(page)["position"][2]])
        assert 0.5 < walked < 3.0, walked
        yaw1 = me(page)["yaw"]
        page.evaluate("() => window.__xrDevice.controllers.right.updateAxes('thumbstick', 1, 0)")
        page.wait_for_timeout(500)
        page.evaluate("() => window.__xrDevice.controllers.right.updateAxes('thumbstick', 0, 0)")
        page.wait_for_timeout(400)
        turned = math.atan2(math.sin(me(page)["yaw"] - yaw1), math.cos(me(page)["yaw"] - yaw1))
        assert turned == pytest.approx(math.pi / 6, abs=0.05), "one snap of 30 degrees to the right"

        # ---- leave VR (the headset's system button ends the session): back to the page, mono video ----
        page.evaluate("() => window.__xrDevice.activeSession.end()")
        page.wait_for_function("() => !window.__worldstream.vr.active", timeout=10_000)
        page.wait_for_function(
            "() => { const w = window.__worldstream; return !w.viewRequested.stereo && w.connectionState === 'joined'; }", timeout=30_000
        )
        frames = state(page)["frames"]
        wait_frames(page, frames + 3, timeout_s=20)
        assert page.locator("#hud").is_visible()
    finally:
        context.close()
