"""The worldstream wire protocol: messages (defined once), msgpack codec, TypeScript types.

See ``protocol/PROTOCOL.md`` for the specification.
"""

from . import messages
from .codec import decode, encode, from_dict, to_dict
from .errors import ProtocolError, VersionMismatch
from .messages import MESSAGES, PROTOCOL_VERSION, Message

__all__ = ["MESSAGES", "PROTOCOL_VERSION", "Message", "ProtocolError", "VersionMismatch", "decode", "encode", "from_dict", "messages", "to_dict"]
