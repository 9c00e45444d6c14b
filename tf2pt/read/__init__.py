"""Reading: every checkpoint source behind one :class:`Checkpoint` interface, without TensorFlow.

* :mod:`.base` -- :class:`Checkpoint` and :class:`VariableInfo`;
* :mod:`.paths` -- what a user's path names (prefix, directory, state file, SavedModel);
* :mod:`.bundle` -- V2 tensor bundles (also a SavedModel's ``variables/``), with :mod:`.slices`
  for partitioned variables and the wire formats :mod:`._sstable`, :mod:`._proto`, :mod:`._crc`;
* :mod:`.objgraph` -- TF2 object graphs (readable names, optimizer slots);
* :mod:`.graphdef` -- frozen GraphDefs (constants are the variables);
* :mod:`.keras` -- Keras weight files (``.h5``, ``.weights.h5``, ``.keras``, ``.weights.json``)
  through h5py, guarded by :mod:`._h5safe` and :mod:`._zipsafe`;
* :mod:`.metagraph` -- the roles a ``.meta`` or SavedModel records;
* :mod:`.roles` -- which variables are training-only;
* :mod:`.tfbackend` -- the same interface through ``tf.train.load_checkpoint`` (cross-checks).
"""

from __future__ import annotations

import os

from .base import Checkpoint, VariableInfo

__all__ = ["Checkpoint", "VariableInfo", "open_checkpoint"]


def open_checkpoint(path, backend: str = "native") -> Checkpoint:
    """Open a checkpoint: a prefix, its ``.index``/``.data-*``/``.meta`` path, a directory
    (with a ``checkpoint`` state file or exactly one bundle), a SavedModel directory, a frozen
    GraphDef ``.pb``, or a Keras weight file (recognised by its HDF5 or zip signature or its
    suffix). TFLite, ONNX and text GraphDefs are refused with a message naming them. ``backend="tf"`` reads through ``tf.train.load_checkpoint`` instead."""
    if backend == "tf":
        from .tfbackend import TFCheckpoint

        return TFCheckpoint(path)
    if backend != "native":
        raise ValueError(f"unknown backend {backend!r}")
    spath = os.fspath(path)
    from .paths import sniff

    if sniff(spath) == "keras":
        from .keras import KerasCheckpoint

        return KerasCheckpoint(spath)
    if spath.endswith((".pb", ".pbtxt")) and os.path.isfile(spath) and os.path.basename(spath) not in (
            "saved_model.pb", "saved_model.pbtxt"):
        from .graphdef import GraphDefCheckpoint

        return GraphDefCheckpoint(spath)
    if os.path.basename(spath) in ("saved_model.pb", "saved_model.pbtxt"):
        spath = os.path.dirname(spath) or "."
    from .bundle import BundleCheckpoint
    from .paths import resolve

    prefix, kind, notes, savedmodel_dir = resolve(spath)
    return BundleCheckpoint(path, prefix, kind, notes, savedmodel_dir)
