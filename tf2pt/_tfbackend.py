"""``--backend tf``: the same :class:`~tf2pt.reader.Checkpoint` interface, read by TensorFlow.

For cross-checks: tf2pt's own reader and ``tf.train.load_checkpoint`` should agree exactly.
Path forms and roles are tf2pt's; names, shapes, dtypes and values are TF's.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import CheckpointError, DependencyError
from .reader import Checkpoint, VariableInfo, resolve
from .roles import classify


class TFCheckpoint(Checkpoint):
    kind = "bundle"

    def __init__(self, path):
        super().__init__(path)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import tensorflow as tf
        except ImportError:
            raise DependencyError("tensorflow", "--backend tf", extra="tf") from None
        prefix, kind, notes, _ = resolve(path)
        self.prefix, self.kind, self.notes = prefix, kind, notes
        try:
            self._reader = tf.train.load_checkpoint(prefix)
        except Exception as exc:  # TF raises many types; keep the first line of its message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"TensorFlow cannot read it: {first}", path=prefix) from None
        self.files = [prefix + ".index"]
        shapes = self._reader.get_variable_to_shape_map()
        types = self._reader.get_variable_to_dtype_map()
        for name in sorted(shapes):
            dtype = types[name]
            dname = {"half": "float16", "float": "float32", "double": "float64"}.get(dtype.name, dtype.name)
            shape = tuple(int(s) for s in shapes[name])
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            role, reason = classify(name)
            nbytes = n * dtype.size if dtype.name != "string" else 0
            self.variables[name] = VariableInfo(name, dname, shape, nbytes, role, reason)

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        value = self._reader.get_tensor(name)
        return np.array(value, dtype=object) if isinstance(value, bytes) else value
