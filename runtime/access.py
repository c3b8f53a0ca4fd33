"""Who may join a world: public or private, its invite, and its creator's key.

A private world is left out of ``/worlds`` and admits a hello only with its current
invite (carried in the share link), its creator's owner key, or a resume token of a
player who was in it. The creator revokes an invite by drawing a new one: links with the
old one stop working, players already in the world stay.

Invites and owner keys come from :func:`secrets.token_urlsafe` (192 bits) and are compared
with :func:`hmac.compare_digest`, so neither guessing nor timing finds them. Only the owner
key's SHA-256 is stored: a copy of the worlds folder does not give away ownership. Each
world's record is ``access.json`` in its folder, written durably; a world without one
(made before, or by the CLI) is public and has no creator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import asdict, dataclass

from runtime.world.store import WorldLibrary
from runtime.world.store.durable import write_durably

ACCESS_FILE = "access.json"
KEY_BYTES = 24  # 32 URL-safe characters


def new_key() -> str:
    """A fresh invite or owner key."""
    return secrets.token_urlsafe(KEY_BYTES)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two keys; a missing one never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class WorldAccess:
    """One world's access record.

    Attributes:
        visibility: ``"public"`` or ``"private"``.
        invite: a private world's current invite (None for public worlds).
        owner_sha256: SHA-256 (hex) of the creator's owner key, None when nobody owns it.
    """

    visibility: str = "public"
    invite: str | None = None
    owner_sha256: str | None = None

    @property
    def private(self) -> bool:
        return self.visibility == "private"

    @classmethod
    def create(cls, visibility: str) -> tuple["WorldAccess", str]:
        """A new world's record and its owner key (given to the creator, never stored)."""
        owner_key = new_key()
        access = cls(visibility, new_key() if visibility == "private" else None, _digest(owner_key))
        return access, owner_key

    def is_owner(self, owner_key: str | None) -> bool:
        return owner_key is not None and _same(_digest(owner_key), self.owner_sha256)

    def admits(self, invite: str | None, owner_key: str | None) -> bool:
        """May a hello with this invite and owner key join?"""
        return not self.private or _same(invite, self.invite) or self.is_owner(owner_key)

    def shown_invite(self, invite: str | None, owner: bool) -> str | None:
        """The invite a player is told: the current one if it is the creator, else the one it
        came with if that is still current (a guest let in by its resume token learns none)."""
        if not self.private:
            return None
        return self.invite if owner or _same(invite, self.invite) else None

    def revoke(self) -> str:
        """Draw a new invite (the old one stops working); returns it."""
        self.invite = new_key()
        return self.invite

    @classmethod
    def from_json(cls, text: str) -> "WorldAccess":
        d = json.loads(text)
        visibility = d.get("visibility") if d.get("visibility") in ("public", "private") else "private"  # unreadable: keep it closed
        return cls(visibility, d.get("invite") or None, d.get("owner_sha256") or None)


class AccessBook:
    """The access records of a library's worlds (read once, cached; thread-safe).

    Args:
        library: the worlds folder.
    """

    def __init__(self, library: WorldLibrary) -> None:
        self.library = library
        self._cache: dict[str, WorldAccess] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> WorldAccess:
        """``name``'s record (public with no creator when it has none). A record that exists
        but cannot be read counts as private: a broken file must not open a world to all."""
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.library.path(name) / ACCESS_FILE
        try:
            access = WorldAccess.from_json(path.read_text())
        except FileNotFoundError:
            access = WorldAccess()
        except (OSError, ValueError, AttributeError):
            access = WorldAccess("private")
        with self._lock:
            return self._cache.setdefault(name, access)

    def put(self, name: str, access: WorldAccess) -> None:
        """Save ``name``'s record durably (the world's folder must exist)."""
        write_durably(self.library.path(name) / ACCESS_FILE, json.dumps(asdict(access)).encode())
        with self._lock:
            self._cache[name] = access

    def is_private(self, name: str) -> bool:
        return self.get(name).private
