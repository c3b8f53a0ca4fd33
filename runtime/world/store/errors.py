"""Typed errors of the world store; each message names the world (and file) and what is wrong."""

from __future__ import annotations


class WorldStoreError(Exception):
    """Base class of every store error (the CLI prints these without a traceback)."""


class InvalidWorldName(WorldStoreError, ValueError):
    """A world name that is not safe to use as a directory name."""


class WorldNotFound(WorldStoreError, LookupError):
    """No world of that name in the library."""


class WorldExists(WorldStoreError):
    """A world of that name already exists (create refuses to overwrite it)."""


class WorldBusy(WorldStoreError):
    """Another process (or another open in this one) has the world open for writing."""


class WorldFormatError(WorldStoreError):
    """A manifest or data file that cannot be read: newer format, bad JSON, missing or corrupt file."""


class StoreWriteError(WorldStoreError, OSError):
    """Saving a world failed (disk full, permissions); raised by flush/close."""
