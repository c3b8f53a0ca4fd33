"""Errors raised when a splat or image file cannot be read or written."""

from __future__ import annotations

from pathlib import Path


class SplatFormatError(ValueError):
    """A file is not a valid splat file (PLY, .splat, .spz) or image; names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
