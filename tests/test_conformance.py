"""The generator conformance kit (runtime/world/generators/conformance.py) run against the
generators and the depth estimator shipped here."""

from __future__ import annotations

import pytest

from runtime.world.generators.conformance import DepthEstimatorConformance, GeneratorConformance


class TestProcedural(GeneratorConformance):
    @pytest.fixture(scope="class")
    def generator(self):
        from runtime.world.generators.procedural import ProceduralGenerator

        return ProceduralGenerator()


class TestTinyWanVace(GeneratorConformance):
    overlap_agreement = False
    overlap_reason = "random test weights reproduce nothing; real weights keep the routed pixels (VACE mask)"

    @pytest.fixture(scope="class")
    def generator(self, tmp_path_factory):
        from bench.models import save_tiny_depth_model, tiny_vace_pipeline
        from runtime.world.generators.diffusion import VideoDiffusionGenerator

        depth = save_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny")
        return VideoDiffusionGenerator(pipeline=tiny_vace_pipeline(), depth_model=str(depth), width=32, height=32, frames=5, steps=2, guidance=1.0)


class TestTinyDepthAnything(DepthEstimatorConformance):
    @pytest.fixture(scope="class")
    def estimator(self, tmp_path_factory):
        from bench.models import save_tiny_depth_model
        from runtime.world.depth import load_depth_estimator

        return load_depth_estimator(str(save_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny")))
