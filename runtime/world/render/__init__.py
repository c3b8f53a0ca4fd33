"""Renderers: one interface (:class:`~runtime.world.render.base.Renderer`), a CPU and a gsplat implementation."""
