"""A minimal protocol-buffer wire-format decoder (no ``protobuf`` package, no generated code).

tf2pt reads a handful of TensorFlow messages (bundle entries, tensor shapes, the object graph,
GraphDef). Each is decoded field by field from the wire format with the functions here. Every
malformation raises :class:`ProtoError`; callers turn it into a typed tf2pt error naming the file.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple, Union

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_FIXED32 = 0, 1, 2, 5

Value = Union[int, bytes]


class ProtoError(ValueError):
    """Bytes that are not a well-formed protocol buffer."""


def read_varint(buf, pos: int, end: int) -> Tuple[int, int]:
    """Decode a varint at ``pos``; returns ``(value, new_pos)``."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:  # one byte: most tags, dtypes, small sizes
            return b, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def iter_fields(buf, start: int = 0, end: int = -1) -> Iterator[Tuple[int, int, Value]]:
    """Yield ``(field_number, wire_type, value)``; bytes fields as ``bytes``, numbers as ``int``.

    Groups (wire types 3/4) are rejected: no message tf2pt reads uses them.
    """
    if end < 0:
        end = len(buf)
    pos = start
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire == WIRE_BYTES:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise ProtoError("length-delimited field runs past the end")
            value = bytes(buf[pos:pos + length])
            pos += length
        elif wire == WIRE_FIXED32:
            if pos + 4 > end:
                raise ProtoError("truncated fixed32")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire == WIRE_FIXED64:
            if pos + 8 > end:
                raise ProtoError("truncated fixed64")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        yield number, wire, value


def as_int(value: Value, what: str = "number") -> int:
    """A numeric field (varint or fixed) as a Python int; a length-delimited value is malformed."""
    if not isinstance(value, int):
        raise ProtoError(f"{what} is length-delimited, expected a number")
    return value


def as_int64(value: Value, what: str = "number") -> int:
    """A varint as a signed 64-bit integer (two's complement)."""
    value = as_int(value, what) & ((1 << 64) - 1)
    return value - (1 << 64) if value >= 1 << 63 else value


def as_str(value: Value, what: str = "string") -> str:
    if not isinstance(value, bytes):
        raise ProtoError(f"{what} is not length-delimited")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{what} is not valid UTF-8") from None


def as_bytes(value: Value, what: str = "message") -> bytes:
    if not isinstance(value, bytes):
        raise ProtoError(f"{what} is not length-delimited")
    return value


def packed_varints(value: Value) -> List[int]:
    """A repeated varint field: packed (bytes) or one unpacked element (int)."""
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = read_varint(value, pos, len(value))
        out.append(v)
    return out


# -------------------------------------------------------------------------------------------
# Messages shared by several readers
# -------------------------------------------------------------------------------------------


#: the highest rank a stored tensor may have: TensorFlow allows 254, numpy only 64, and no
#: model weight has more than a handful of dimensions
MAX_RANK = 32
#: the most elements a stored tensor can have (counting its non-zero dimensions: a shape such
#: as ``[2**62, 0]`` holds nothing but still claims an impossible extent)
MAX_ELEMENTS = 1 << 48


def tensor_shape(buf: bytes) -> Tuple[int, ...]:
    """``TensorShapeProto``: ``dim`` (2) = {``size`` (1)}; ``unknown_rank`` (3). A rank above
    :data:`MAX_RANK` or more than :data:`MAX_ELEMENTS` elements is malformed."""
    dims = []
    extent = 1
    for number, _, value in iter_fields(buf):
        if number == 2:
            size = 0
            for n2, _, v2 in iter_fields(as_bytes(value, "dim")):
                if n2 == 1:
                    size = as_int64(v2, "dimension size")
            dims.append(size)
            if len(dims) > MAX_RANK:
                raise ProtoError(f"shape of rank above {MAX_RANK}")
            if size > 0:
                extent *= size
                if extent > MAX_ELEMENTS:
                    raise ProtoError("shape claims more than 2**48 elements")
        elif number == 3 and as_int(value, "unknown_rank"):
            raise ProtoError("shape of unknown rank")
    return tuple(dims)
