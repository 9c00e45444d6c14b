"""What a graph records about its variables' roles: TF1 ``.meta`` collections and a TF2
SavedModel's ``SavedVariable.trainable``. :mod:`.roles` uses it before any name rule.

Wire format (``tensorflow/core/protobuf/meta_graph.proto``, ``saved_model.proto``,
``saved_object_graph.proto``, ``framework/variable.proto``)::

    SavedModel          meta_graphs = 2 (MetaGraphDef)
    MetaGraphDef        collection_def = 4 (map entry: key = 1, value = 2), object_graph_def = 7
    CollectionDef       bytes_list = 2 (BytesList: value = 1, each a serialized VariableDef)
    VariableDef         variable_name = 1 ("dense/kernel:0"), save_slice_info_def = 4 (full_name = 1)
    SavedObjectGraph    nodes = 1 (SavedObject: variable = 7)
    SavedVariable       trainable = 3

A TF1 variable's checkpoint key is its op name (``dense/kernel``), or the full name of a
partitioned variable. A SavedModel's object-graph nodes are numbered as the checkpoint's
``TrackableObjectGraph`` nodes are, so node ``i``'s ``SavedVariable`` describes the keys node
``i`` serializes in ``variables/``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from ._proto import ProtoError, as_bytes, as_int, as_str, iter_fields

#: collections that make a variable part of the model, by the role they record
COLLECTIONS = {"trainable_variables": "trainable", "model_variables": "model"}
MAX_META_BYTES = 2 << 30  # protocol buffers cannot be larger


def _variable_key(buf: bytes) -> Optional[str]:
    name, full = None, None
    for number, _, value in iter_fields(buf):
        if number == 1:
            name = as_str(value, "variable_name")
        elif number == 4:
            for n2, _, v2 in iter_fields(as_bytes(value, "save_slice_info_def")):
                if n2 == 1:
                    full = as_str(v2, "full_name")
    if full:
        return full
    if name is None:
        return None
    return name[:-2] if name.endswith(":0") else name.split(":")[0]


def collection_roles(meta: bytes) -> Dict[str, str]:
    """``{checkpoint key: "trainable" | "model"}`` from a MetaGraphDef's collections."""
    out: Dict[str, str] = {}
    for number, _, value in iter_fields(meta):
        if number != 4:
            continue
        key, coll = "", b""
        for n2, _, v2 in iter_fields(as_bytes(value, "collection_def entry")):
            if n2 == 1:
                key = as_str(v2, "collection name")
            elif n2 == 2:
                coll = as_bytes(v2, "collection_def")
        role = COLLECTIONS.get(key)
        if role is None:
            continue
        for n3, _, v3 in iter_fields(coll):
            if n3 != 2:
                continue
            for n4, _, v4 in iter_fields(as_bytes(v3, "bytes_list")):
                if n4 == 1:
                    var = _variable_key(as_bytes(v4, "VariableDef"))
                    if var is not None:
                        out.setdefault(var, role)  # trainable wins when a variable is in both
    return out


def savedmodel_roles(data: bytes, keys_by_node: Dict[int, List[str]]) -> Dict[str, str]:
    """``{checkpoint key: role}`` from a ``saved_model.pb``: its first MetaGraphDef's
    collections (TF1 SavedModels) and, for TF2 ones, each trainable ``SavedVariable`` node's
    keys (``keys_by_node``: the checkpoint object graph's keys per node id)."""
    for number, _, value in iter_fields(data):
        if number != 2:
            continue
        meta = as_bytes(value, "meta_graph")
        out = collection_roles(meta)
        for n2, _, v2 in iter_fields(meta):
            if n2 != 7:
                continue
            node_id = 0
            for n3, _, v3 in iter_fields(as_bytes(v2, "object_graph_def")):
                if n3 != 1:
                    continue
                for n4, _, v4 in iter_fields(as_bytes(v3, "saved object")):
                    if n4 == 7:
                        trainable = False
                        for n5, _, v5 in iter_fields(as_bytes(v4, "saved variable")):
                            if n5 == 3:
                                trainable = bool(as_int(v5, "trainable"))
                        if trainable:
                            for key in keys_by_node.get(node_id, []):
                                out.setdefault(key, "trainable")
                node_id += 1
        return out
    return {}


def read_limited(path: str) -> Optional[bytes]:
    """The file's bytes, or ``None`` when it is missing, unreadable or impossibly large."""
    try:
        if os.path.getsize(path) > MAX_META_BYTES:
            return None
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def recorded_roles(prefix: str, savedmodel_dir: Optional[str], keys_by_node: Dict[int, List[str]]):
    """``(roles, source)``: what the ``.meta`` next to ``prefix`` or the SavedModel records;
    ``({}, None)`` when there is nothing (or it cannot be decoded: roles then come from names)."""
    try:
        if savedmodel_dir:
            data = read_limited(os.path.join(savedmodel_dir, "saved_model.pb"))
            if data:
                return savedmodel_roles(data, keys_by_node), "saved_model.pb"
            return {}, None
        data = read_limited(prefix + ".meta")
        if data:
            return collection_roles(data), os.path.basename(prefix) + ".meta"
    except ProtoError:
        return {}, None
    return {}, None
