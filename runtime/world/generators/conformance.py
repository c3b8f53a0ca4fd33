"""A generator conformance kit: one pytest module a generator package runs against itself.

Subclass the kit in your tests and give it your generator (or depth estimator) as a
fixture; every check below then runs against it::

    # your_package/tests/test_conformance.py
    import pytest
    from runtime.world.generators.conformance import GeneratorConformance

    class TestMyModel(GeneratorConformance):
        @pytest.fixture(scope="class")
        def generator(self):
            return MyModel(weights="tests/tiny")

What a generator must do (``docs/generators.md``): frames of the request's size (for the
request's cameras, or for cameras it names, of the same size); depth, when it gives depth,
in metres along +z with ``inf`` for sky and no NaN; the same pixels for the same (seed,
caption, cameras, memory); progress fractions in [0, 1] that never go back; cancellation
honoured before it starts and between units of work; and, where two views overlap and the
second is given the first as memory, the same content in the overlap.

Class attributes tune the kit to a generator: ``width``/``height`` (the request size),
``overlap_agreement`` (set False, with ``overlap_reason``, for generators whose weights
cannot agree, e.g. random test weights), ``overlap_tolerance`` (mean absolute difference,
0-255, allowed in the overlap) and ``cancel_after_progress`` (False for a generator that
makes no progress calls it could be cancelled between).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ..camera import Cameras, Pose
from ..keyframes.frames import Frame
from .base import CancelToken, GenerationCancelled, GenerationRequest, GenerationResult


def _cameras(yaws_deg, width: int, height: int, fov_y_deg: float = 60.0) -> Cameras:
    return Cameras.concat([Pose(np.zeros(3, np.float32), math.radians(y), 0.0).camera(width, height, math.radians(fov_y_deg)) for y in yaws_deg])


class GeneratorConformance:
    """The checks every :class:`.base.Generator` must pass. Provide a ``generator`` fixture."""

    width = 48
    height = 32
    caption = "a meadow with a few trees"
    seed = 7
    overlap_agreement = True
    overlap_reason = ""
    overlap_tolerance = 12.0
    cancel_after_progress = True

    @pytest.fixture(scope="class")
    def generator(self):  # pragma: no cover - subclasses provide it
        raise NotImplementedError("give the kit your generator: a class-scoped `generator` fixture")

    def request(self, yaws_deg=(0.0,), memory: tuple = ()) -> GenerationRequest:
        return GenerationRequest(_cameras(yaws_deg, self.width, self.height), self.caption, tuple(memory), self.seed)

    def run(self, generator, request: GenerationRequest, progress=None, cancel: CancelToken | None = None) -> GenerationResult:
        return generator.generate(request, progress or (lambda f, m: None), cancel or CancelToken())

    @pytest.fixture(scope="class")
    def two_views(self, generator) -> tuple[GenerationRequest, GenerationResult]:
        request = self.request((0.0, 90.0))
        return request, self.run(generator, request)

    # ---------------------------------------------------------------- shapes and depth
    def test_has_a_name(self, generator):
        assert isinstance(generator.name, str) and generator.name

    def test_frames_have_the_request_size(self, two_views):
        request, result = two_views
        cams = result.cameras if result.cameras is not None else request.cameras
        assert (cams.width, cams.height) == (self.width, self.height)
        assert result.rgb.shape == (len(cams), self.height, self.width, 3) and result.rgb.dtype == np.uint8
        if result.cameras is None:
            assert len(cams) == len(request.cameras)

    def test_depth_contract(self, two_views):
        request, result = two_views
        if result.depth is None:
            pytest.skip(f"{type(self).__name__}: RGB only (the world's depth estimator gives depth)")
        depth = np.asarray(result.depth)
        assert depth.shape == result.rgb.shape[:3] and depth.dtype == np.float32
        assert not np.isnan(depth).any(), "NaN depth: use inf for sky"
        finite = depth[np.isfinite(depth)]
        assert (finite > 0).all(), "depth must be positive metres along +z (inf for sky)"
        assert not np.isneginf(depth).any()

    # ---------------------------------------------------------------- determinism
    def test_same_request_same_pixels(self, generator, two_views):
        request, first = two_views
        again = self.run(generator, request)
        np.testing.assert_array_equal(again.rgb, first.rgb)
        if first.depth is not None:
            np.testing.assert_array_equal(again.depth, first.depth)

    # ---------------------------------------------------------------- progress and cancel
    def test_progress_is_reported_in_order(self, generator):
        seen: list[float] = []
        self.run(generator, self.request(), progress=lambda f, m: seen.append(float(f)))
        assert seen, "generate() never called progress()"
        assert all(0.0 <= f <= 1.0 for f in seen) and seen == sorted(seen), seen

    def test_cancelled_before_start(self, generator):
        token = CancelToken()
        token.cancel()
        with pytest.raises(GenerationCancelled):
            self.run(generator, self.request(), cancel=token)

    def test_cancelled_while_running(self, generator):
        if not self.cancel_after_progress:
            pytest.skip("this generator makes no progress calls to be cancelled between")
        token = CancelToken()
        calls = []

        def progress(fraction, message):
            calls.append(fraction)
            if len(calls) == 2:  # after the first unit of work
                token.cancel()

        with pytest.raises(GenerationCancelled):
            self.run(generator, self.request((0.0, 90.0)), progress=progress, cancel=token)

    # ---------------------------------------------------------------- agreement
    def test_views_agree_where_they_overlap(self, generator):
        """A view turned 20 degrees from a first one, given the first as memory (as the world
        does), shows what the first showed where they overlap."""
        if not self.overlap_agreement:
            pytest.skip(self.overlap_reason or "overlap agreement not claimed")
        first_request = self.request((0.0,))
        first = self.run(generator, first_request)
        if first.depth is None:
            pytest.skip("RGB only: agreement is checked on the world's reconstruction instead")
        cams = first.cameras if first.cameras is not None else first_request.cameras
        memory = tuple(Frame(i, first.rgb[i], first.depth[i], cams.w2c[i], cams.K[i]) for i in range(len(cams)))
        second_request = self.request((20.0,), memory)
        second = self.run(generator, second_request)
        second_cams = second.cameras if second.cameras is not None else second_request.cameras
        from .diffusion.routing import forward_warp  # the world's own warp: what "overlap" means

        warped, _, hit = forward_warp(memory, second_cams[-1:])
        overlap = hit[0]
        assert overlap.mean() > 0.3, "the test views should overlap"
        diff = np.abs(warped[0].astype(np.int16) - second.rgb[-1].astype(np.int16))[overlap]
        assert float(diff.mean()) <= self.overlap_tolerance, float(diff.mean())


class DepthEstimatorConformance:
    """The checks every :class:`.base.DepthEstimator` must pass. Provide an ``estimator`` fixture."""

    width = 64
    height = 40

    @pytest.fixture(scope="class")
    def estimator(self):  # pragma: no cover - subclasses provide it
        raise NotImplementedError("give the kit your estimator: a class-scoped `estimator` fixture")

    def frames(self, n: int = 2) -> np.ndarray:
        v, u = np.mgrid[0 : self.height, 0 : self.width]
        base = np.stack([u * 255 // self.width, v * 255 // self.height, (u + v) % 256], -1)
        return np.stack([np.roll(base, 7 * i, axis=1) for i in range(n)]).astype(np.uint8)

    def test_depth_per_pixel_in_metres(self, estimator):
        rgb = self.frames()
        cams = _cameras((0.0, 30.0), self.width, self.height)
        depth = np.asarray(estimator.estimate(rgb, cams, ()))
        assert depth.shape == rgb.shape[:3] and depth.dtype == np.float32
        assert not np.isnan(depth).any()
        finite = depth[np.isfinite(depth)]
        assert (finite > 0).all()

    def test_deterministic(self, estimator):
        rgb = self.frames()
        cams = _cameras((0.0, 30.0), self.width, self.height)
        np.testing.assert_array_equal(estimator.estimate(rgb, cams, ()), estimator.estimate(rgb, cams, ()))

    def test_frames_are_independent(self, estimator):
        """A frame's depth does not depend on which other frames share its batch."""
        rgb = self.frames(3)
        cams = _cameras((0.0, 30.0, 60.0), self.width, self.height)
        together = estimator.estimate(rgb, cams, ())
        alone = estimator.estimate(rgb[1:2], cams[1:2], ())
        np.testing.assert_allclose(together[1], alone[0], rtol=1e-4, atol=1e-4)
