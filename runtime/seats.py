"""Places for players on this server, all worlds together (``--max-players``)."""

from __future__ import annotations


class Seats:
    """A count of taken places, at most ``limit``.

    A joining connection takes its seat *before* it awaits anything (opening or creating a
    world), so hellos arriving at the same moment cannot all pass a check made before any
    of them is added. The event loop is single-threaded: ``take`` needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        """Take a seat if one is free."""
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken = max(0, self.taken - 1)
