"""Reusable buffers for converted tensors (numpy is imported when one is first needed, so that a
command that only copies bytes never imports it)."""

from __future__ import annotations

from .safetensors import nbytes


class Scratch:
    """A reusable buffer for converted tensors: page faults are paid once, not per tensor.

    With ``buffers=2`` it is a ring of two: each :meth:`array` is the buffer after the last, so
    one slab of a large tensor can be made while the one before it is written."""

    def __init__(self, buffers: int = 1):
        self._bufs = [None] * max(1, buffers)
        self._next = 0

    def _bytes(self, need: int):
        import numpy as np

        k = self._next
        self._next = (k + 1) % len(self._bufs)
        if self._bufs[k] is None or self._bufs[k].nbytes < need:
            self._bufs[k] = np.empty(max(need, 1 << 20), dtype=np.uint8)
        return self._bufs[k][:need]

    def array(self, shape, dtype):
        """An uninitialised C-ordered numpy array of ``shape`` and ``dtype``, in the (next) buffer."""
        import numpy as np

        dtype = np.dtype(dtype)
        return self._bytes(nbytes(shape, dtype.name)).view(dtype).reshape(shape)
