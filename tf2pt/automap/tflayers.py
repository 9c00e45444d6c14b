"""The TF side of matching: the checkpoint's inference variables grouped into layers, in order.

Order is graph order where the source has a graph (the ``.meta`` beside a bundle: its
MetaGraphDef's ``graph_def``, field 2; a frozen ``.pb``: its node order), natural sort of the
names otherwise. The graph also says which op reads each kernel (a ``Conv3D`` or a
``Conv3DBackpropInputV2``, a ``MatMul``), which settles what a kernel's shape cannot, and which
tensors are the model's input and output (for the generated file's verify facts).
A Keras file (:func:`keras_layers`) has no graph but its own layer table: each variable's layer,
class, config and place in the model's order (:mod:`tf2pt.read.keras`).
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
from .kinds import (BATCHNORM_OPS, CONV_OPS, CONV_TRANSPOSE_OPS, DENSE_OPS, DEPTHWISE_OPS, KERAS_CLASSES, TF_ROLES, Shape,
                    classify_tf)

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


def graph_channels_first(graph: TFGraph) -> bool:
    """Whether the graph's convolutions or pools run channels-first (``data_format`` NCHW /
    NCDHW): then it flattens its maps channels-first too, as ``nn.Flatten`` does."""
    for node in graph.nodes:
        raw = node.attrs.get("data_format")
        if raw is None:
            continue
        try:
            if any(number == 2 and as_bytes(value).startswith(b"NC") for number, _, value in iter_fields(raw)):
                return True  # AttrValue.s
        except ProtoError:
            continue
    return False


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


# ---------------------------------------------------------------------------------------------
# Keras files: the model's own layers, in the model's order
# ---------------------------------------------------------------------------------------------

KERAS_KINDS = ("keras", "keras_h5", "keras_weights_h5", "keras3_weights_h5", "keras3_sharded")
#: TF layer kinds whose input is a channels-last map (the model's input moves to channels-first)
SPATIAL_KINDS = ("conv", "conv_transpose", "depthwise", "separable", "batchnorm")


def is_keras(checkpoint) -> bool:
    return getattr(checkpoint, "kind", None) in KERAS_KINDS


@dataclass
class KerasFacts:
    """What a Keras file says beyond its weights: where the layer order came from, the model's
    input (``shape`` without the batch axis, ``None`` for free sizes; ``dtype``) where its config
    has one, whether its ``Flatten`` layers flatten channels-last (Keras' default), and notes."""

    order: str
    input_shape: Optional[Tuple[Optional[int], ...]] = None
    input_dtype: Optional[str] = None
    flatten_channels_last: bool = True
    notes: List[str] = field(default_factory=list)


def _keras_role(leaf: str, layer_class: Optional[str], name: str, rank: int) -> Optional[str]:
    role = TF_ROLES.get(leaf)
    # Keras 3 names a DepthwiseConv's kernel "kernel", Keras 2 "depthwise_kernel"
    if role == "kernel" and (layer_class in ("DepthwiseConv1D", "DepthwiseConv2D")
                             or (layer_class is None and "depthwise" in name.lower() and rank in (3, 4))):
        return "depthwise_kernel"
    return role


def _keras_entries(config) -> List[dict]:
    """Every layer entry of a Keras model config, nested models included, depth first."""
    from ..read.keras import _layer_entries

    out, stack = [], [config]
    while stack:
        node = stack.pop()
        entries = _layer_entries(node)
        out.extend(entries)
        stack.extend(reversed([e for e in entries if _layer_entries(e)]))
    return out


def _keras_input(config) -> Tuple[Optional[Tuple[Optional[int], ...]], Optional[str]]:
    """The model's one input (shape without the batch axis, dtype), from its config."""
    if not isinstance(config, dict):
        return None, None
    from ..read.keras import _layer_entries

    entries = _layer_entries(config)
    inputs = [e for e in entries if e.get("class_name") == "InputLayer"]
    candidates = inputs if inputs else entries[:1]
    if len(candidates) != 1:
        return None, None
    cfg = candidates[0].get("config") if isinstance(candidates[0].get("config"), dict) else {}
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if shape is None and not inputs:  # a Keras 3 Sequential without an InputLayer
        build = config.get("build_config") if isinstance(config.get("build_config"), dict) else {}
        shape = build.get("input_shape")
    dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else None
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        return None, dtype
    try:
        dims = tuple(None if s is None else int(s) for s in shape[1:])
    except (TypeError, ValueError):
        return None, dtype
    return dims, dtype


def keras_layers(checkpoint) -> Tuple[List[TFLayer], List[str], KerasFacts]:
    """The model layers of a Keras file (:mod:`tf2pt.read.keras`: each variable's layer, class,
    config and place in the model's order): ``(layers in the model's order, names of inference
    variables no kind explains, facts)``. A ``Bidirectional`` layer is one layer (its backward
    copy's roles are ``reverse_*``); a ``SeparableConv`` is two, its depthwise and its pointwise
    convolution. Without a class (a weights-only file) the roles and shapes decide."""
    config = getattr(checkpoint, "model_config", None)
    if checkpoint.kind in ("keras_h5", "keras_weights_h5"):
        order = "the model's order (the file's layer_names and weight_names)"
    elif config is not None:
        order = "the model's order (the order Keras wrote the layers, as in config.json)"
    else:
        order = "the model's order (the order Keras wrote the layers)"
    shape, dtype = _keras_input(config)
    facts = KerasFacts(order, shape, dtype)
    entries = _keras_entries(config) if config else []
    flattens = [e for e in entries if e.get("class_name") == "Flatten"]
    facts.flatten_channels_last = not any((e.get("config") or {}).get("data_format") == "channels_first"
                                          for e in flattens if isinstance(e.get("config"), dict))
    groups: Dict[str, List[Tuple[str, object]]] = {}
    for name, info in checkpoint.variables.items():
        if info.role != "inference":
            continue
        readable = info.readable_name or name
        layer = info.layer or readable.rpartition("/")[0] or readable
        groups.setdefault(layer, []).append((name, info))
    layers: List[TFLayer] = []
    unknown: List[str] = []
    for layer_name, members in groups.items():
        info0 = members[0][1]
        cls = info0.layer_class
        cfg = info0.layer_config or {}
        kind_cls, kind_cfg = cls, cfg
        if cls == "Bidirectional":  # the wrapped layer says what the weights are
            inner = cfg.get("layer") if isinstance(cfg.get("layer"), dict) else {}
            kind_cls = inner.get("class_name") if isinstance(inner.get("class_name"), str) else None
            kind_cfg = inner.get("config") if isinstance(inner.get("config"), dict) else {}
            if cfg.get("merge_mode", "concat") != "concat":
                facts.notes.append(f"Keras layer {layer_name} is Bidirectional(merge_mode={cfg['merge_mode']!r}); "
                                   "torch's bidirectional layers concatenate")
        elif cls in ("LSTM", "GRU", "SimpleRNN") and cfg.get("go_backwards"):
            facts.notes.append(f"Keras layer {layer_name} is {cls}(go_backwards=True): it reads its input reversed, "
                               "torch's layers do not")
        roles: Dict[str, str] = {}
        bad = False
        for name, info in members:
            readable = info.readable_name or name
            parts = readable.split("/")
            role = _keras_role(parts[-1], kind_cls, layer_name, len(info.shape))
            if role is not None and any(p.startswith("backward_") for p in parts[:-1]):
                role = "reverse_" + role
            if role is None or role in roles:
                bad = True
                break
            roles[role] = name
        if bad:
            unknown.extend(n for n, _ in members)
            continue
        shapes = {role: tuple(checkpoint.variables[v].shape) for role, v in roles.items()}
        order_of = {n: float(i.order if i.order is not None else 0) for n, i in members}
        expected = KERAS_CLASSES.get(kind_cls) if kind_cls else None
        if expected == "separable" or (expected is None and {"depthwise_kernel", "pointwise_kernel"} <= set(roles)):
            halves = _separable_halves(layer_name, roles, shapes, order_of)
            if halves is None:
                unknown.extend(roles.values())
            else:
                layers.extend(halves)
            continue
        kind = classify_tf(shapes, None, layer_name)
        if expected == "layernorm" and set(roles) <= {"gamma", "beta"} and roles:
            kind = "layernorm"
        elif expected in ("conv_transpose",) and kind == "conv":
            kind = "conv_transpose"
        elif expected is not None and expected != kind and not (expected == "gru" and kind == "gru_reset_before"):
            kind = None  # the class and the variables disagree: nothing is guessed
        if kind is None:
            unknown.extend(roles.values())
            continue
        layers.append(TFLayer(layer_name, kind, roles, shapes, min(order_of[v] for v in roles.values())))
        if kind in ("lstm", "gru", "gru_reset_before", "rnn"):
            _recurrent_notes(layer_name, kind_cls or kind.upper(), kind_cfg, facts)
    layers.sort(key=lambda l: (l.order, natural_key(l.scope)))
    return layers, sorted(unknown), facts


def _separable_halves(name, roles, shapes, order_of) -> Optional[List[TFLayer]]:
    if not {"depthwise_kernel", "pointwise_kernel"} <= set(roles) <= {"depthwise_kernel", "pointwise_kernel", "bias"}:
        return None
    dw, pw = shapes["depthwise_kernel"], shapes["pointwise_kernel"]
    if len(dw) not in (3, 4) or len(pw) != len(dw) or any(s != 1 for s in pw[:-2]) or pw[-2] != dw[-2] * dw[-1]:
        return None
    depthwise = TFLayer(f"{name}/depthwise", "depthwise", {"depthwise_kernel": roles["depthwise_kernel"]},
                        {"depthwise_kernel": dw}, order_of[roles["depthwise_kernel"]])
    pw_roles = {"kernel": roles["pointwise_kernel"], **({"bias": roles["bias"]} if "bias" in roles else {})}
    pointwise = TFLayer(f"{name}/pointwise", "conv", pw_roles, {r: shapes["pointwise_kernel" if r == "kernel" else r]
                                                                 for r in pw_roles},
                        order_of[roles["pointwise_kernel"]])
    return [depthwise, pointwise]


def _recurrent_notes(name: str, cls: str, cfg, facts: KerasFacts) -> None:
    """A recurrent layer whose activations torch's nn.LSTM/GRU/RNN do not compute: said in the
    report (the weights map either way; tf2pt.nn's layers compute it)."""
    if not isinstance(cfg, dict):
        return
    def act_name(v):  # a serialized activation ({"class_name": ..., "config": {"name": ...}}): its name
        if isinstance(v, dict):
            inner = v.get("config") if isinstance(v.get("config"), dict) else {}
            return inner.get("name") or v.get("class_name")
        return v

    act, rec = act_name(cfg.get("activation", "tanh")), act_name(cfg.get("recurrent_activation", "sigmoid"))
    if cls == "SimpleRNN":
        rec = "sigmoid"
    if act != "tanh" or rec != "sigmoid":
        facts.notes.append(f"Keras layer {name} uses activation {act!r} / recurrent_activation {rec!r}: torch's "
                           f"nn.{'RNN' if cls == 'SimpleRNN' else cls} hard-codes tanh/sigmoid; tf2pt.nn's layers "
                           "(tf2pt.keras_rules.recurrent_module) compute it")
