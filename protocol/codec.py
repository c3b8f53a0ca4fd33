"""msgpack framing for :mod:`protocol.messages`, with strict validation.

Sans-I/O: bytes in, message objects out (and back). Every message is one msgpack map
carrying a ``"type"`` string plus the message's fields, sent as one binary WebSocket
frame. :func:`decode` checks every field against its annotation and :func:`~protocol.messages.spec`
limits and raises :class:`ProtocolError` naming the field and the limit. Unknown fields
are ignored so that newer peers can add optional fields without breaking older ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from functools import lru_cache
from typing import Any, Literal, Union

import msgpack

from . import messages as m
from .bounds import BoundsExceeded, check_bounds
from .errors import ProtocolError, VersionMismatch

Message = m.Message


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    kind: Any
    meta: dict
    required: bool
    default: Any  # a value, or a zero-argument factory when ``factory`` is True
    factory: bool


@lru_cache(maxsize=None)
def fields_of(cls: type) -> tuple[_Field, ...]:
    """The wire fields of a message or struct class, with resolved annotations."""
    hints = typing.get_type_hints(cls, globalns=vars(m))
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        factory = f.default_factory is not dataclasses.MISSING
        default = f.default_factory if factory else f.default
        out.append(_Field(f.name, hints[f.name], dict(f.metadata), required, default, factory))
    return tuple(out)


@lru_cache(maxsize=None)
def _pattern(p: str) -> re.Pattern:
    return re.compile(p)


# ---------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------


_PLAIN_TYPES = frozenset({str, int, float, bool, bytes, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass -> its field names


def _to_wire(value: Any) -> Any:
    # The server encodes a frame_info per player per frame: look types up instead of
    # reflecting on every value (dataclasses.fields / is_dataclass were ~10% of the event
    # loop with 32 players).
    cls = type(value)
    if cls in _PLAIN_TYPES:
        return value
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    if names is not None:
        return {name: _to_wire(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _to_wire(value.tolist())
    return value


def to_dict(msg: Message) -> dict:
    """The wire map of ``msg``: ``{"type": ..., field: value, ...}`` (plain Python values)."""
    body = _to_wire(msg)
    return {"type": msg.TYPE, **body}


def encode(msg: Message) -> bytes:
    """Encode one message as msgpack bytes (no validation: the server trusts itself)."""
    return msgpack.packb(to_dict(msg), use_bin_type=True)


# ---------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------

_unpack_limits = dict(
    max_str_len=m.MAX_HELLO_BYTES,
    max_bin_len=m.MAX_HELLO_BYTES,
    max_array_len=m.MAX_EXPLORED_CELLS * 3,
    max_map_len=256,
    max_ext_len=0,
)


def decode(data: bytes, *, sender: str | None = None) -> Message:
    """Decode and validate one message.

    Args:
        data: the bytes of one binary WebSocket frame.
        sender: ``"client"`` to accept only messages a client may send (the server's view:
            the message's cost is bounded before it is unpacked, see :func:`check_client_cost`),
            ``"server"`` for messages a server may send; None accepts any type.

    Raises:
        ProtocolError: with ``code`` ``too_large``, ``bad_message``, ``unknown_type``,
            ``missing_field``, ``bad_field`` or ``version_mismatch`` (:class:`VersionMismatch`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_message", "messages are msgpack in binary frames, got a text frame")
    if len(data) > m.MAX_HELLO_BYTES:
        raise ProtocolError("too_large", f"message is {len(data)} bytes, the limit is {m.MAX_HELLO_BYTES}")
    if sender == "client":
        check_client_cost(data)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **_unpack_limits)
    except Exception as exc:  # msgpack raises several types for corrupt input
        raise ProtocolError("bad_message", f"not valid msgpack ({type(exc).__name__}: {exc})".replace(": )", ")")) from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", f"a message must be a msgpack map, got {type(obj).__name__}")
    type_ = obj.get("type")
    if not isinstance(type_, str):
        raise ProtocolError("missing_field", "a message needs a string 'type'", "type")
    ref_type = type_[:64]
    cls = m.MESSAGES.get(type_)
    allowed = cls is not None and (sender is None or cls.SENDER in (sender, "both"))
    if not allowed:
        expected = m.CLIENT_MESSAGES if sender == "client" else m.SERVER_MESSAGES if sender == "server" else tuple(m.MESSAGES)
        raise ProtocolError("unknown_type", f"unknown message type {ref_type!r}; expected one of {', '.join(expected)}", "type", ref_type)
    if type_ != "hello" and len(data) > m.MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"{type_!r} is {len(data)} bytes, the limit is {m.MAX_MESSAGE_BYTES}", None, ref_type)
    if type_ == "hello":
        version = obj.get("protocol_version")
        if isinstance(version, int) and not isinstance(version, bool) and version != m.PROTOCOL_VERSION:
            raise VersionMismatch(version, m.PROTOCOL_VERSION)
    try:
        msg = _build(cls, obj, "")
        msg.check()
    except ProtocolError as exc:
        exc.ref_type = ref_type
        raise
    return msg


def check_client_cost(data: bytes) -> None:
    """Refuse (``too_large``) a client message that would be dear to unpack: more than
    :data:`~protocol.messages.MAX_CLIENT_VALUES` values or containers nested deeper than
    :data:`~protocol.messages.MAX_CLIENT_DEPTH`. Found by walking the msgpack headers
    (:func:`protocol.bounds.check_bounds`); a message shorter than the value budget in bytes
    cannot exceed it (every value takes a byte) and is not walked.
    """
    if len(data) <= m.MAX_CLIENT_VALUES:
        return
    try:
        check_bounds(data, m.MAX_CLIENT_VALUES, m.MAX_CLIENT_DEPTH)
    except BoundsExceeded as exc:
        what = f"{m.MAX_CLIENT_VALUES} values" if exc.limit == "values" else f"containers {m.MAX_CLIENT_DEPTH} deep"
        raise ProtocolError("too_large", f"a message may hold at most {what}; this one holds {exc}") from None
    except ValueError as exc:
        raise ProtocolError("bad_message", f"not valid msgpack ({exc})") from None


def from_dict(obj: dict, *, sender: str | None = None) -> Message:
    """Validate an already-unpacked wire map (see :func:`decode`)."""
    return decode(msgpack.packb(obj, use_bin_type=True), sender=sender)


def _build(cls: type, obj: dict, prefix: str):
    kwargs = {}
    for f in fields_of(cls):
        path = prefix + f.name
        # nil means "use the default" for every field that has one (PROTOCOL.md §1).
        if f.name not in obj or (obj[f.name] is None and not f.required):
            if f.required:
                owner = repr(cls.TYPE) if hasattr(cls, "TYPE") else cls.__name__
                raise ProtocolError("missing_field", f"{owner} needs {f.name!r}", path)
            continue  # the dataclass default applies
        kwargs[f.name] = _value(f.kind, obj[f.name], f.meta, path)
    return cls(**kwargs)


def _origin(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    return Union if origin is types.UnionType else origin


_SCALAR_KINDS = frozenset({bool, int, float, str, bytes})


def _value(kind: Any, value: Any, meta: dict, path: str) -> Any:
    if kind in _SCALAR_KINDS:  # most fields: no typing introspection (inputs arrive at 30 Hz per player)
        return _scalar(kind, value, meta, path)
    origin = _origin(kind)
    if origin is Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _value(args[0], value, meta, path)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ProtocolError("bad_field", f"must be one of {', '.join(map(repr, choices))}", path)
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list) or len(value) != len(args):
            raise ProtocolError("bad_field", f"must be an array of {len(args)} numbers", path)
        return tuple(_value(a, v, meta, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ProtocolError("bad_field", f"must be an array, got {_wire_name(value)}", path)
        _check_len(len(value), meta, path, "items")
        item_meta = {k: v for k, v in meta.items() if k != "max_len"}
        return [_value(item, v, item_meta, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ProtocolError("bad_field", f"must be a map, got {_wire_name(value)}", path)
        return _build(kind, value, path + ".")
    raise TypeError(f"protocol: unsupported field type {kind!r} at {path}")  # a bug in messages.py


def _scalar(kind: type, value: Any, meta: dict, path: str) -> Any:
    """Check one bool / int / float / str / bytes field against its type and limits."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError("bad_field", f"must be a boolean, got {_wire_name(value)}", path)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("bad_field", f"must be an integer, got {_wire_name(value)}", path)
        _check_range(value, meta, path)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError("bad_field", f"must be a number, got {_wire_name(value)}", path)
        value = float(value)
        if not math.isfinite(value):
            raise ProtocolError("bad_field", f"must be finite, got {value}", path)
        _check_range(value, meta, path)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ProtocolError("bad_field", f"must be a string, got {_wire_name(value)}", path)
        _check_len(len(value), meta, path, "characters")
        if meta.get("pattern") and not _pattern(meta["pattern"]).fullmatch(value):
            raise ProtocolError("bad_field", f"must match {meta['pattern']}, got {value[:80]!r}", path)
        return value
    if kind is bytes:
        if not isinstance(value, bytes):
            raise ProtocolError("bad_field", f"must be binary (msgpack bin), got {_wire_name(value)}", path)
        _check_len(len(value), meta, path, "bytes")
        return value
    raise TypeError(f"protocol: unsupported field type {kind!r} at {path}")  # a bug in messages.py


def _check_len(length: int, meta: dict, path: str, unit: str) -> None:
    limit = meta.get("max_len")
    if limit is not None and length > limit:
        raise ProtocolError("bad_field", f"at most {limit} {unit}, got {length}", path)


def _check_range(value: float, meta: dict, path: str) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ProtocolError("bad_field", f"must be >= {number_text(lo)}, got {number_text(value)}", path)
    if hi is not None and value > hi:
        raise ProtocolError("bad_field", f"must be <= {number_text(hi)}, got {number_text(value)}", path)


def number_text(x: float) -> str:
    """A limit as people write it: integers in full, floats to 6 significant digits."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        return str(int(x))
    return f"{x:.6g}"


def _wire_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", bytes: "binary", list: "array", dict: "map"}.get(
        type(value), "nil" if value is None else type(value).__name__
    )
