"""Shared GPU timing for the benches: raw ``gsplat.rasterization`` vs the runtime's ``submit_video``.

Both are timed on the same renderer's GPU copy of the scene and the same cameras, so
the ratio shows only what the runtime adds (culling, camera upload, sky, composite +
I420, copy to pinned host memory). ``submit_video`` is driven as a pipelined caller
would: batch k+1 is queued before batch k is waited for.
"""

from __future__ import annotations

import time

from runtime.world.render.conventions import EPS2D, NEAR_PLANE


def timed(fn, seconds: float, torch) -> tuple[int, float]:
    """Call ``fn`` until ``seconds`` have passed (after 2 warm-up calls); (calls, seconds), synchronised."""
    fn(), fn()
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    torch.cuda.synchronize()
    return calls, time.perf_counter() - t0


def raw_rasterize(renderer, snapshot, cameras, torch):
    """A no-argument function: one raw ``gsplat.rasterization(render_mode="RGB")`` call on
    the chunks the runtime would draw (already on the GPU), nothing else."""
    g = renderer._visible(snapshot, cameras)
    viewmats, Ks = renderer._camera_tensors(cameras)

    def raw():
        with torch.no_grad():
            renderer._gsplat.rasterization(
                g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, Ks, cameras.width, cameras.height,
                near_plane=NEAR_PLANE, eps2d=EPS2D, packed=renderer.packed, render_mode="RGB", rasterize_mode="classic",
            )

    return raw


class PipelinedVideo:
    """Calling it queues one ``submit_video`` batch and waits for the one before; ``drain()`` waits for the rest."""

    def __init__(self, renderer, snapshot, cameras, sky) -> None:
        self._args = (snapshot, cameras, sky)
        self._renderer = renderer
        self._in_flight: list = []

    def __call__(self) -> None:
        self._in_flight.append(self._renderer.submit_video(*self._args))
        if len(self._in_flight) > 1:
            self._in_flight.pop(0).wait()

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.pop(0).wait()


def raw_vs_runtime(renderer, snapshot, cameras, sky, seconds: float, torch) -> dict:
    """Views/s and ms/call of both, and their ratio (runtime / raw)."""
    n = len(cameras)
    row = {}
    video = PipelinedVideo(renderer, snapshot, cameras, sky)
    for name, fn in (("raw", raw_rasterize(renderer, snapshot, cameras, torch)), ("runtime", video)):
        calls, dt = timed(fn, seconds, torch)
        row[f"{name}_views_per_s"] = calls * n / dt
        row[f"{name}_ms_per_call"] = dt / calls * 1e3
    video.drain()
    row["ratio"] = row["runtime_views_per_s"] / row["raw_views_per_s"]
    return row
