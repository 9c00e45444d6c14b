"""Variable tables for ``tf2pt inspect``: select rows, compute stats, render as text/CSV/JSON/Markdown.

Rendering needs only the standard library (and numpy for ``--stats``); :func:`inspect` returns a
pandas DataFrame and imports pandas itself.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any, Dict, List, Optional

from .errors import InputError
from .read import Checkpoint, VariableInfo

STAT_KEYS = ("min", "max", "mean", "std", "nan", "inf")


def select(checkpoint: Checkpoint, all: bool = False, filter: Optional[str] = None):
    """``(shown, hidden)``: variables passing ``filter`` (regex, searched in the stored name and
    the readable name); training-only ones (and a frozen graph's constants) only with ``all``.
    ``hidden`` counts the rows left out, by role."""
    rx = None
    if filter:
        try:
            rx = re.compile(filter)
        except re.error as exc:
            raise InputError(f"--filter {filter!r} is not a valid regular expression ({exc})") from None
    shown: List[VariableInfo] = []
    hidden: Dict[str, int] = {}
    for info in checkpoint.variables.values():
        if rx and not (rx.search(info.name) or (info.readable_name and rx.search(info.readable_name))):
            continue
        if info.role != "inference" and not all:
            hidden[info.role] = hidden.get(info.role, 0) + 1
            continue
        shown.append(info)
    return shown, hidden


def check_all(checkpoint: Checkpoint) -> int:
    """Read every variable (checking CRC32Cs where the format has them); returns the count.
    Raises the reader's typed error at the first bad one."""
    for name in checkpoint.variables:
        checkpoint.read(name, check_crc=True)
    return len(checkpoint.variables)


def stats(checkpoint: Checkpoint, info: VariableInfo) -> Dict[str, Any]:
    """min/max/mean/std and NaN/Inf counts (float64 accumulation); empty for strings."""
    import numpy as np

    if info.dtype == "string":
        return {}
    a = checkpoint.read(info.name)  # unsupported dtypes (variant, resource) raise here
    if a.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "nan": 0, "inf": 0}
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    if a.dtype.kind == "c":
        a = np.abs(a)
    x = a.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    nan = int(np.isnan(x).sum())
    inf = int(np.isinf(x).sum())
    xf = x[finite] if not finite.all() else x
    if xf.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "nan": nan, "inf": inf}
    return {"min": float(xf.min()), "max": float(xf.max()), "mean": float(xf.mean()), "std": float(xf.std()),
            "nan": nan, "inf": inf}


def rows(checkpoint: Checkpoint, shown: List[VariableInfo], with_stats: bool = False) -> List[Dict[str, Any]]:
    out = []
    for v in shown:
        row: Dict[str, Any] = {
            "name": v.name,
            "shape": list(v.shape),
            "dtype": v.dtype,
            "params": v.num_elements,
            "bytes": v.nbytes,
            "role": v.role,
            "role_reason": v.role_reason,
        }
        if v.readable_name is not None:
            row["readable_name"] = v.readable_name
        if v.slot_of is not None:
            row["slot_of"] = v.slot_of
            row["slot_name"] = v.slot_name
        if v.partitions:
            row["partitions"] = v.partitions
        for extra in ("layer", "layer_class", "layer_config", "order"):
            if getattr(v, extra, None) is not None:
                row[extra] = getattr(v, extra)
        if with_stats:
            row.update(stats(checkpoint, v))
        out.append(row)
    return out


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TiB"


def _fmt_stat(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.4g}"
    return f"{x:.3e}"


def _columns(data: List[Dict[str, Any]], with_stats: bool, readable: bool) -> List[str]:
    cols = ["name"] + (["readable_name"] if readable else []) + ["shape", "dtype", "params", "bytes", "role"]
    if with_stats:
        cols += list(STAT_KEYS)
    return cols


def _cell(row: Dict[str, Any], col: str, text: bool) -> str:
    value = row.get(col)
    if col == "shape":
        return "[" + ", ".join(map(str, value)) + "]"
    if col == "role":
        return value if value == "inference" else f"{value}: {row['role_reason']}"
    if col == "bytes" and text:
        return human_bytes(value)
    if col == "params" and text:
        return f"{value:,}"
    if col in STAT_KEYS:
        return _fmt_stat(value) if text else ("" if value is None else str(value))
    return "" if value is None else str(value)


def totals(data: List[Dict[str, Any]]) -> Dict[str, int]:
    return {"variables": len(data), "params": sum(r["params"] for r in data), "bytes": sum(r["bytes"] for r in data)}


_HIDDEN_NAMES = {"training": ("training-only variable", "training-only variables"),
                 "constant": ("graph constant", "graph constants")}


def footer(data: List[Dict[str, Any]], hidden: Dict[str, int]) -> str:
    t = totals(data)
    text = f"{t['variables']} variables, {t['params']:,} parameters, {human_bytes(t['bytes'])} shown"
    parts = [f"{n} {_HIDDEN_NAMES.get(role, (role, role))[n != 1]}" for role, n in sorted(hidden.items(), key=lambda kv: kv[0] != "training")]
    if parts:
        text += f"; {' and '.join(parts)} hidden (use --all)"
    return text


def render(checkpoint: Checkpoint, data: List[Dict[str, Any]], hidden: Dict[str, int], fmt: str = "table",
           with_stats: bool = False) -> str:
    readable = any("readable_name" in r for r in data)
    cols = _columns(data, with_stats, readable)
    if fmt == "json":
        doc = {"checkpoint": checkpoint.path, "prefix": checkpoint.prefix, "kind": checkpoint.kind,
               "variables": data, "hidden": sum(hidden.values()), "hidden_by_role": hidden, "totals": totals(data),
               "notes": checkpoint.notes}
        return json.dumps(doc, indent=2, allow_nan=False, default=_json_default)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        csv_cols = [c for c in cols if c != "role"] + ["role", "role_reason"]
        writer.writerow(csv_cols)
        for r in data:
            writer.writerow([_cell(r, c, False) if c not in ("role", "role_reason") else r[c] for c in csv_cols])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(r, c, True) for c in cols] for r in data]
    if fmt == "markdown":
        esc = lambda s: s.replace("|", "\\|")
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
        lines += ["", footer(data, hidden)]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    right = {"params", "bytes", *STAT_KEYS}
    line = lambda vals: "  ".join(v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(vals, widths, cols)).rstrip()
    out = [line(cols), line(["-" * w for w in widths])] + [line(row) for row in cells]
    out.append(footer(data, hidden))
    out += [f"note: {n}" for n in checkpoint.notes]
    return "\n".join(out)


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def inspect(path, all: bool = False, filter: Optional[str] = None, stats: bool = False, backend: str = "native"):
    """The variable table of a checkpoint as a pandas DataFrame (one row per variable)."""
    import pandas as pd

    from .read import open_checkpoint

    with open_checkpoint(path, backend=backend) as ckpt:
        shown, _ = select(ckpt, all=all, filter=filter)
        data = rows(ckpt, shown, with_stats=stats)
    frame = pd.DataFrame(data)
    if not data:
        frame = pd.DataFrame(columns=["name", "shape", "dtype", "params", "bytes", "role", "role_reason"])
    return frame
