"""What runs inside one Ray actor: a generator from the registry, loaded once.

:class:`GeneratorActor` is a plain class; :mod:`.pool` makes it a Ray actor (so importing
this module needs no Ray). Its ``generate`` runs one job at a time; ``cancel``, ``progress``
and ``current`` run in a separate control concurrency group, so a cancel reaches a job while
it runs (the generator polls the job's :class:`CancelToken` as it does in-process) and the
server can ask how far a job is.
"""

from __future__ import annotations

import os
import threading

from runtime.world.generators import CancelToken, GenerationRequest, GenerationResult, create_generator
from runtime.world.sky import Sky


class GeneratorActor:
    """One generator, built by ``create_generator(name, **options)`` when the actor starts.

    Args:
        name: a registered generator (``worldstream.generators`` entry point or ``procedural``).
        options: its keyword options.
    """

    def __init__(self, name: str, options: dict) -> None:
        self.generator = create_generator(name, **options)
        warmup = getattr(self.generator, "warmup", None)
        if callable(warmup):  # compile / load before the first job, not during it
            warmup()
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}  # job key -> token, for jobs running here
        self._progress: dict[str, tuple[float, str]] = {}  # job key -> the generator's latest report

    def generate(self, key: str, request: GenerationRequest) -> GenerationResult:
        """Generate ``request`` as job ``key``; raises GenerationCancelled if :meth:`cancel` ed."""
        token = CancelToken()
        with self._lock:
            self._tokens[key] = token

        def progress(fraction: float, message: str = "") -> None:
            self._progress[key] = (float(fraction), str(message))

        try:
            result = self.generator.generate(request, progress, token)
            token.raise_if_cancelled()
            return result
        finally:
            with self._lock:
                self._tokens.pop(key, None)
                self._progress.pop(key, None)

    def cancel(self, key: str) -> bool:
        """Set job ``key`` 's cancel flag; False if it is not running here."""
        with self._lock:
            token = self._tokens.get(key)
        if token is not None:
            token.cancel()
        return token is not None

    def progress(self, key: str) -> tuple[float, str] | None:
        """Job ``key`` 's latest ``(fraction, message)``, or None (not started, or done)."""
        return self._progress.get(key)

    def current(self) -> tuple[int, list[str]]:
        """(process id, keys of the jobs running now): for tests and health checks."""
        with self._lock:
            return os.getpid(), list(self._tokens)

    def attribute(self, name: str, default=None):
        """One of the generator's plain attributes (e.g. ``makes_depth``), for the server's checks."""
        return getattr(self.generator, name, default)

    def sky(self, caption: str, seed: int, start_image) -> Sky:
        """The generator's sky for a new world (a plain :class:`Sky` if it has none)."""
        sky_fn = getattr(self.generator, "sky", None)
        return sky_fn(caption, seed, start_image) if callable(sky_fn) else Sky()

