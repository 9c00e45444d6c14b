"""Byte sizes as people write them: ``4GiB``, ``512M``, ``1.5g``, ``100000``."""

from __future__ import annotations

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"4GiB"`` -> 4294967296. Units are binary (``k``/``m``/``g``/``t``, with or without ``i``
    and ``b``); a bare number is bytes. Raises ``ValueError`` for anything else."""
    t = str(text).strip().lower()
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    scale = _UNITS.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in _UNITS else t
    value = float(number)  # ValueError for junk
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a size: {text!r}")
    return int(value * scale)


def format_bytes(n: float) -> str:
    """``4294967296`` -> ``"4.00 GiB"``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
