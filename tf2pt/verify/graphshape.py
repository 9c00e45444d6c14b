"""The rank of a TF1 graph's input placeholder, read without TensorFlow (the parent process of
verify never imports it), to tell a 3-D volume model (a 5-D ``NDHWC`` input: the volume path)
from any other (``NHWC`` images, ``NLC`` sequences, vectors: the path of models with named
inputs of any rank, :func:`tf2pt.verify.run.verify_signature`).

The graph is the one the TF side would run (:func:`tf2pt.verify.tfside.find_graph`): a frozen
GraphDef ``.pb``, the ``.meta`` next to a bundle, or a TF1 SavedModel's served meta graph. Read
with tf2pt's own wire-format decoder (:mod:`tf2pt.read._proto`), bounded by the file's size.

Wire format: ``GraphDef.node = 1`` (``NodeDef``: ``name = 1``, ``op = 2``, ``attr = 5``, a map
entry ``key = 1``, ``value = 2``); ``AttrValue.shape = 7`` (``TensorShapeProto``);
``MetaGraphDef.graph_def = 2``, ``meta_info_def = 1`` (``tags = 4``); ``SavedModel.meta_graphs = 2``.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import Tf2ptError
from ..read._proto import ProtoError, as_bytes, as_str, iter_fields, tensor_shape

MAX_BYTES = 2 << 30  # protocol buffers cannot be larger
_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")


def _graph_file(checkpoint_path) -> Optional[tuple]:
    """``(path, kind)`` of the graph verify's TF side would run, ``kind`` being "frozen", "meta"
    or "savedmodel"; ``None`` where there is none (or the path is for tf2pt's reader to judge)."""
    from ..read.paths import resolve

    path = os.fspath(checkpoint_path)
    base = os.path.basename(path)
    if path.endswith(".pb") and os.path.isfile(path) and base != "saved_model.pb":
        return path, "frozen"
    if base == "saved_model.pb":
        path = os.path.dirname(path) or "."
    try:
        prefix, kind, _, directory = resolve(path)
    except Tf2ptError:
        return None
    if kind == "savedmodel":
        pb = os.path.join(directory, "saved_model.pb")
        return (pb, "savedmodel") if os.path.isfile(pb) else None
    meta = prefix + ".meta"
    return (meta, "meta") if os.path.isfile(meta) else None


def graph_file(checkpoint_path):
    """``(path, kind)`` of the graph verify's TF side would run for ``checkpoint_path``; ``False``
    for a TF checkpoint bundle without one (no ``.meta`` beside it); ``None`` where the path is
    not a bundle tf2pt resolves (tf2pt's reader judges it)."""
    found = _graph_file(checkpoint_path)
    if found is not None:
        return found
    from ..read.paths import resolve

    path = os.fspath(checkpoint_path)
    if os.path.isfile(path) and not path.endswith((".index", ".meta")) and "data-" not in os.path.basename(path):
        return None
    try:
        resolve(path)
    except Tf2ptError:
        return None
    return False


def _graph_def(data: bytes, kind: str) -> Optional[bytes]:
    if kind == "frozen":
        return data
    metas = []
    if kind == "savedmodel":
        metas = [as_bytes(v, "meta graph") for n, _, v in iter_fields(data) if n == 2]
    else:
        metas = [data]
    chosen = None
    for meta in metas:
        graph, served = None, False
        for n, _, v in iter_fields(meta):
            if n == 2:
                graph = as_bytes(v, "graph_def")
            elif n == 1:
                served = served or any(n2 == 4 and as_str(v2, "tag") == "serve"
                                       for n2, _, v2 in iter_fields(as_bytes(v, "meta_info_def")))
        if graph is not None and (chosen is None or served):
            chosen = graph
            if served:
                break
    return chosen


def placeholder_rank(graph_def: bytes, tensor: str) -> Optional[int]:
    """The rank the placeholder behind ``tensor`` (``images:0``) declares; ``None`` when the node
    is not a placeholder, not in the graph, or its rank is unknown."""
    node_name = tensor.split(":")[0]
    for number, _, value in iter_fields(graph_def):
        if number != 1:
            continue
        name, op, attrs = None, None, []
        for n2, _, v2 in iter_fields(as_bytes(value, "node")):
            if n2 == 1:
                name = as_str(v2, "node name")
                if name != node_name:
                    break
            elif n2 == 2:
                op = as_str(v2, "op")
            elif n2 == 5:
                attrs.append(as_bytes(v2, "attr"))
        if name != node_name:
            continue
        if op not in _PLACEHOLDERS:
            return None
        for attr in attrs:
            key, val = None, b""
            for n3, _, v3 in iter_fields(attr):
                if n3 == 1:
                    key = as_str(v3, "attr key")
                elif n3 == 2:
                    val = as_bytes(v3, "attr value")
            if key == "shape":
                for n4, _, v4 in iter_fields(val):
                    if n4 == 7:
                        return len(tensor_shape(as_bytes(v4, "shape")))
        return None
    return None


def graph_input_rank(checkpoint_path, tensor: Optional[str]) -> Optional[int]:
    """The rank of ``tensor``'s placeholder in the TF1 graph verify would run for
    ``checkpoint_path``; ``None`` when there is no graph, no such placeholder, or its rank is not
    known (the volume path then runs, and reports what it finds)."""
    if not tensor:
        return None
    found = _graph_file(checkpoint_path)
    if found is None:
        return None
    path, kind = found
    try:
        if os.path.getsize(path) > MAX_BYTES:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
        graph = _graph_def(data, kind)
        return None if graph is None else placeholder_rank(graph, tensor)
    except (OSError, ProtoError):
        return None  # the TF side reports a damaged graph
