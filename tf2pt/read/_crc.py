"""CRC32C (Castagnoli) with TensorFlow's masking, through google-crc32c's C implementation."""

from __future__ import annotations

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def mask(crc: int) -> int:
    """TF/LevelDB mask: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _buffer(data):
    # the C extension takes bytes and numpy arrays but not memoryviews of memory maps;
    # a uint8 view of the same memory costs no copy
    if isinstance(data, bytes):
        return data
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8)


def crc32c(data, crc: int = 0) -> int:
    """Plain CRC32C of ``data`` (any buffer), continuing from ``crc``."""
    return google_crc32c.extend(crc, _buffer(data)) if crc else google_crc32c.value(_buffer(data))


def masked_crc32c(data) -> int:
    return mask(crc32c(data))
