"""The web client's settings and help in real Chromium (Playwright, the harness of
tests/test_browser.py): the `?` help lists the controls; mouse sensitivity and invert change
the look sent to the server; quality changes the video size asked for and keeps the place;
render mode and settings survive a reload; fullscreen goes on and off."""

from __future__ import annotations

import math

import pytest

from tests.test_browser import (  # noqa: F401  (fixtures used by name)
    base_url,
    browser,
    drag_look,
    link,
    open_page,
    pytestmark,
    state,
    wait_frames,
    world,
)

MOUSE_RADIANS_PER_PIXEL = 0.0024  # clients/web/src/input/keyboard_mouse.ts


def hooks(page, name: str):
    return page.evaluate(f"() => window.__worldstream.{name}")


def look_after_drag(page, dx: int, dy: int) -> tuple[float, float]:
    before = hooks(page, "lookSent")
    drag_look(page, dx, dy)
    page.wait_for_timeout(300)  # the sender sends at most every few ms; let the last delta out
    after = hooks(page, "lookSent")
    return after["yaw"] - before["yaw"], after["pitch"] - before["pitch"]


def test_help_lists_the_controls(open_page, base_url, world):
    page = open_page(link(base_url, world, "Helpee"))
    wait_frames(page, 2)
    assert not page.locator("#help").is_visible()
    page.keyboard.press("?")
    assert page.locator("#help").is_visible() and hooks(page, "helpOpen")
    text = page.locator("#help").inner_text()
    for control in ("W A S D", "Shift", "Space / C", "settings", "this help"):
        assert control in text, control
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()


def test_settings_change_look_quality_and_survive_a_reload(open_page, base_url, world):
    page = open_page(link(base_url, world, "Tweaker"), width=800, height=450)
    wait_frames(page, 2)
    assert hooks(page, "settings") == {"sensitivity": 1, "invertY": False, "renderMode": "auto", "quality": "high", "vrTurn": "snap", "vrVignette": True}

    yaw, pitch = look_after_drag(page, 100, 0)
    assert yaw == pytest.approx(100 * MOUSE_RADIANS_PER_PIXEL, rel=0.05) and abs(pitch) < 1e-6

    page.keyboard.press("o")
    assert page.locator("#settings").is_visible()
    page.fill("#settings-sensitivity", "2")
    page.check("#settings-invert")
    # This browser has WebGL2, so local rendering is offered; on software GL "auto" means the video.
    assert page.locator("#settings-render-mode option[value=local]").is_enabled()
    assert hooks(page, "local")["mode"] == "video"
    page.select_option("#settings-render-mode", "video")
    page.keyboard.press("Escape")
    assert not page.locator("#settings").is_visible()
    assert hooks(page, "settings") == {"sensitivity": 2, "invertY": True, "renderMode": "video", "quality": "high", "vrTurn": "snap", "vrVignette": True}

    yaw, pitch = look_after_drag(page, 100, 50)  # mouse down and right
    assert yaw == pytest.approx(2 * 100 * MOUSE_RADIANS_PER_PIXEL, rel=0.05)
    assert pitch == pytest.approx(2 * 50 * MOUSE_RADIANS_PER_PIXEL, rel=0.05)  # inverted: down looks up

    # Quality: a new hello asks for half the pixels; the place is kept (resume token).
    assert hooks(page, "viewRequested") == {"width": 800, "height": 450, "stereo": False, "fovY": pytest.approx(math.radians(60))}
    position = state(page)["pose"]["position"]
    reconnects = state(page)["reconnects"]
    page.click("#settings-button")
    page.select_option("#settings-quality", "low")
    page.wait_for_function(f"() => window.__worldstream.reconnects > {reconnects} && window.__worldstream.connectionState === 'joined'", timeout=30_000)
    assert hooks(page, "viewRequested") == {"width": 400, "height": 225, "stereo": False, "fovY": pytest.approx(math.radians(60))}
    assert state(page)["resumed"]
    assert max(abs(a - b) for a, b in zip(position, state(page)["pose"]["position"])) < 0.05

    # Fullscreen from the panel (a click is the user gesture it needs).
    page.click("#settings-fullscreen")
    page.wait_for_function("() => document.fullscreenElement !== null", timeout=5_000)
    page.click("#settings-fullscreen")
    page.wait_for_function("() => document.fullscreenElement === null", timeout=5_000)

    page.reload()
    wait_frames(page, 1, timeout_s=30)
    assert hooks(page, "settings") == {"sensitivity": 2, "invertY": True, "renderMode": "video", "quality": "low", "vrTurn": "snap", "vrVignette": True}
    assert page.locator("#settings-sensitivity").input_value() == "2"
