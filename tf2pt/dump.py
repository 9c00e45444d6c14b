"""``tf2pt dump``: the tutorial's intermediate products -- a CSV of variables and the tensors under
their TF names, in TF layout (``.safetensors`` streamed from the memory map, or ``.pth``)."""

from __future__ import annotations

import csv
from typing import Any, Dict, List, Optional, Tuple

from . import table
from ._atomic import atomic_output
from .errors import UnsupportedError
from .reader import open_checkpoint

# tf2pt dtype name -> torch dtype attribute (None: no torch form)
TORCH_DTYPES = {
    "float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": "float64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "complex64": "complex64", "complex128": "complex128",
    "qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16", "qint32": "int32",
    "float8_e5m2": "float8_e5m2", "float8_e4m3fn": "float8_e4m3fn",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
}


def torch_dtype(name: str):
    import torch

    attr = TORCH_DTYPES.get(name)
    return getattr(torch, attr, None) if attr else None


def write_csv(path, data: List[Dict[str, Any]], force: bool = False) -> None:
    cols = ["name", "shape", "dtype", "params", "bytes", "role", "role_reason", "readable_name"]
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in data:
                w.writerow([r["name"], "[" + ", ".join(map(str, r["shape"])) + "]", r["dtype"], r["params"], r["bytes"],
                            r["role"], r["role_reason"], r.get("readable_name", "")])


def dump(path, csv_path: Optional[str] = None, state_path: Optional[str] = None, all: bool = False,
         filter: Optional[str] = None, backend: str = "native", force: bool = False, progress: bool = False):
    """Write the CSV and/or the TF-named state dict. Returns counts and the skipped variables."""
    from . import writer
    from ._progress import progress_bar
    from .conversion import numpy_to_torch

    skipped: List[Tuple[str, str]] = []
    tensors = 0
    with open_checkpoint(path, backend=backend) as ckpt:
        shown, _ = table.select(ckpt, all=all, filter=filter)
        data = table.rows(ckpt, shown)
        if state_path:
            fmt = writer.output_format(state_path)
            items = []
            for info in shown:
                dt = torch_dtype(info.dtype)
                if info.dtype != "string" and info.dtype not in TORCH_DTYPES:
                    raise UnsupportedError(f"variable {info.name!r} has dtype {info.dtype}, which has no array form",
                                           path=ckpt.path, hint="leave it out with --filter")
                if dt is None:
                    skipped.append((info.name, f"{info.dtype} tensor has no torch dtype"))
                elif fmt == "safetensors" and writer._dtype_name(dt) not in writer._ST_DTYPES:
                    skipped.append((info.name, f"safetensors cannot store {info.dtype}; use .pth"))
                else:
                    items.append((info.name, info.shape, dt))
            total = sum(i.nbytes for i in shown if i.name in {n for n, _, _ in items})
            with progress_bar(total, "dumping", disable=not progress) as advance:
                if fmt == "safetensors":
                    writer.write_safetensors_stream(state_path, items, lambda i: ckpt.iter_chunks(items[i][0]),
                                                    metadata={"format": "pt", "source": str(path), "layout": "tensorflow"},
                                                    force=force, progress=advance)
                else:
                    state = {}
                    for name, _, dt in items:
                        state[name] = numpy_to_torch(ckpt.read(name)).to(dt)
                        advance(ckpt.variables[name].nbytes)
                    writer.save_pth(state, state_path, force=force)
            tensors = len(items)
        if csv_path:
            write_csv(csv_path, data, force=force)
    return {"rows": len(data), "tensors": tensors, "skipped": skipped}
