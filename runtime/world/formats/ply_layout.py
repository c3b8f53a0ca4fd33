"""The PLY container: header parsing and reading named elements, with memory bounded by the file.

Knows nothing about Gaussians (``ply.py`` and ``ply_compressed.py`` do). Hostile files are
the reason this is not a thin wrapper around a general PLY library: a header may claim
2^31 rows in a file of a few bytes, or put a list element with millions of rows first.
So every count in the header is checked against the bytes the file really has before
anything is allocated, only the elements a caller names are read, and list properties
(variable-length rows) are refused in them and before them (splat PLYs have none; a mesh's
``face`` list after the vertices is skipped, never parsed). The memory a read costs is at
most a small multiple of the file's size: binary rows are read as one structured array,
ASCII rows through one float64 array of the file's numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SplatFormatError

MAX_HEADER_BYTES = 1 << 20
"""A PLY header longer than this (a MiB of text) is refused."""

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
"""PLY scalar type names -> numpy type codes (without byte order)."""

FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_COUNT_DIGITS = 18  # int() of a 5,000-digit count is slow and pointless: 10^18 rows never fit a file


@dataclass(frozen=True)
class PlyProperty:
    """One property: a scalar of ``type`` (numpy code), or a list whose length is a ``count_type``."""

    name: str
    type: str
    count_type: str | None = None

    @property
    def is_list(self) -> bool:
        return self.count_type is not None


@dataclass(frozen=True)
class PlyElement:
    name: str
    count: int
    properties: tuple[PlyProperty, ...]

    @property
    def has_lists(self) -> bool:
        return any(p.is_list for p in self.properties)

    def row_dtype(self, byte_order: str) -> np.dtype:
        """The packed structured dtype of one row (scalar properties only)."""
        return np.dtype([(p.name, byte_order + p.type) for p in self.properties])

    def min_row_bytes(self, ascii: bool) -> int:
        """Fewest bytes a row can take: binary, its scalars plus each list's length field;
        ASCII, one digit and one separator per scalar or list length."""
        if ascii:
            return 2 * len(self.properties)
        return sum(np.dtype(p.count_type or p.type).itemsize for p in self.properties)


@dataclass(frozen=True)
class PlyHeader:
    format: str
    elements: tuple[PlyElement, ...]
    comments: tuple[str, ...]
    length: int
    """Bytes from the start of the file through the ``end_header`` line."""

    @property
    def ascii(self) -> bool:
        return self.format == "ascii"

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def _type(path: Path, name: str, line: str) -> str:
    code = PLY_TYPES.get(name)
    if code is None:
        raise SplatFormatError(path, f"bad PLY header: unknown property type {name!r} in {line!r}")
    return code


def read_header(path: Path) -> PlyHeader:
    """Parse the header of the PLY at ``path``; raises :class:`SplatFormatError` naming the problem."""
    if not path.exists():
        raise SplatFormatError(path, "no such file")
    if path.is_dir():
        raise SplatFormatError(path, "is a directory, not a PLY file")
    with open(path, "rb") as f:
        data = f.read(MAX_HEADER_BYTES)
    if data[:4] not in (b"ply\n", b"ply\r"):
        raise SplatFormatError(path, "not a PLY file (it does not start with the 'ply' magic line)")
    end = data.find(b"end_header")
    if end < 0:
        if len(data) == MAX_HEADER_BYTES:
            raise SplatFormatError(path, f"PLY header is longer than {MAX_HEADER_BYTES} bytes")
        raise SplatFormatError(path, "PLY header has no 'end_header' line (truncated or not a PLY file)")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise SplatFormatError(path, "PLY header is truncated after 'end_header'")
    fmt = None
    comments: list[str] = []
    elements: list[tuple[str, int, list[PlyProperty]]] = []
    for raw in data[:end].decode("ascii", "replace").splitlines()[1:]:
        line = raw.strip()
        parts = line.split()
        if not parts:
            continue
        keyword = parts[0]
        if keyword in ("comment", "obj_info"):
            comments.append(line[len(keyword) :].strip())
        elif keyword == "format":
            if len(parts) != 3 or parts[1] not in FORMATS:
                raise SplatFormatError(path, f"bad PLY header: format line {line[:80]!r} (expected ascii or binary_*_endian 1.0)")
            fmt = parts[1]
        elif keyword == "element":
            if len(parts) != 3 or not parts[2].isdigit() or len(parts[2]) > _MAX_COUNT_DIGITS:
                raise SplatFormatError(path, f"bad PLY header: element line {line[:80]!r} (expected 'element NAME COUNT')")
            if any(e[0] == parts[1] for e in elements):
                raise SplatFormatError(path, f"bad PLY header: element {parts[1][:40]!r} appears twice")
            elements.append((parts[1], int(parts[2]), []))
        elif keyword == "property":
            if not elements:
                raise SplatFormatError(path, f"bad PLY header: property before any element ({line[:80]!r})")
            if len(parts) == 5 and parts[1] == "list":
                prop = PlyProperty(parts[4], _type(path, parts[3], line), _type(path, parts[2], line))
            elif len(parts) == 3:
                prop = PlyProperty(parts[2], _type(path, parts[1], line))
            else:
                raise SplatFormatError(path, f"bad PLY header: property line {line[:80]!r}")
            props = elements[-1][2]
            if any(p.name == prop.name for p in props):
                raise SplatFormatError(path, f"bad PLY header: property {prop.name!r} appears twice in element {elements[-1][0]!r}")
            props.append(prop)
        else:
            raise SplatFormatError(path, f"bad PLY header: unexpected line {line[:80]!r}")
    if fmt is None:
        raise SplatFormatError(path, "bad PLY header: no 'format' line")
    return PlyHeader(
        fmt, tuple(PlyElement(n, c, tuple(p)) for n, c, p in elements), tuple(comments), newline + 1
    )


def check_data_size(path: Path, header: PlyHeader) -> None:
    """Raise unless the file after the header can hold every row the header declares."""
    ascii = header.ascii
    data_bytes = path.stat().st_size - header.length
    promised = sum(e.count * e.min_row_bytes(ascii) for e in header.elements)
    if promised > data_bytes:
        what = "at least " if ascii or any(e.has_lists for e in header.elements) else ""
        counts = ", ".join(f"{e.count} {e.name}" for e in header.elements)
        raise SplatFormatError(path, f"truncated data: header promises {what}{promised} bytes ({counts}), file has {data_bytes}")


def read_elements(path: Path, header: PlyHeader, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The rows of the elements ``names`` (those present), as structured arrays in native byte order.

    Checks first that the file can hold every row the header declares, so a header
    claiming more than the file has fails before anything is allocated.
    """
    check_data_size(path, header)
    wanted = [i for i, e in enumerate(header.elements) if e.name in names]
    if not wanted:
        return {}
    for e in header.elements[: wanted[-1] + 1]:
        if e.has_lists:
            listed = ", ".join(p.name for p in e.properties if p.is_list)
            raise SplatFormatError(
                path, f"element {e.name!r} has list properties ({listed}); splat elements must hold scalars and come before any list"
            )
    if header.ascii:
        return _read_ascii(path, header, wanted)
    order = FORMATS[header.format]
    out = {}
    offset = header.length
    with open(path, "rb") as f:
        for i, e in enumerate(header.elements[: wanted[-1] + 1]):
            dtype = e.row_dtype(order)
            if i in wanted:
                f.seek(offset)
                rows = np.fromfile(f, dtype=dtype, count=e.count)
                if len(rows) != e.count:  # the file shrank since we looked
                    raise SplatFormatError(path, f"truncated data in element {e.name!r}")
                out[e.name] = rows.astype(rows.dtype.newbyteorder("="), copy=False)
            offset += e.count * dtype.itemsize
    return out


def _read_ascii(path: Path, header: PlyHeader, wanted: list[int]) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        f.seek(header.length)
        text = f.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            numbers = np.fromstring(text.decode("ascii"), dtype=np.float64, sep=" ")
    except (ValueError, UnicodeDecodeError, DeprecationWarning):
        numbers = None
    del text
    out = {}
    start = 0
    for i, e in enumerate(header.elements[: wanted[-1] + 1]):
        width = len(e.properties)
        end = start + e.count * width
        if numbers is None or len(numbers) < end:
            raise SplatFormatError(path, f"truncated or malformed ASCII PLY data in element {e.name!r} (expected {e.count} rows of {width} numbers)")
        if i in wanted:
            rows = np.empty(e.count, e.row_dtype("="))
            table = numbers[start:end].reshape(e.count, width)
            for j, p in enumerate(e.properties):
                rows[p.name] = table[:, j]
            out[e.name] = rows
        start = end
    return out
