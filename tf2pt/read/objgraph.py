"""Decode TF2's ``_CHECKPOINTABLE_OBJECT_GRAPH`` (a serialized ``TrackableObjectGraph``).

Object-based checkpoints store variables under keys such as
``model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``. The object graph says what
they are: each node's children (``local_name``), its serialized tensors (``full_name`` is the
variable's own name, e.g. ``dense/kernel``; ``checkpoint_key`` is the key) and, for optimizers,
which node is a slot of which variable.

Field numbers (``tensorflow/core/protobuf/trackable_object_graph.proto``)::

    TrackableObjectGraph      nodes = 1
    TrackableObject           children = 1, attributes = 2, slot_variables = 3
    ObjectReference           node_id = 1, local_name = 2
    SerializedTensor          name = 1, full_name = 2, checkpoint_key = 3
    SlotVariableReference     original_variable_node_id = 1, slot_name = 2, slot_variable_node_id = 3
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ._proto import ProtoError, as_bytes, as_int, as_str, iter_fields

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclass(frozen=True)
class KeyInfo:
    readable_name: str
    slot_of: Optional[str] = None
    slot_name: Optional[str] = None
    owner: Optional[str] = None  # "optimizer" or "metric" when the object path says so


def _node(buf: bytes):
    children: List[Tuple[int, str]] = []
    attributes: List[Tuple[str, str, str]] = []
    slots: List[Tuple[int, str, int]] = []
    for number, _, value in iter_fields(buf):
        if number == 1:
            ref = dict((n, v) for n, _, v in iter_fields(as_bytes(value, "child reference")))
            children.append((as_int(ref.get(1, 0), "node_id"), as_str(ref.get(2, b""), "local_name")))
        elif number == 2:
            att = dict((n, v) for n, _, v in iter_fields(as_bytes(value, "attribute")))
            attributes.append((as_str(att.get(1, b""), "attribute name"), as_str(att.get(2, b""), "full_name"),
                               as_str(att.get(3, b""), "checkpoint_key")))
        elif number == 3:
            ref = dict((n, v) for n, _, v in iter_fields(as_bytes(value, "slot variable reference")))
            slots.append((as_int(ref.get(1, 0), "original_variable_node_id"), as_str(ref.get(2, b""), "slot_name"),
                           as_int(ref.get(3, 0), "slot_variable_node_id")))
    return children, attributes, slots


#: readable names are built from at most this many path components (a deeper path keeps its
#: last ones after ``<...>/``), and Keras 3 slot names are matched against model variable
#: names of at most this many characters: a crafted graph of one long chain, or of names made
#: of thousands of underscores, then costs time and memory linear in its size
MAX_PATH_DEPTH = 64
MAX_MATCHED_NAME = 1024


def _attribute_keras3_slots(out: Dict[str, KeyInfo]) -> None:
    """Keras 3 optimizers keep slots as plain variables named ``<optimizer>/<var>_<slot>``
    (``adam/conv2d_1_kernel_momentum``), with ``/`` in the variable name turned into ``_``.
    Attribute them to the model variable whose flattened name they extend (the longest)."""
    flat = {info.readable_name.replace("/", "_"): info.readable_name for info in out.values()
            if info.owner is None and len(info.readable_name) <= MAX_MATCHED_NAME}
    for key, info in list(out.items()):
        if info.owner != "optimizer" or "/" not in info.readable_name:
            continue
        tail = info.readable_name.split("/", 1)[1]
        # candidate splits at each "_" from the right, heads no longer than any model name
        for cut in range(min(len(tail), MAX_MATCHED_NAME + 1) - 1, 0, -1):
            if tail[cut] == "_" and tail[:cut] in flat:
                out[key] = KeyInfo(info.readable_name, slot_of=flat[tail[:cut]], slot_name=tail[cut + 1:],
                                   owner="optimizer")
                break


#: where a node sits: the model's, the optimizer's (``.../optimizer``, except the model's
#: variables it lists under ``optimizer/_trainable_variables``), or a metric's
_NONE, _OPTIMIZER_ROOT, _OPTIMIZER, _METRIC = range(4)


def _owner_state(parent: int, local_name: str) -> int:
    if parent == _NONE:
        if local_name == "optimizer":
            return _OPTIMIZER_ROOT
        return _METRIC if local_name in ("metrics", "_metrics") else _NONE
    if parent == _OPTIMIZER_ROOT:
        return _NONE if local_name == "_trainable_variables" else _OPTIMIZER
    return parent


def decode(data: bytes) -> Dict[str, KeyInfo]:
    """``{checkpoint_key: KeyInfo}`` for every serialized tensor in the graph.

    Linear in the size of ``data``: paths are parent links, and only nodes that hold tensors get
    a readable name (at most :data:`MAX_PATH_DEPTH` components). Raises
    :class:`~tf2pt.read._proto.ProtoError` on malformed bytes.
    """
    nodes = [_node(as_bytes(v, "node")) for n, _, v in iter_fields(data) if n == 1]
    if not nodes:
        return {}
    # object paths, breadth first from the root (node 0); the first path found wins
    parent: Dict[int, Tuple[int, str]] = {0: (-1, "")}
    state: Dict[int, int] = {0: _NONE}
    queue = deque([0])
    while queue:
        i = queue.popleft()
        for child, local_name in nodes[i][0]:
            if not 0 <= child < len(nodes):
                raise ProtoError(f"object graph reference to node {child} of {len(nodes)}")
            if child not in parent:
                parent[child] = (i, local_name)
                state[child] = _owner_state(state[i], local_name)
                queue.append(child)

    def path_of(i: int) -> str:
        if i not in parent:
            return f"<node {i}>"
        parts = []
        while i > 0 and len(parts) < MAX_PATH_DEPTH:
            i, local_name = parent[i]
            parts.append(local_name)
        if i > 0:
            parts.append("<...>")
        return "/".join(reversed(parts))

    owners = {_NONE: None, _OPTIMIZER_ROOT: "optimizer", _OPTIMIZER: "optimizer", _METRIC: "metric"}
    out: Dict[str, KeyInfo] = {}
    readable_of_node: Dict[int, str] = {}
    for i, (_, attributes, _) in enumerate(nodes):
        if not attributes:
            continue
        path = path_of(i)
        for name, full_name, key in attributes:
            readable = full_name or (path if name == "VARIABLE_VALUE" else f"{path}/{name}")
            readable_of_node.setdefault(i, readable)
            out[key] = KeyInfo(readable, owner=owners[state.get(i, _NONE)])
    _attribute_keras3_slots(out)
    attributed = set()  # each slot node once, however many references name it
    for i, (_, _, slots) in enumerate(nodes):
        for original, slot_name, slot_node in slots:
            if not (0 <= original < len(nodes) and 0 <= slot_node < len(nodes)):
                raise ProtoError("object graph slot reference out of range")
            if slot_node in attributed:
                continue
            attributed.add(slot_node)
            var_name = readable_of_node.get(original) or path_of(original)
            for _, _, key in nodes[slot_node][1]:
                out[key] = KeyInfo(f"{var_name}/{slot_name}", slot_of=var_name, slot_name=slot_name, owner="optimizer")
    return out


def keys_by_node(data: bytes) -> Dict[int, List[str]]:
    """``{node id: [checkpoint_key, ...]}``: the keys each object-graph node serializes (a
    SavedModel's object graph numbers its nodes the same way)."""
    out: Dict[int, List[str]] = {}
    for i, (n, _, v) in enumerate((f for f in iter_fields(data) if f[0] == 1)):
        keys = [key for _, _, key in _node(as_bytes(v, "node"))[1]]
        if keys:
            out[i] = keys
    return out
