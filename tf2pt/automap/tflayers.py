"""The TF side of matching: the checkpoint's inference variables grouped into layers, in order.

Order is graph order where the source has a graph (the ``.meta`` beside a bundle: its
MetaGraphDef's ``graph_def``, field 2; a frozen ``.pb``: its node order), natural sort of the
names otherwise. The graph also says which op reads each kernel (a ``Conv3D`` or a
``Conv3DBackpropInputV2``, a ``MatMul``), which settles what a kernel's shape cannot, and which
tensors are the model's input and output (for the generated file's verify facts).
Reads no tensor data and never imports TensorFlow.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..read._proto import ProtoError, as_bytes, iter_fields
from ..read.graphdef import Node, parse_graphdef
from .kinds import BATCHNORM_OPS, CONV_OPS, CONV_TRANSPOSE_OPS, DENSE_OPS, DEPTHWISE_OPS, TF_ROLES, Shape, classify_tf

KERNEL_OPS = CONV_OPS | CONV_TRANSPOSE_OPS | DENSE_OPS | DEPTHWISE_OPS

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "Const"}
PASS_THROUGH = {"Identity", "ReadVariableOp", "Enter", "Switch", "Cast"}
MAX_META_BYTES = 2 << 30


@dataclass
class TFLayer:
    scope: str                       # the name the rules are written for (the variables' scope)
    kind: Optional[str]
    variables: Dict[str, str]        # role -> TF variable name
    shapes: Dict[str, Shape]         # role -> TF shape
    order: float                     # position in graph order (or natural-sort rank)
    op: Optional[str] = None         # the graph op that reads the kernel
    #: graph tensors: the layer's input and output (for settling ties by running)
    tensors: Dict[str, str] = field(default_factory=dict)
    #: "transposed" when the graph reads a dense kernel transposed (``MatMul`` ``transpose_b``)
    layout: Optional[str] = None

    def signature(self) -> Tuple:
        return (self.kind, self.layout, tuple(sorted(self.shapes.items())))


@dataclass
class TFGraph:
    kind: str  # "meta" or "frozen"
    path: str
    nodes: List[Node]

    def index(self) -> Dict[str, int]:
        return {n.name: i for i, n in enumerate(self.nodes)}


def natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_graph(checkpoint) -> Optional[TFGraph]:
    """The checkpoint's own graph, decoded without TensorFlow, or ``None``."""
    if checkpoint.kind == "graphdef":
        return TFGraph("frozen", str(checkpoint.path), list(checkpoint.nodes))
    prefix = getattr(checkpoint, "prefix", None)
    meta = f"{prefix}.meta" if prefix else None
    if not meta or not os.path.isfile(meta) or os.path.getsize(meta) > MAX_META_BYTES:
        return None
    with open(meta, "rb") as fh:
        data = fh.read()
    try:
        graph_def = b"".join(as_bytes(v) for n, _, v in iter_fields(data) if n == 2)
        nodes = parse_graphdef(graph_def)
    except ProtoError:
        checkpoint.notes.append(f"{os.path.basename(meta)} is not a MetaGraphDef tf2pt can decode; names give the order")
        return None
    return TFGraph("meta", meta, nodes) if nodes else None


def _clean(name: str) -> str:
    return name[: -len("/.ATTRIBUTES/VARIABLE_VALUE")] if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE") else name


def _readers(graph: TFGraph) -> Dict[str, List[Node]]:
    consumers: Dict[str, List[Node]] = {}
    for node in graph.nodes:
        for inp in node.inputs:
            if not inp.startswith("^"):
                consumers.setdefault(inp.split(":")[0], []).append(node)
    return consumers


def _compute_op(name: str, consumers: Dict[str, List[Node]], accept=None, depth: int = 0) -> Optional[Node]:
    """The first op of ``accept`` (default: a convolution, a matmul) reading variable ``name``,
    through ``/read`` Identities and resource reads."""
    accept = KERNEL_OPS if accept is None else accept
    for node in consumers.get(name, []):
        if node.op in PASS_THROUGH and depth < 4:
            found = _compute_op(node.name, consumers, accept, depth + 1)
            if found is not None:
                return found
        elif node.op in accept:
            return node
    return None


def tf_layers(checkpoint, graph: Optional[TFGraph]) -> Tuple[List[TFLayer], List[str]]:
    """``(layers in order, names of inference variables no layer kind explains)``."""
    groups: Dict[str, Dict[str, str]] = {}
    unknown: List[str] = []
    for name, info in checkpoint.variables.items():
        if info.role != "inference":
            continue
        readable = _clean(info.readable_name or name)
        scope, _, leaf = readable.rpartition("/")
        role = TF_ROLES.get(leaf)
        if role is None or role in groups.get(scope, {}):
            unknown.append(name)
            continue
        groups.setdefault(scope, {})[role] = name
    position = graph.index() if graph else {}
    consumers = _readers(graph) if graph else {}
    layers = []
    for scope, variables in groups.items():
        shapes = {role: tuple(checkpoint.variables[v].shape) for role, v in variables.items()}
        op_node = None
        main = variables.get("kernel") or variables.get("depthwise_kernel")
        if graph is not None and main is not None:
            op_node = _compute_op(main, consumers)
        kind = classify_tf(shapes, op_node.op if op_node is not None else None, scope)
        if kind is None:
            unknown.extend(variables.values())
            continue
        if kind == "batchnorm" and graph is not None:  # a fused batch norm is one op to fetch
            op_node = _compute_op(variables["moving_mean"], consumers, BATCHNORM_OPS)
        seen = [position[v] for v in variables.values() if v in position]
        order = float(min(seen)) if seen else float("inf")
        layer = TFLayer(scope, kind, variables, shapes, order, op_node.op if op_node is not None else None)
        if op_node is not None:
            layer.tensors = _layer_tensors(op_node, variables, consumers)
            flag = "transpose_b" if op_node.op == "MatMul" else "adj_y"
            if kind == "dense" and len(op_node.inputs) > 1 and _attr_bool(op_node, flag) \
                    and _reads(op_node.inputs[1], main, graph):  # x @ W^T: W is torch's layout already
                layer.layout = "transposed"
        layers.append(layer)
    if graph is None or any(l.order == float("inf") for l in layers):
        ranked = sorted(layers, key=lambda l: natural_key(l.scope))
        for i, l in enumerate(ranked):
            if graph is None or l.order == float("inf"):
                l.order = float(len(position) + i)
    layers.sort(key=lambda l: (l.order, natural_key(l.scope)))
    return layers, sorted(unknown)


def _attr_bool(node: Node, key: str) -> bool:
    raw = node.attrs.get(key)
    if raw is None:
        return False
    try:
        return any(number == 5 and bool(value) for number, _, value in iter_fields(raw))  # AttrValue.b
    except ProtoError:
        return False


def _reads(tensor: str, variable: str, graph: TFGraph) -> bool:
    """Whether ``tensor`` (an op input) is ``variable`` read through pass-through ops."""
    by_name = {n.name: n for n in graph.nodes}
    name = tensor.lstrip("^").split(":")[0]
    for _ in range(5):
        if name == variable:
            return True
        node = by_name.get(name)
        if node is None or node.op not in PASS_THROUGH or not node.inputs:
            return False
        name = node.inputs[0].lstrip("^").split(":")[0]
    return False


def _layer_tensors(op: Node, variables: Dict[str, str], consumers: Dict[str, List[Node]]) -> Dict[str, str]:
    """The tensor a layer's output is (its op, or the BiasAdd after it when the layer has a bias)."""
    out = op
    if "bias" in variables and op.op not in BATCHNORM_OPS:
        for node in consumers.get(op.name, []):
            if node.op in ("BiasAdd", "Add", "AddV2"):
                out = node
                break
    return {"output": f"{out.name}:0"}


# ---------------------------------------------------------------------------------------------
# the graph's input and output, for the generated file's verify facts
# ---------------------------------------------------------------------------------------------

_SIDE_EFFECTS = ("Assign", "Save", "Restore", "NoOp")
#: node names that say "this is the model's output" (preferred over the last sink)
OUTPUT_NAMES = re.compile(r"(logits|outputs?|prob|probs|probabilit(y|ies)|predictions?|softmax|sigmoid|y_pred)$", re.I)


def graph_io(graph: TFGraph) -> Dict[str, object]:
    """``{"input", "output", "feeds", "output_kind"}`` where they can be read off the graph: the
    one float placeholder (an input the model can run from); the last node in graph order that
    depends on it and on no other placeholder or iterator, outside ``gradients/``, preferring
    one named like an output (``logits``, ``prob``, ...); and ``False`` for boolean
    placeholders named like a training switch. Missing keys: undecidable."""
    nodes = graph.nodes
    by_name = {n.name: n for n in nodes}
    consumers = _readers(graph)
    placeholders = [n for n in nodes if n.op in ("Placeholder", "PlaceholderWithDefault")]
    floats = [n for n in placeholders if _dtype(n) in (1, 2, 19)]
    result: Dict[str, object] = {}
    feeds = {f"{n.name}:0": False for n in placeholders
             if _dtype(n) == 10 and re.search(r"train|phase", n.name, re.I)}
    if feeds:
        result["feeds"] = feeds
    # a training graph has more than one float placeholder (images, labels, learning rate...);
    # prefer one named like an input
    if len(floats) > 1:
        named = [n for n in floats if re.search(r"image|input|img|^x$", n.name, re.I)]
        floats = named if len(named) == 1 else floats
    if len(floats) != 1:
        return result
    inp = floats[0]
    result["input"] = f"{inp.name}:0"
    fed = {inp.name} | {k.split(":")[0] for k in feeds}
    tainted: Dict[str, bool] = {}
    reached = {inp.name}
    for node in nodes:  # graph order is a topological order in graphs TF writes
        if node.name in fed:
            tainted[node.name] = False
            continue
        ins = [i.lstrip("^").split(":")[0] for i in node.inputs]
        tainted[node.name] = (node.op == "Placeholder" or node.op.startswith("Iterator")
                              or any(tainted.get(i, False) for i in ins))
        if any(i in reached for i in ins):
            reached.add(node.name)
    def clean(n: Node) -> bool:
        return (n.name in reached and not tainted.get(n.name, False) and not n.op.startswith(_SIDE_EFFECTS)
                and not re.search(r"(^|/)gradients(_\d+)?/", n.name))

    outputs = [n for n in nodes if clean(n) and n.name != inp.name and _out_is_float(n, by_name)]
    named = [n for n in outputs if OUTPUT_NAMES.match(n.name.rpartition("/")[2])]
    candidates = named or [n for n in outputs if not any(
        clean(c) and _out_is_float(c, by_name) for c in consumers.get(n.name, []))]
    if candidates:
        out = candidates[-1]
        result["output"] = f"{out.name}:0"
        result["output_kind"] = "probability" if _producer_op(out, by_name) in ("Sigmoid", "Softmax") else "logits"
        if result["output_kind"] == "probability" and _producer_op(out, by_name) == "Sigmoid":
            result["threshold"] = 0.5
    shape = _placeholder_shape(inp)
    if shape and len(shape) >= 3 and all(s > 0 for s in shape[1:-1]):
        result["size"] = tuple(int(s) for s in shape[1:-1])
    return result


def _producer_op(node: Node, by_name: Dict[str, Node]) -> str:
    while node.op in ("Identity",) and node.inputs:
        nxt = by_name.get(node.inputs[0].lstrip("^").split(":")[0])
        if nxt is None:
            break
        node = nxt
    return node.op


def _out_is_float(node: Node, by_name: Dict[str, Node]) -> bool:
    if node.op in ("Greater", "Less", "Equal", "ArgMax", "Shape", "ShapeN", "Cast", "Size", "Rank") \
            or "out_type" in node.attrs:
        return False
    dtype = _dtype(node)
    return dtype in (None, 1, 2, 19)


def _dtype(node: Node) -> Optional[int]:
    for key in ("dtype", "T"):
        raw = node.attrs.get(key)
        if raw is not None:
            try:
                for number, _, value in iter_fields(raw):
                    if number == 6:  # AttrValue.type
                        return int(value)
            except ProtoError:
                return None
    return None


def _placeholder_shape(node: Node) -> Optional[List[int]]:
    raw = node.attrs.get("shape")
    if raw is None:
        return None
    from ..read._proto import tensor_shape

    try:
        for number, _, value in iter_fields(raw):
            if number == 7:  # AttrValue.shape
                return [int(s) for s in tensor_shape(as_bytes(value))]
    except (ProtoError, ValueError):
        return None
    return None


def spatial_multiple(graph: TFGraph) -> int:
    """The size every spatial axis must be a multiple of, read off the graph: the product of the
    pooling strides (a U-Net's levels) times the largest ``space_to_batch`` block (NiftyNet's
    dilation); 1 when the graph has neither. A heuristic: edit the generated file if it is off."""
    pools, blocks = 1, 1
    by_name = {n.name: n for n in graph.nodes}
    for node in graph.nodes:
        if node.op == "SpaceToBatchND" and len(node.inputs) > 1:
            const = by_name.get(node.inputs[1].split(":")[0])
            for b in _const_ints(const) if const is not None else []:
                if 0 < b <= 1024:
                    blocks = blocks * b // math.gcd(blocks, b)
        if node.op in ("MaxPool", "MaxPool3D", "AvgPool", "AvgPool3D"):
            strides = _int_list(node.attrs.get("strides"))
            if strides and len(strides) >= 3:
                s = max(strides[1:-1])
                pools *= s if s > 1 else 1
    return min(pools * blocks, 1024)


def _const_ints(node: Node) -> List[int]:
    if node.op != "Const":
        return []
    from ..read.graphdef import attr_tensor, const_array, parse_tensor

    try:
        c = parse_tensor(attr_tensor(node.attrs.get("value", b"")))
        if len(c.shape) > 1 or (c.shape and c.shape[0] > 8):
            return []
        return [int(v) for v in const_array(c, node.name).reshape(-1)]
    except Exception:  # a malformed constant says nothing about the size multiple
        return []


def _int_list(raw: Optional[bytes]) -> Optional[List[int]]:
    if raw is None:
        return None
    from ..read._proto import packed_varints

    out: List[int] = []
    try:
        for number, _, value in iter_fields(raw):
            if number == 1:  # AttrValue.list
                for n2, _, v2 in iter_fields(as_bytes(value)):
                    if n2 == 3:  # ListValue.i
                        out.extend(packed_varints(v2))
    except ProtoError:
        return None
    return out
