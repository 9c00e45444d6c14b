"""Overlapping reads with writes: the next tensor is made ready while one is written."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

from .safetensors import Sink, is_buffer, write_bytes
from .scratch import Scratch


#: Tensors in this size range are made ready (read and converted, or CRC-checked where copied as
#: stored) in a second thread while the one before is written. Smaller ones gain less than the hand-over costs; larger ones
#: would hold a second large tensor in memory (the limit bounds what prefetching adds to it).
PREFETCH_MIN = 1 << 20
PREFETCH_MAX = 32 << 20


class Prefetch:
    """A ``fill`` for :func:`write_safetensors` that overlaps making item ``i + 1`` ready with
    writing item ``i`` (on two cores: the write is a kernel copy, the preparation a CRC and a
    permuted copy, both outside the GIL). ``prepare(i, scratch)`` returns the bytes of item
    ``i`` (one buffer, or an iterator of slabs or chunks) or ``None``, in which case
    ``fallback(i, sink)`` writes it with nothing in flight; ``sizes[i]`` decide which items are
    worth prefetching; ``before_write(i)``, if given, runs in the writing thread before item
    ``i``'s bytes are written, while the next item is made ready.

    Two scratch buffers alternate between prefetched items, so the one being written is never
    the one being filled; a ring of two more serves items too large to prefetch, whose slabs
    (or chunks) are made one ahead of the one being written. Use as a context manager: leaving
    it waits for the work in flight, so the checkpoint is never closed under it.
    ``enabled=False`` (or one core) makes everything in the writing thread."""

    def __init__(self, prepare, fallback, sizes: Sequence[int], enabled: bool = True,
                 before_write: Optional[Callable[[int], None]] = None):
        self._prepare, self._fallback, self._sizes = prepare, fallback, list(sizes)
        self._before_write = before_write
        self._enabled = enabled and (os.cpu_count() or 1) > 1
        self._scratch = [Scratch(), Scratch(), Scratch(buffers=2)]
        self._pending: Dict[int, Any] = {}
        self._pool = None

    def _eligible(self, i: int) -> bool:
        return self._enabled and i < len(self._sizes) and PREFETCH_MIN <= self._sizes[i] <= PREFETCH_MAX

    def _make(self, i: int):
        return self._prepare(i, self._scratch[i % 2 if self._eligible(i) else 2])

    def __call__(self, i: int, sink: Sink) -> None:
        future = self._pending.pop(i, None)
        data = future.result() if future is not None else self._make(i)
        if data is None:
            self._fallback(i, sink)
        if self._eligible(i + 1):
            self._pending[i + 1] = self._get_pool().submit(self._make, i + 1)
        if data is None:
            return
        check = (lambda: self._before_write(i)) if self._before_write else None
        if self._enabled and not is_buffer(data):
            self._write_ahead(sink, iter(data), check)  # slabs of a large tensor
        else:
            if check:
                check()
            write_bytes(sink, data)

    def _write_ahead(self, sink: Sink, pieces, check=None) -> None:
        """Write ``pieces``, each made in the worker while the one before is written (and
        ``check`` runs while the first is made): the ring of two buffers they are made in
        holds just those two."""
        pool = self._get_pool()
        future = pool.submit(next, pieces, None)
        try:
            if check:
                check()
            while True:
                piece = future.result()
                if piece is None:
                    return
                future = pool.submit(next, pieces, None)
                sink.write(piece)
        except BaseException:
            if not future.cancel():  # the generator may not be left running in the worker
                future.exception()
            raise

    def _get_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tf2pt-prefetch")
        return self._pool

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for future in self._pending.values():
            try:
                future.result()
            except BaseException:  # the error being raised, if any, is the one that matters
                pass
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
