"""``--backend tf``: the same :class:`~tf2pt.read.Checkpoint` interface, read by TensorFlow.

For cross-checks: tf2pt's own reader and ``tf.train.load_checkpoint`` should agree exactly.
Path forms, roles and readable names are tf2pt's (the object graph is decoded the same way);
names, shapes, dtypes and values are TF's. TF does not report the stored size of a string
tensor, so ``nbytes`` is 0 for strings here. TF's own errors become tf2pt's typed errors.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, DependencyError, UnsupportedError
from .base import IndexedCheckpoint, VariableInfo
from .bundle import OBJECT_GRAPH_KEY
from .paths import resolve
from .roles import classify


def _typed(tf, exc: Exception, path: str, what: str) -> CheckpointError:
    """A TF exception as a one-line tf2pt error (TF raises many types; keep its first line)."""
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    errors = getattr(tf, "errors", None)
    # py_checkpoint_reader re-raises most failures as a plain OpError/RuntimeError: look at the text too
    if (errors is not None and isinstance(exc, errors.DataLossError)) or any(
            m in text for m in ("Checksum does not match", "checksum does not match", "Data loss", "DATA_LOSS",
                                "not parseable", "corrupt")):
        return CorruptCheckpointError(f"TensorFlow reports {what} corrupt: {first}", path=path)
    if (errors is not None and isinstance(exc, errors.NotFoundError)) or "not found" in text.lower():
        return CheckpointNotFoundError(f"TensorFlow cannot find {what}: {first}", path=path)
    if errors is not None and isinstance(exc, errors.UnimplementedError):
        return UnsupportedError(f"TensorFlow cannot read {what}: {first}", path=path)
    return CheckpointError(f"TensorFlow cannot read {what}: {first}", path=path)


class TFCheckpoint(IndexedCheckpoint):
    kind = "bundle"

    def __init__(self, path):
        super().__init__(path)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import tensorflow as tf
        except ImportError:
            raise DependencyError("tensorflow", "--backend tf", extra="tf") from None
        self._tf = tf
        prefix, kind, notes, _ = resolve(path)
        self.prefix, self.kind, self.notes = prefix, kind, notes
        try:
            self._reader = tf.train.load_checkpoint(prefix)
            shapes = self._reader.get_variable_to_shape_map()
            types = self._reader.get_variable_to_dtype_map()
        except Exception as exc:
            raise _typed(tf, exc, prefix, "the checkpoint") from None
        data = sorted(glob.glob(glob.escape(prefix) + ".data-[0-9]*-of-[0-9]*"))
        self.files = [Path(prefix + ".index")] + [Path(p) for p in data]
        graph = {}
        if OBJECT_GRAPH_KEY in shapes:
            from ._proto import ProtoError
            from .objgraph import decode

            try:
                graph = decode(bytes(self.read(OBJECT_GRAPH_KEY).reshape(-1)[0]))
            except ProtoError as exc:
                raise CorruptCheckpointError(f"the object graph ({OBJECT_GRAPH_KEY}) is malformed ({exc})",
                                             path=prefix) from None
        for name in sorted(shapes):
            dtype = types[name]
            dname = {"half": "float16", "float": "float32", "double": "float64"}.get(dtype.name, dtype.name)
            shape = tuple(int(s) for s in shapes[name])
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            g = graph.get(name)
            role, reason = classify(name, slot_of=g.slot_of if g else None, owner=g.owner if g else None)
            nbytes = n * dtype.size if dtype.name != "string" else 0
            self.variables[name] = VariableInfo(
                name, dname, shape, nbytes, role, reason, readable_name=g.readable_name if g else None,
                slot_of=g.slot_of if g else None, slot_name=g.slot_name if g else None)

    def read(self, name: str, check_crc: bool = True) -> np.ndarray:
        if name not in self.variables and name != OBJECT_GRAPH_KEY:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.prefix)
        try:
            value = self._reader.get_tensor(name)
        except Exception as exc:
            raise _typed(self._tf, exc, self.prefix, f"variable {name!r}") from None
        return np.array(value, dtype=object) if isinstance(value, bytes) else value
