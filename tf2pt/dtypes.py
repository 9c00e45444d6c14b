"""TensorFlow ``DataType`` enum values -> names and numpy dtypes (no TensorFlow needed).

bfloat16 and the float8 types come from ``ml_dtypes``. Quantized types (``qint8``, ...) are read
as their underlying integers. ``resource``, ``variant`` and the packed 4-bit types have no
byte layout a checkpoint reader can decode: reading them raises ``UnsupportedError``.

:func:`name`, :func:`itemsize`, :func:`is_string` and :func:`is_supported` need no numpy (listing
a checkpoint does not import it); :func:`numpy_dtype` imports numpy (and ml_dtypes) when called.
"""

from __future__ import annotations

from typing import Dict, Optional

# enum value -> (name, numpy dtype string or None for unsupported, "string" for DT_STRING)
_TABLE = {
    1: ("float32", "<f4"),
    2: ("float64", "<f8"),
    3: ("int32", "<i4"),
    4: ("uint8", "|u1"),
    5: ("int16", "<i2"),
    6: ("int8", "|i1"),
    7: ("string", "string"),
    8: ("complex64", "<c8"),
    9: ("int64", "<i8"),
    10: ("bool", "|b1"),
    11: ("qint8", "|i1"),
    12: ("quint8", "|u1"),
    13: ("qint32", "<i4"),
    14: ("bfloat16", "bfloat16"),
    15: ("qint16", "<i2"),
    16: ("quint16", "<u2"),
    17: ("uint16", "<u2"),
    18: ("complex128", "<c16"),
    19: ("float16", "<f2"),
    20: ("resource", None),
    21: ("variant", None),
    22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
    24: ("float8_e5m2", "float8_e5m2"),
    25: ("float8_e4m3fn", "float8_e4m3fn"),
    26: ("float8_e4m3fnuz", "float8_e4m3fnuz"),
    27: ("float8_e4m3b11fnuz", "float8_e4m3b11fnuz"),
    28: ("float8_e5m2fnuz", "float8_e5m2fnuz"),
    29: ("int4", None),
    30: ("uint4", None),
    31: ("int2", None),
    32: ("uint2", None),
}

NAMES: Dict[int, str] = {k: v[0] for k, v in _TABLE.items()}


def name(enum: int) -> str:
    """``"float32"`` for 1, ...; unknown values become ``"dtype<N>"`` (and are unsupported)."""
    enum &= 0x7F  # reference types (100 + n) are not stored in checkpoints, but be lenient
    return NAMES.get(enum, f"dtype{enum}")


def is_supported(enum: int) -> bool:
    """Whether tf2pt can decode the dtype (numbers, bool, strings)."""
    entry = _TABLE.get(enum)
    return entry is not None and entry[1] is not None


def is_string(enum: int) -> bool:
    return enum == 7


def numpy_dtype(enum: int, big_endian: bool = False) -> "Optional[np.dtype]":
    """The numpy dtype stored on disk, ``None`` when unsupported; strings give ``object``."""
    import numpy as np

    entry = _TABLE.get(enum)
    if entry is None or entry[1] is None:
        return None
    spec = entry[1]
    if spec == "string":
        return np.dtype(object)
    if spec.startswith(("bfloat16", "float8")):
        import ml_dtypes

        dt = np.dtype(getattr(ml_dtypes, spec))
        return dt.newbyteorder(">") if big_endian else dt
    dt = np.dtype(spec)
    return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


def itemsize(enum: int) -> Optional[int]:
    """Bytes per element on disk; ``None`` for strings and unsupported dtypes."""
    entry = _TABLE.get(enum)
    if entry is None or entry[1] is None or entry[1] == "string":
        return None
    spec = entry[1]
    if spec.startswith("float8"):
        return 1
    if spec == "bfloat16":
        return 2
    return int(spec[2:])
