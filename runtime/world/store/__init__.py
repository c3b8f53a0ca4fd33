"""Worlds on disk: :class:`WorldLibrary` creates, opens (exactly as saved), lists and imports worlds.

See ``docs/storage.md`` for the layout and the crash-safety guarantees.
"""

from .errors import (
    InvalidWorldName,
    StoreWriteError,
    WorldBusy,
    WorldExists,
    WorldFormatError,
    WorldNotFound,
    WorldStoreError,
)
from .library import StoredWorld, WorldInfo, WorldLibrary
from .manifest import FORMAT_VERSION
from .names import WORLD_NAME_RULE, check_world_name, slug_world_name

__all__ = [
    "FORMAT_VERSION",
    "InvalidWorldName",
    "StoreWriteError",
    "StoredWorld",
    "WORLD_NAME_RULE",
    "WorldBusy",
    "WorldExists",
    "WorldFormatError",
    "WorldInfo",
    "WorldLibrary",
    "WorldNotFound",
    "WorldStoreError",
    "check_world_name",
    "slug_world_name",
]
