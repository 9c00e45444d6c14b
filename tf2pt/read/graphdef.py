"""Frozen TF1 GraphDefs (``.pb``) as a checkpoint source: each ``Const`` node is a variable.

A frozen graph has no checkpoint: ``freeze_graph`` replaced every variable by a ``Const`` node
of the same name (keeping the ``<name>/read`` Identity that read it). tf2pt lists every
``Const`` under its node name and classifies it:

* ``inference`` -- a frozen variable: read through a ``<name>/read`` Identity, or a floating
  point tensor with more than one element;
* ``constant`` -- graph plumbing: shape vectors, axes, dropout keep probabilities, scalars.

Wire format (``tensorflow/core/framework/*.proto``): ``GraphDef.node`` = 1; ``NodeDef`` name = 1,
op = 2, input = 3, attr = 5 (map entry key = 1, value = 2); ``AttrValue.tensor`` = 8;
``TensorProto`` dtype = 1, tensor_shape = 2, tensor_content = 4, float_val = 5, double_val = 6,
int_val = 7, string_val = 8, scomplex_val = 9, int64_val = 10, bool_val = 11, dcomplex_val = 12,
half_val = 13, uint32_val = 16, uint64_val = 17. A typed list shorter than the shape is padded
with its last value (TF's rule for splat constants). GraphDefs carry no checksums.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import dtypes
from ._proto import ProtoError, as_bytes, as_int, as_int64, as_str, iter_fields, packed_varints, tensor_shape
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from .base import Checkpoint, VariableInfo
from .files import read_regular

MAX_SPLAT_BYTES = 1 << 30  # a constant expanded from fewer values than elements may not exceed this


def expansion_budget(file_size: int) -> int:
    """The most bytes all of a graph's constants may expand to beyond what the file stores
    (a TensorProto may hold one value for a huge shape: a 168-byte file could claim gigabytes)."""
    return 64 * file_size + (1 << 30)


@dataclass
class Node:
    name: str
    op: str
    inputs: List[str]
    attrs: Dict[str, bytes]


@dataclass
class _Const:
    dtype: int
    shape: Tuple[int, ...]
    content: Optional[bytes]
    values: Dict[int, List]  # field number -> raw values


def parse_graphdef(data: bytes) -> List[Node]:
    nodes = []
    for number, _, value in iter_fields(data):
        if number != 1:
            continue
        name, op, inputs, attrs = "", "", [], {}
        for n2, _, v2 in iter_fields(as_bytes(value, "node")):
            if n2 == 1:
                name = as_str(v2, "node name")
            elif n2 == 2:
                op = as_str(v2, "op")
            elif n2 == 3:
                inputs.append(as_str(v2, "input"))
            elif n2 == 5:
                key, val = "", b""
                for n3, _, v3 in iter_fields(as_bytes(v2, "attr")):
                    if n3 == 1:
                        key = as_str(v3, "attr key")
                    elif n3 == 2:
                        val = as_bytes(v3, "attr value")
                attrs[key] = val
        nodes.append(Node(name, op, inputs, attrs))
    return nodes


def attr_tensor(attr: bytes) -> bytes:
    for number, _, value in iter_fields(attr):
        if number == 8:
            return as_bytes(value, "tensor")
    raise ProtoError("attr has no tensor")


def parse_tensor(buf: bytes) -> _Const:
    dtype, shape, content, values = 0, (), None, {}
    for number, wire, value in iter_fields(buf):
        if number == 1:
            dtype = as_int(value, "dtype")
        elif number == 2:
            shape = tensor_shape(as_bytes(value, "shape"))
        elif number == 4:
            content = as_bytes(value, "tensor_content")
        elif number in (5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17):
            values.setdefault(number, []).append((wire, value))
    return _Const(dtype, shape, content, values)


def _typed_values(number: int, items) -> list:
    """Decode one repeated typed field (packed or not) into Python numbers / bytes."""
    out: list = []
    for wire, value in items:
        if number in (5, 9):  # float, complex64 parts: fixed32
            if wire == 5:
                out.append(struct.unpack("<f", int(value).to_bytes(4, "little"))[0])
            else:
                raw = as_bytes(value)
                if len(raw) % 4:
                    raise ProtoError("packed float field has a bad length")
                out.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif number in (6, 12):  # double: fixed64
            if wire == 1:
                out.append(struct.unpack("<d", int(value).to_bytes(8, "little"))[0])
            else:
                raw = as_bytes(value)
                if len(raw) % 8:
                    raise ProtoError("packed double field has a bad length")
                out.extend(struct.unpack(f"<{len(raw) // 8}d", raw))
        elif number == 8:
            out.append(as_bytes(value))
        else:  # varints: int_val, int64_val, bool_val, half_val (bit patterns), uint32/64
            out.extend(packed_varints(value))
    return out


_FIELD_FOR = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 7: 8, 8: 9, 9: 10, 10: 11, 11: 7, 12: 7, 13: 7, 14: 13, 15: 7,
              16: 7, 17: 7, 18: 12, 19: 13, 22: 16, 23: 17}


def const_array(c: _Const, label: str) -> np.ndarray:
    """The value of a Const node. Raises ValueError/ProtoError with a reason on bad content."""
    np_dtype = dtypes.numpy_dtype(c.dtype)
    if np_dtype is None:
        raise UnsupportedError(f"constant {label} has dtype {dtypes.name(c.dtype)}, which has no array form")
    n = 1
    for d in c.shape:
        if d < 0:
            raise ValueError(f"constant {label} has a negative dimension")
        n *= d
    if c.content is not None and np_dtype != object:
        if len(c.content) != n * np_dtype.itemsize:
            raise ValueError(f"constant {label}: {len(c.content)} bytes of content for shape {list(c.shape)} x "
                             f"{dtypes.name(c.dtype)} ({n * np_dtype.itemsize} bytes)")
        return np.frombuffer(c.content, dtype=np_dtype).reshape(c.shape)
    field = _FIELD_FOR.get(c.dtype)
    vals = _typed_values(field, c.values.get(field, [])) if field else []
    if np_dtype == object:
        if len(vals) not in (0, 1, n) and len(vals) != n:
            raise ValueError(f"constant {label} has {len(vals)} strings for {n} elements")
        if len(vals) < n and n * 8 > MAX_SPLAT_BYTES:  # one object pointer per element at least
            raise ValueError(f"constant {label} would expand {len(vals)} string(s) to shape {list(c.shape)}")
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = vals[min(i, len(vals) - 1)] if vals else b""
        return out.reshape(c.shape)
    if np_dtype.kind == "c":
        vals = [complex(vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
    elif np_dtype.kind == "i":
        vals = [as_int64(v) for v in vals]  # negative numbers arrive as 64-bit two's complement
    if len(vals) > n:
        raise ValueError(f"constant {label} has {len(vals)} values for {n} elements")
    if len(vals) < n and n * np_dtype.itemsize > MAX_SPLAT_BYTES:
        raise ValueError(f"constant {label} would expand {len(vals)} value(s) to shape {list(c.shape)}")
    if np_dtype.name in ("float16", "bfloat16"):
        arr = np.array(vals, dtype=np.uint16).view(np_dtype)  # half_val holds bit patterns
    else:
        arr = np.array(vals, dtype=np_dtype) if vals else np.zeros(0, dtype=np_dtype)
    if len(arr) < n:
        fill = arr[-1] if len(arr) else np.zeros((), dtype=np_dtype)
        arr = np.concatenate([arr, np.full(n - len(arr), fill, dtype=np_dtype)])
    return arr.reshape(c.shape)


class GraphDefCheckpoint(Checkpoint):
    """A frozen GraphDef whose ``Const`` nodes are read as variables."""

    kind = "graphdef"

    def __init__(self, path):
        super().__init__(path)
        if os.fspath(path).endswith(".pbtxt"):
            raise UnsupportedError("text-format GraphDefs are not supported", path=path,
                                   hint="convert it to binary with tf.io.write_graph(..., as_text=False)")
        data = read_regular(path, "graph file", limit=2 << 30)  # a protobuf cannot exceed 2 GiB
        if not data:
            raise CorruptCheckpointError("empty file (0 bytes), not a GraphDef", path=path)
        try:
            self.nodes = parse_graphdef(data)
        except ProtoError as exc:
            raise CorruptCheckpointError(f"not a valid frozen GraphDef ({exc})", path=path,
                                         hint="pass a binary frozen graph (.pb) or a checkpoint") from None
        if not self.nodes:
            raise CorruptCheckpointError("no graph nodes: not a frozen GraphDef", path=path,
                                         hint="pass a binary frozen graph (.pb) or a checkpoint")
        self.files = [Path(os.fspath(path))]
        self.notes.append("frozen GraphDef: Const nodes are read as variables; GraphDefs carry no checksums")
        names = {n.name for n in self.nodes}
        consumers: Dict[str, List[Node]] = {}
        for node in self.nodes:
            for inp in node.inputs:
                consumers.setdefault(inp.lstrip("^").split(":")[0], []).append(node)
        self._consts: Dict[str, _Const] = {}
        expanded = 0  # bytes the constants would take beyond their stored values
        for node in self.nodes:
            if node.op != "Const":
                continue
            if node.name in self._consts:
                raise CorruptCheckpointError(f"two nodes named {node.name!r}", path=path)
            try:
                c = parse_tensor(attr_tensor(node.attrs.get("value", b"")))
            except ProtoError as exc:
                raise CorruptCheckpointError(f"constant {node.name!r} is malformed ({exc})", path=path) from None
            self._consts[node.name] = c
            np_dtype = dtypes.numpy_dtype(c.dtype)
            n = 1
            for d in c.shape:
                n *= max(d, 0)
            frozen_variable = f"{node.name}/read" in names and any(
                x.name == f"{node.name}/read" and x.op == "Identity" for x in consumers.get(node.name, []))
            floating = np_dtype is not None and np_dtype.kind in "fc" and np_dtype != object
            if frozen_variable or (floating and n > 1):
                role, reason = "inference", "frozen variable" if frozen_variable else "weight constant"
            else:
                role, reason = "constant", "graph constant"
            if c.content is not None:
                nbytes = len(c.content)
            else:
                nbytes = n * np_dtype.itemsize if np_dtype is not None and np_dtype != object else 0
                stored = sum(len(v) if isinstance(v, bytes) else 8 for items in c.values.values() for _, v in items)
                expanded += max(0, (nbytes if np_dtype is not None and np_dtype != object else 8 * n) - stored)
            self.variables[node.name] = VariableInfo(node.name, dtypes.name(c.dtype), tuple(c.shape), nbytes, role, reason)
        if expanded > expansion_budget(len(data)):
            raise CorruptCheckpointError(
                f"its constants would expand to {expanded} bytes from a {len(data)}-byte file (shapes filled from "
                "single values)", path=path, hint="a real frozen graph stores its weights in full; do not use this one")
        self.variables = dict(sorted(self.variables.items()))

    def read(self, name: str, check_crc: bool = True) -> np.ndarray:
        c = self._consts.get(name)
        if c is None:
            raise CheckpointNotFoundError(f"no constant named {name!r}", path=self.path)
        try:
            return const_array(c, repr(name))
        except UnsupportedError as exc:
            raise UnsupportedError(exc.problem, path=self.path) from None
        except (ValueError, OverflowError, struct.error, ProtoError) as exc:  # values that do not fit the dtype
            raise CorruptCheckpointError(f"constant {name!r} is malformed ({exc})", path=self.path) from None

    def node(self, name: str) -> Optional[Node]:
        return next((n for n in self.nodes if n.name == name), None)
