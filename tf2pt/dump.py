"""``tf2pt dump``: the tutorial's intermediate products -- a CSV of variables and the tensors under
their TF names, in TF layout (``.safetensors`` streamed from the memory map, or ``.pth``)."""

from __future__ import annotations

import csv
from typing import Any, Dict, List, Optional, Tuple

from . import table
from ._atomic import atomic_output
from .errors import UnsupportedError
from .reader import open_checkpoint

# TF dtype name -> torch dtype name (strings have no torch form; quantized types are their integers)
TORCH_DTYPES = {
    "float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": "float64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "complex64": "complex64", "complex128": "complex128",
    "qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16", "qint32": "int32",
    "float8_e5m2": "float8_e5m2", "float8_e4m3fn": "float8_e4m3fn",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
}


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
                torch_name = TORCH_DTYPES.get(info.dtype)
                if info.dtype != "string" and torch_name is None:
                    raise UnsupportedError(f"variable {info.name!r} has dtype {info.dtype}, which has no array form",
                                           path=ckpt.path, hint="leave it out with --filter")
                if torch_name is None:
                    skipped.append((info.name, f"{info.dtype} tensor has no torch dtype"))
                elif fmt == "safetensors" and (torch_name != info.dtype or writer.DTYPES[torch_name][0] is None):
                    skipped.append((info.name, f"safetensors cannot store {info.dtype}; use .pth"))
                else:
                    items.append((info.name, info.shape, torch_name))
            total = sum(writer.nbytes(shape, dt) for _, shape, dt in items)
            with progress_bar(total, "dumping", disable=not progress) as advance:
                if fmt == "safetensors":  # streamed in file order, no torch needed
                    locate = getattr(ckpt, "entry_location", None)
                    if locate is not None:
                        items.sort(key=lambda item: locate(item[0]))
                    fill = writer.Prefetch(lambda i, scratch: ckpt.verified_bytes(items[i][0]),
                                           lambda i, sink: ckpt.copy_to(items[i][0], sink),
                                           [writer.nbytes(shape, dt) for _, shape, dt in items])
                    with fill:
                        writer.write_safetensors(
                            state_path, items, fill, metadata={"format": "pt", "source": str(path), "layout": "tensorflow"},
                            force=force, progress=advance, after_item=lambda i: writer._release(ckpt, items[i][0]))
                else:
                    import torch

                    state = {}
                    for name, _, dt in items:
                        state[name] = numpy_to_torch(ckpt.read(name)).to(getattr(torch, dt))
                        advance(ckpt.variables[name].nbytes)
                    writer.save_pth(state, state_path, force=force)
            tensors = len(items)
        if csv_path:
            write_csv(csv_path, data, force=force)
    return {"rows": len(data), "tensors": tensors, "skipped": skipped}
