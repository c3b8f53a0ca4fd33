"""Reading one ``.npy`` array from a file nobody vouches for: header checked before data.

``np.load`` trusts the header: a 100-byte file claiming 10^10 elements makes it allocate
37 GiB. :func:`read_npy` reads the header, checks the type and element count, and only
then reads exactly the bytes the header promises.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np


class NpyError(ValueError):
    """An ``.npy`` array that is refused; the message says why (without the file's name)."""


def read_npy(f: BinaryIO, max_elements: int, kinds: str = "biuf") -> np.ndarray:
    """The array in the ``.npy`` stream ``f``: a dtype of one of ``kinds`` (numpy kind codes),
    at most ``max_elements`` elements; raises :class:`NpyError` otherwise or if truncated."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except ValueError as e:
        raise NpyError(f"not a .npy array ({e})") from None
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise NpyError(f"has type {dtype}; expected numbers")
    count = math.prod(shape)
    if count > max_elements:
        raise NpyError(f"has {count:,} elements (shape {list(shape)}); at most {max_elements:,} are read")
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise NpyError("is truncated")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
