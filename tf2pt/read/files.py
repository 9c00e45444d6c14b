"""Opening the files a checkpoint names, as hostile input: only regular files (a FIFO would
hang, ``/dev/zero`` would never end), read to the size ``stat`` gave and no further."""

from __future__ import annotations

import os
import stat

from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError

_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def regular_size(path, what: str = "file") -> int:
    """The size of ``path`` (links followed), which must be a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read {what}: {exc.strerror}", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise UnsupportedError(f"{what} is {kind}, not a regular file", path=path,
                               hint="point tf2pt at the checkpoint's own files")
    return st.st_size


def is_regular(path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_regular(path, what: str = "file", limit: int = None) -> bytes:
    """The whole of a regular file, of at most ``limit`` bytes."""
    size = regular_size(path, what)
    if limit is not None and size > limit:
        raise UnsupportedError(f"{what} is {size} bytes, more than the {limit} a {what} can plausibly be", path=path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(size + 1)
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read {what}: {exc.strerror}", path=path) from None
    if len(data) != size:
        raise CorruptCheckpointError(f"{what} changed size while it was read", path=path,
                                     hint="let the process writing it finish, then retry")
    return data
