"""What the TF side's models and weights look like to verify, TF-free: :class:`TFModel` (a model
with named inputs: a SavedModel's signature, a TF1 graph, a Keras model, a mapping's reference)
and :class:`_ReadOnlyArrays` (weights as a read-only mapping). :mod:`.tfside` and
:mod:`.kerasside` both build on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple

import numpy as np


class _ReadOnlyArrays(Mapping):
    """A read-only mapping of names to arrays: ``name in v``, ``v[name]``, ``len(v)``,
    iteration and ``keys()``/``items()``/``values()``/``get()`` in sorted name order; no
    assignment. A missing name is a ``KeyError`` naming the closest names."""

    def _names(self):
        raise NotImplementedError

    def _read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names():
            import difflib

            close = difflib.get_close_matches(name, list(self._names()), n=3, cutoff=0.3)
            raise KeyError(f"{name!r} is not here" + (f"; closest: {', '.join(close)}" if close else ""))
        return self._read(name)

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} arrays>"


class TFModel:
    """What the TF side runs for a model with named inputs: a TF2 SavedModel's signature
    (:class:`SignatureModel`), a Keras model (:mod:`.kerasside`), or a mapping's ``tf_reference``.

    ``inputs``: ``{name: (numpy dtype, shape with None for unknown sizes, or None)}`` in the
    model's order; ``outputs``: the output names in order; ``what``: how messages name it
    ("signature 'serving_default'", "the Keras model in m.keras"); ``side`` and ``reason``: the
    report's ``tf_side`` and ``tf_side_reason``; ``int_high``: the bound of synthetic integer
    inputs the model itself declares (an Embedding's ``input_dim``), if any; ``variables``: the
    weights as TF or Keras read them, for the mapping's ``tf_reference``. :meth:`load` does the
    heavy part (once the request is checked), calling it runs the model on numpy arrays."""

    what = "the model"
    side = "original-graph"
    reason = ""
    path = ""
    int_high: Optional[int] = None
    variables: Any = None

    def __init__(self):
        self.inputs: Dict[str, Tuple[Any, Optional[tuple]]] = {}
        self.outputs: list = []

    def load(self) -> None:
        """Load the model (after the request is checked); a no-op where it is loaded already."""

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError
