"""The one exception a message that breaks the protocol raises, wherever it is checked."""

from __future__ import annotations


class ProtocolError(Exception):
    """A message broke the protocol.

    Attributes:
        code: one of :data:`protocol.messages.ERROR_CODES`.
        message: human-readable explanation naming the limit.
        field: dotted path of the offending field, or None.
        ref_type: the offending message's ``type`` (at most 64 characters) when it got that
            far, so an error reply can name it without unpacking the message again.
    """

    def __init__(self, code: str, message: str, field: str | None = None, ref_type: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field!r})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.ref_type = ref_type


class VersionMismatch(ProtocolError):
    """A ``hello`` of another protocol version (``.version``) than the one this side speaks
    (``supported``); its other fields are not checked, since a newer client may send a
    format this side does not speak."""

    def __init__(self, version: int, supported: int) -> None:
        text = f"protocol version {version} is not supported; this side speaks version {supported}"
        super().__init__("version_mismatch", text, "protocol_version", "hello")
        self.version = version
