"""Generators, registered by name.

Third parties add one without editing worldstream by declaring an entry point in
the ``worldstream.generators`` group whose value is a factory
``(**options) -> Generator``::

    [project.entry-points."worldstream.generators"]
    my-model = "my_package.generator:MyGenerator"
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from .base import (
    CancelToken,
    DepthEstimator,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Generator,
    GeneratorUnavailable,
    ProgressCallback,
)

ENTRY_POINT_GROUP = "worldstream.generators"


class UnknownGeneratorError(LookupError):
    pass


def parse_option(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` (a ``--generator-option``) -> ``(key, value)``; ValueError otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


BUILT_IN = {
    "procedural": "runtime.world.generators.procedural:ProceduralGenerator",
    "wan-vace": "runtime.world.generators.diffusion:VideoDiffusionGenerator",
}
"""Generators shipped here, also declared as entry points (pyproject.toml); found even when
the package's metadata is not installed (a source checkout on ``PYTHONPATH``)."""


def available_generators() -> list[str]:
    """Names of every registered generator, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(BUILT_IN))


def create_generator(name: str, **options) -> Generator:
    """Build the generator registered as ``name`` with ``options``.

    Raises :class:`UnknownGeneratorError` for a name nobody registered, and whatever the
    factory raises (:class:`GeneratorUnavailable` when its weights are missing).
    """
    if name in BUILT_IN:
        module, _, attr = BUILT_IN[name].partition(":")
        return getattr(import_module(module), attr)(**options)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()(**options)
    raise UnknownGeneratorError(
        f"unknown generator {name!r}; available: {', '.join(available_generators())}"
    )


__all__ = [
    "CancelToken",
    "DepthEstimator",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "GeneratorUnavailable",
    "ProgressCallback",
    "parse_option",
    "available_generators",
    "create_generator",
    "UnknownGeneratorError",
]
