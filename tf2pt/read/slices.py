"""OrderedCode, for the index keys of partitioned-variable slices
(``tensorflow/core/lib/strings/ordered_code``). Pure functions of bytes; no numpy."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


def _num_increasing(value: int) -> bytes:
    """Unsigned: a length byte, then the big-endian bytes."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def _escape(value: bytes) -> bytes:
    out = bytearray()
    for b in value:
        if b == 0x00:
            out += b"\x00\xff"
        elif b == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(b)
    return bytes(out) + b"\x00\x01"


_HEADER_BITS = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0),
                (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]


def _signed_num_increasing(value: int) -> bytes:
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(_HEADER_BITS[1][0] ^ value) & 0xFF])
    length = (x.bit_length() + 7) // 7
    buf = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big"))  # sign-extended to 10 bytes
    begin = buf[10 - length:]
    begin[0] ^= _HEADER_BITS[length][0]
    begin[1] ^= _HEADER_BITS[length][1]
    return bytes(begin)


def slice_key(name: str, extents: Sequence[Tuple[int, Optional[int]]]) -> bytes:
    """The index key TF stores one slice of a partitioned variable under.

    ``extents`` holds ``(start, length)`` per dimension; ``length=None`` is a full dimension
    (a ``TensorSliceProto`` extent without ``length``), encoded like TF's ``TensorSlice`` as
    ``start`` (0) and length ``-1``.
    """
    key = _num_increasing(0) + _escape(name.encode("utf-8")) + _num_increasing(len(extents))
    for start, length in extents:
        key += _signed_num_increasing(start) + _signed_num_increasing(-1 if length is None else length)
    return key


def _read_num_increasing(key: bytes, pos: int) -> Tuple[int, int]:
    n = key[pos]
    if n > 8 or pos + 1 + n > len(key):
        raise ValueError("bad unsigned number")
    return int.from_bytes(key[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def _read_escaped(key: bytes, pos: int) -> Tuple[bytes, int]:
    out = bytearray()
    while pos + 1 < len(key):
        b, nxt = key[pos], key[pos + 1]
        if b == 0x00:
            if nxt == 0x01:
                return bytes(out), pos + 2
            if nxt != 0xFF:
                raise ValueError("bad escape")
            out.append(0x00)
            pos += 2
        elif b == 0xFF:
            if nxt != 0x00:
                raise ValueError("bad escape")
            out.append(0xFF)
            pos += 2
        else:
            out.append(b)
            pos += 1
    raise ValueError("unterminated string")


def _read_signed_num_increasing(key: bytes, pos: int) -> Tuple[int, int]:
    if pos >= len(key):
        raise ValueError("missing signed number")
    first = key[pos]
    # the first two bytes; past the end, bits opposite to the sign bit (they end the length count)
    window = first << 8 | (key[pos + 1] if pos + 1 < len(key) else (0x00 if first & 0x80 else 0xFF))
    negative = not window & 0x8000
    if negative:
        window ^= 0xFFFF
    length = min(16 - (window ^ 0xFFFF).bit_length(), 10)  # leading bits equal to the sign bit
    raw = key[pos:pos + length]
    if len(raw) != length:
        raise ValueError("truncated signed number")
    bits = int.from_bytes(raw, "big") ^ (_HEADER_BITS[length][0] << 8 * (length - 1))
    if length >= 2:
        bits ^= _HEADER_BITS[length][1] << 8 * (length - 2)
    value = bits - (1 << 8 * length) if negative else bits  # two's complement of the low bytes
    if not -(1 << 63) <= value < (1 << 63) or _signed_num_increasing(value) != raw:
        raise ValueError("non-canonical signed number")
    return value, pos + length


def parse_slice_key(key: bytes) -> Optional[Tuple[str, List[Tuple[int, Optional[int]]]]]:
    """Inverse of :func:`slice_key`: ``(name, extents)``, or ``None`` if ``key`` is not one."""
    try:
        zero, pos = _read_num_increasing(key, 0)
        if zero != 0:
            return None
        name, pos = _read_escaped(key, pos)
        rank, pos = _read_num_increasing(key, pos)
        extents: List[Tuple[int, Optional[int]]] = []
        for _ in range(rank):
            start, pos = _read_signed_num_increasing(key, pos)
            length, pos = _read_signed_num_increasing(key, pos)
            extents.append((start, None if length == -1 else length))
        if pos != len(key) or rank == 0:
            return None
        return name.decode("utf-8"), extents
    except (ValueError, IndexError):
        return None
