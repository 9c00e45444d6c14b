"""Atomic output: a file appears complete at its path, or not at all.

Writers write to a temporary file in the destination's directory and ``os.replace`` it into
place only after the last byte is written and flushed. Any exception (including Ctrl-C) removes
the temporary file. A process killed outright (SIGKILL) can leave only a hidden
``.<name>.tf2pt-tmp-*`` file next to the target, never a partial file at the target path.
``TF2PT_FSYNC=1`` also flushes the file to disk before the rename (survives power loss; slower).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence

from ..errors import InputError, OutputExistsError

TMP_MARK = ".tf2pt-tmp-"


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def source_paths(checkpoint) -> List[str]:
    """Every file a checkpoint is made of or comes with (its graph, its state file): no output
    may be one of them, whatever ``--force`` says."""
    paths = [os.fspath(p) for p in getattr(checkpoint, "files", ())]
    prefix = getattr(checkpoint, "prefix", None)
    if prefix:
        paths += [prefix + ".meta", os.path.join(os.path.dirname(prefix) or ".", "checkpoint")]
    savedmodel = getattr(checkpoint, "savedmodel_dir", None)
    if savedmodel:
        paths += [os.path.join(savedmodel, "saved_model.pb"), os.path.join(savedmodel, "saved_model.pbtxt")]
    return [p for p in paths if os.path.lexists(p)]


def check_distinct(outputs: Dict[str, Optional[str]], sources: Sequence[str] = ()) -> None:
    """Refuse, before anything is written, an output that is another output or a source file.
    ``outputs`` maps each option (``"-o"``, ``"--report"``) to its path or ``None``."""
    given = [(option, os.fspath(path)) for option, path in outputs.items() if path is not None]
    for i, (option, path) in enumerate(given):
        for other, other_path in given[:i]:
            if _same(path, other_path):
                raise InputError(f"{other} and {option} name the same file", path=path,
                                 hint="give each output its own file name")
        for source in sources:
            if _same(path, source):
                raise InputError(f"{option} would overwrite a file of the checkpoint being read", path=path,
                                 hint="write the output somewhere else")


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done, then raise as they would have.
    For code that swallows ``KeyboardInterrupt`` (``torch.save`` turns it into a RuntimeError):
    the temporary file is then finished and removed, and the command exits 130, not 3."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        if received[0] == signal.SIGINT:
            raise KeyboardInterrupt
        from ..errors import Interrupted

        raise Interrupted(received[0])


def check_output(path, force: bool = False) -> None:
    """Fail early (before any work) if ``path`` exists and ``force`` is off, or its directory
    does not exist."""
    if path is None:
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError("output path is a directory", path=path, hint="give a file name")
    if os.path.lexists(path) and not force:
        raise OutputExistsError(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError("output directory does not exist", path=path, hint=f"create {directory} first")


@contextlib.contextmanager
def atomic_output(path, force: bool = False) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    The temporary file exists (empty) when yielded: open it with ``"r+b"``, not ``"wb"``. On
    ext4, truncating a file and rewriting it makes close() flush it to disk (``auto_da_alloc``),
    which would cost a 1 GiB conversion about a third of a second."""
    check_output(path, force)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARK}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        if os.environ.get("TF2PT_FSYNC"):  # durability across power loss, at the cost of a disk flush
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if not force and os.path.lexists(path):  # appeared while we were writing
            raise OutputExistsError(path)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
