"""How much a msgpack message would cost to unpack, found without unpacking it.

An attacker's message can be cheap to send and dear to unpack: 8 MiB of one-byte empty
arrays becomes millions of Python objects. :func:`check_bounds` walks the msgpack headers
only (a string or binary is skipped by its length, never read) and stops at the first
value past the budget, so the walk itself costs at most ``max_values`` steps.
"""

from __future__ import annotations

# Fixed-size msgpack types by first byte: bytes after the type byte.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
# Length-prefixed types: (bytes of the length, extra bytes after it: ext carries a type byte).
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),
          0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
# Containers with a length field: (bytes of the count, values per entry: maps hold pairs).
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


class BoundsExceeded(ValueError):
    """The message holds more values or deeper nesting than allowed (``.limit`` names which)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def check_bounds(data: bytes, max_values: int, max_depth: int) -> None:
    """Raise :class:`BoundsExceeded` if ``data`` holds more than ``max_values`` msgpack values
    (every map key, map value and array item counts, containers too) or nests containers
    deeper than ``max_depth``; ``ValueError`` if the headers run past the end. Malformed
    bytes within the budget are left for the unpacker to report.
    """
    view = memoryview(data)
    end = len(view)
    pos = 0
    values = 0
    pending = [1]  # values still to read at each open nesting level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        values += 1
        if values > max_values:
            raise BoundsExceeded(f"more than {max_values} values", "values")
        if pos >= end:
            raise ValueError("truncated")
        b = view[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0:  # fixint
            continue
        if b <= 0x8F or 0x90 <= b <= 0x9F:  # fixmap, fixarray
            count = (b & 0x0F) * (2 if b <= 0x8F else 1)
        elif b <= 0xBF:  # fixstr
            pos += b & 0x1F
            continue
        elif b in _FIXED:
            pos += _FIXED[b]
            continue
        elif b in _SIZED:
            width, extra = _SIZED[b]
            pos += width + extra + int.from_bytes(view[pos : pos + width], "big")
            continue
        elif b in _CONTAINERS:
            width, per_entry = _CONTAINERS[b]
            count = int.from_bytes(view[pos : pos + width], "big") * per_entry
            pos += width
        else:  # 0xC1: never used
            raise ValueError(f"byte 0x{b:02x} is not msgpack")
        if count:
            if len(pending) > max_depth:
                raise BoundsExceeded(f"nested deeper than {max_depth} levels", "depth")
            if count > max_values - values:  # cannot fit: fail now, not after walking them
                raise BoundsExceeded(f"more than {max_values} values", "values")
            pending.append(count)
    if pos > end:
        raise ValueError("truncated")
