"""Loading ``.npy`` and ``.npz`` inputs (volumes, references) as hostile input: the header's
claimed shape is checked against the bytes really there before anything is allocated, and an
archive may not inflate beyond a bound of its own size (a zip bomb)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import InputError


def _npy_header(fh, path: str, what: str):
    """``(shape, dtype, header bytes)`` of the ``.npy`` stream ``fh``, read without loading it."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=1 << 16)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=1 << 16)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a plain .npy array ({exc})", path=path, hint=f"give a {what} saved by numpy") from None
    if dtype.hasobject:
        raise InputError("the array holds Python objects, which tf2pt never unpickles", path=path)
    return shape, dtype, fh.tell()


def _claimed(shape, dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def load_npy(path: str, what: str = "array") -> np.ndarray:
    """A ``.npy`` file whose header agrees with its size (a header claiming 2**40 elements in a
    small file is refused before numpy allocates them)."""
    if not os.path.isfile(path):
        raise InputError(f"{what} file not found or not a regular file", path=path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        shape, dtype, start = _npy_header(fh, path, what)
    if _claimed(shape, dtype) != size - start:
        raise InputError(f"its header claims {list(shape)} x {dtype} ({_claimed(shape, dtype)} bytes), but the file "
                         f"holds {size - start}", path=path, hint="the file is damaged or crafted")
    return np.load(path, allow_pickle=False)


def check_npz(path: str, what: str = "archive", ratio: int = 256, slack: int = 1 << 30) -> None:
    """Check an ``.npz`` before numpy reads it: every member a ``.npy`` whose header agrees
    with the member's declared size, and all members together inflating to at most
    ``ratio`` x the archive's size + ``slack`` (a real reference of floats barely compresses)."""
    if not os.path.isfile(path):
        raise InputError(f"{what} file not found or not a regular file", path=path)
    budget = ratio * os.path.getsize(path) + slack
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                total += info.file_size
                if total > budget:
                    raise InputError(f"its members would inflate to more than {budget} bytes from a "
                                     f"{os.path.getsize(path)}-byte file (a zip bomb?)", path=path)
                if not info.filename.endswith(".npy") or "/" in info.filename or "\\" in info.filename:
                    raise InputError(f"member {info.filename!r} is not a .npy array of the archive", path=path)
                with zf.open(info) as fh:
                    shape, dtype, start = _npy_header(fh, path, what)
                if _claimed(shape, dtype) != info.file_size - start:
                    raise InputError(f"member {info.filename!r} claims {list(shape)} x {dtype}, but holds "
                                     f"{info.file_size - start} bytes", path=path, hint="the file is damaged or crafted")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not an .npz archive ({exc})", path=path) from None
