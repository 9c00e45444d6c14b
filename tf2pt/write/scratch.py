"""A reusable buffer for converted tensors (numpy is imported when one is first needed, so
that a command that only copies bytes never imports it)."""

from __future__ import annotations

from .safetensors import nbytes


class Scratch:
    """A reusable buffer for converted tensors: page faults are paid once, not per tensor."""

    def __init__(self):
        self._buf = None

    def _bytes(self, need: int):
        import numpy as np

        if self._buf is None or self._buf.nbytes < need:
            self._buf = np.empty(max(need, 1 << 20), dtype=np.uint8)
        return self._buf[:need]

    def array(self, shape, dtype):
        """An uninitialised C-ordered numpy array of ``shape`` and ``dtype``, in the buffer."""
        import numpy as np

        dtype = np.dtype(dtype)
        return self._bytes(nbytes(shape, dtype.name)).view(dtype).reshape(shape)
