"""World names: safe directory names only, so a name can never reach outside the library root."""

from __future__ import annotations

import re

from .errors import InvalidWorldName

WORLD_NAME_RULE = "[a-z0-9][a-z0-9_-]{0,63}"
"""1-64 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit."""

_WORLD_NAME = re.compile(WORLD_NAME_RULE)


def check_world_name(name: object) -> str:
    """Return ``name`` if it matches :data:`WORLD_NAME_RULE`, else raise :class:`InvalidWorldName`."""
    if not isinstance(name, str) or not _WORLD_NAME.fullmatch(name):
        raise InvalidWorldName(
            f"invalid world name {name!r}: names must match {WORLD_NAME_RULE} "
            "(1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit)"
        )
    return name


def is_world_name(name: object) -> bool:
    return isinstance(name, str) and _WORLD_NAME.fullmatch(name) is not None


def slug_world_name(text: str) -> str:
    """A valid world name made from free text (e.g. an output file's stem): 'My Walk.mp4' -> 'my-walk-mp4'."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64]
    return slug or "world"
