"""The one exception a message that breaks the protocol raises, wherever it is checked."""

from __future__ import annotations


class ProtocolError(Exception):
    """A message broke the protocol.

    Attributes:
        code: one of :data:`protocol.messages.ERROR_CODES`.
        message: human-readable explanation naming the limit.
        field: dotted path of the offending field, or None.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field!r})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
