"""tf2pt's one dtype table: TensorFlow's ``DataType`` enum, the bytes on disk, the torch dtype a
tensor becomes, and the safetensors code it is written with. No TensorFlow, no torch.

bfloat16 and the float8 types come from ``ml_dtypes``. Quantized types (``qint8``, ...) are read
as their underlying integers. ``resource``, ``variant`` and the packed 4-bit types have no
byte layout a checkpoint reader can decode: reading them raises ``UnsupportedError``.

Everything here but :func:`numpy_dtype` needs no numpy (listing a checkpoint does not import
it); :func:`numpy_dtype` imports numpy (and ml_dtypes) when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional


@dataclass(frozen=True)
class DType:
    name: str  # TF's name, which is also torch's and numpy's where they have the type
    enum: int  # TF's DataType value
    disk: Optional[str]  # numpy dtype as stored (little-endian); "string"; None: no byte layout
    torch: Optional[str] = None  # the torch dtype a tensor of this type becomes; None: none
    safetensors: Optional[str] = None  # safetensors' code; None: safetensors cannot store it

    @property
    def itemsize(self) -> Optional[int]:
        """Bytes per element on disk; ``None`` for strings and undecodable types."""
        if self.disk is None or self.disk == "string":
            return None
        if self.disk.startswith("float8"):
            return 1
        if self.disk == "bfloat16":
            return 2
        return int(self.disk[2:])


_ROWS = [
    DType("float32", 1, "<f4", "float32", "F32"),
    DType("float64", 2, "<f8", "float64", "F64"),
    DType("int32", 3, "<i4", "int32", "I32"),
    DType("uint8", 4, "|u1", "uint8", "U8"),
    DType("int16", 5, "<i2", "int16", "I16"),
    DType("int8", 6, "|i1", "int8", "I8"),
    DType("string", 7, "string"),
    DType("complex64", 8, "<c8", "complex64", "C64"),
    DType("int64", 9, "<i8", "int64", "I64"),
    DType("bool", 10, "|b1", "bool", "BOOL"),
    DType("qint8", 11, "|i1", "int8"),
    DType("quint8", 12, "|u1", "uint8"),
    DType("qint32", 13, "<i4", "int32"),
    DType("bfloat16", 14, "bfloat16", "bfloat16", "BF16"),
    DType("qint16", 15, "<i2", "int16"),
    DType("quint16", 16, "<u2", "uint16"),
    DType("uint16", 17, "<u2", "uint16", "U16"),
    DType("complex128", 18, "<c16", "complex128"),
    DType("float16", 19, "<f2", "float16", "F16"),
    DType("resource", 20, None),
    DType("variant", 21, None),
    DType("uint32", 22, "<u4", "uint32", "U32"),
    DType("uint64", 23, "<u8", "uint64", "U64"),
    DType("float8_e5m2", 24, "float8_e5m2", "float8_e5m2", "F8_E5M2"),
    DType("float8_e4m3fn", 25, "float8_e4m3fn", "float8_e4m3fn", "F8_E4M3"),
    DType("float8_e4m3fnuz", 26, "float8_e4m3fnuz", "float8_e4m3fnuz"),
    DType("float8_e4m3b11fnuz", 27, "float8_e4m3b11fnuz"),
    DType("float8_e5m2fnuz", 28, "float8_e5m2fnuz", "float8_e5m2fnuz"),
    DType("int4", 29, None),
    DType("uint4", 30, None),
    DType("int2", 31, None),
    DType("uint2", 32, None),
]

BY_ENUM: Dict[int, DType] = {d.enum: d for d in _ROWS}
BY_NAME: Dict[str, DType] = {d.name: d for d in _ROWS}
NAMES: Dict[int, str] = {d.enum: d.name for d in _ROWS}

#: the dtypes a converted or dumped tensor can have: torch's own (the writers know their sizes)
TORCH: FrozenSet[str] = frozenset(d.name for d in _ROWS if d.torch == d.name)
#: the dtypes numpy and torch share: torch.from_numpy takes them directly, and either framework
#: produces the same bytes for a converted tensor
NUMPY_NATIVE: FrozenSet[str] = frozenset(
    d.name for d in _ROWS if d.name in TORCH and d.disk is not None and d.disk[0] in "<|")


# -- by TF enum (readers) ------------------------------------------------------------------------


def name(enum: int) -> str:
    """``"float32"`` for 1, ...; a reference type (100 + n, never stored in checkpoints) is
    ``"float32_ref"``; anything else ``"unknown (enum N)"`` (and unsupported)."""
    if enum in NAMES:
        return NAMES[enum]
    if enum - 100 in NAMES:
        return NAMES[enum - 100] + "_ref"
    return f"unknown (enum {enum})"


def is_supported(enum: int) -> bool:
    """Whether tf2pt can decode the dtype (numbers, bool, strings)."""
    entry = BY_ENUM.get(enum)
    return entry is not None and entry.disk is not None


def is_string(enum: int) -> bool:
    return enum == 7


def numpy_dtype(enum: int, big_endian: bool = False) -> "Optional[np.dtype]":
    """The numpy dtype stored on disk, ``None`` when unsupported; strings give ``object``."""
    import numpy as np

    entry = BY_ENUM.get(enum)
    if entry is None or entry.disk is None:
        return None
    spec = entry.disk
    if spec == "string":
        return np.dtype(object)
    if spec.startswith(("bfloat16", "float8")):
        import ml_dtypes

        dt = np.dtype(getattr(ml_dtypes, spec))
        return dt.newbyteorder(">") if big_endian else dt
    dt = np.dtype(spec)
    return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


def numeric_on_disk(enum: int) -> bool:
    """Whether ``enum`` is stored as fixed-size numbers (what :func:`numpy_dtype` gives a plain
    dtype for), without importing numpy: not a string, not unsupported."""
    entry = BY_ENUM.get(enum)
    return entry is not None and entry.disk is not None and entry.disk != "string"


def itemsize(enum: int) -> Optional[int]:
    """Bytes per element on disk; ``None`` for strings and unsupported dtypes."""
    entry = BY_ENUM.get(enum)
    return entry.itemsize if entry is not None else None


# -- by name (writers) ---------------------------------------------------------------------------


def dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32``, ``np.dtype("float32")`` or ``"float32"``."""
    return dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")


def size_of(dtype) -> int:
    """Bytes per element of a dtype tf2pt writes (by name, or a torch/numpy dtype)."""
    entry = BY_NAME.get(dtype_name(dtype))
    if entry is None or entry.itemsize is None:
        raise KeyError(f"no byte size for dtype {dtype_name(dtype)!r}")
    return entry.itemsize


def safetensors_code(dtype) -> Optional[str]:
    """safetensors' code for a dtype (``"F32"``), ``None`` where safetensors cannot store it."""
    entry = BY_NAME.get(dtype_name(dtype))
    return entry.safetensors if entry is not None else None
