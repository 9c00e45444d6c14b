"""Telling a TF2 SavedModel from a TF1 one without TensorFlow (the parent process of verify
never imports it): a TF2 SavedModel's meta graph has an object graph (``object_graph_def``
nodes) and no ``variables`` collection; a TF1 one (``SavedModelBuilder``) has the collection.

Read with tf2pt's own wire-format decoder (:mod:`tf2pt.read._proto`), bounded by the file's size.
"""

from __future__ import annotations

import os

from ..errors import InputError
from ..read._proto import ProtoError, as_bytes, as_str, iter_fields

#: field numbers: SavedModel.meta_graphs; MetaGraphDef.collection_def, .object_graph_def;
#: SavedObjectGraph.nodes; the map entry's key
_META_GRAPHS, _COLLECTION_DEF, _OBJECT_GRAPH_DEF, _NODES, _KEY = 2, 4, 7, 1, 1
MAX_BYTES = 1 << 31


def savedmodel_version(directory: str) -> str:
    """``"tf2"`` or ``"tf1"`` for the SavedModel in ``directory`` (its first meta graph)."""
    path = os.path.join(directory, "saved_model.pb")
    if not os.path.isfile(path):
        return "tf1"  # a .pbtxt SavedModel: TF1's loader reads it, as before
    if os.path.getsize(path) > MAX_BYTES:
        raise InputError("saved_model.pb is larger than 2 GiB, which no protocol buffer can be", path=path)
    with open(path, "rb") as fh:
        buf = fh.read()
    try:
        for field, _, value in iter_fields(buf):
            if field != _META_GRAPHS:
                continue
            meta = as_bytes(value, "meta graph")
            objects, variables = False, False
            for f, _, v in iter_fields(meta):
                if f == _OBJECT_GRAPH_DEF:
                    objects = objects or any(n == _NODES for n, _, _ in iter_fields(as_bytes(v, "object graph")))
                elif f == _COLLECTION_DEF:
                    entry = as_bytes(v, "collection")
                    variables = variables or any(n == _KEY and as_str(k) == "variables" for n, _, k in iter_fields(entry))
            return "tf2" if objects and not variables else "tf1"
    except ProtoError as exc:
        raise InputError(f"saved_model.pb is not a SavedModel ({exc})", path=path) from None
    raise InputError("the SavedModel holds no meta graph", path=path)
