"""``tf2pt dump``: the tutorial's intermediate products -- a CSV of variables and the tensors under
their TF names, in TF layout (``.safetensors`` streamed from the memory map, or ``.pth``)."""

from __future__ import annotations

import csv
from typing import Any, Dict, List, Optional, Tuple

from . import dtypes, table
from .errors import UnsupportedError
from .read import open_checkpoint
from .write.atomic import atomic_output

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
         filter: Optional[str] = None, backend: str = "native", force: bool = False, progress: bool = False,
         max_output_bytes: Optional[int] = None):
    """Write the CSV and/or the TF-named state dict. Returns counts and the skipped variables.
    No output may be a file of the checkpoint, nor both outputs one file; the tensors written
    are bounded by ``max_output_bytes`` (see :func:`tf2pt.write.output_budget`)."""
    from . import write
    from ._progress import progress_bar

    skipped: List[Tuple[str, str]] = []
    tensors = 0
    from .write.atomic import check_distinct, source_paths

    with open_checkpoint(path, backend=backend) as ckpt:
        check_distinct({"--csv": csv_path, "--state-dict": state_path}, source_paths(ckpt))
        shown, _ = table.select(ckpt, all=all, filter=filter)
        data = table.rows(ckpt, shown)
        if state_path:
            fmt = write.output_format(state_path)
            items = []
            for info in shown:
                dt = dtypes.BY_NAME.get(info.dtype)
                torch_name = dt.torch if dt is not None else None
                if info.dtype != "string" and torch_name is None:
                    raise UnsupportedError(f"variable {info.name!r} has dtype {info.dtype}, which has no array form",
                                           path=ckpt.path, hint="leave it out with --filter")
                if torch_name is None:
                    skipped.append((info.name, f"{info.dtype} tensor has no torch dtype"))
                elif fmt == "safetensors" and dt.safetensors is None:
                    skipped.append((info.name, f"safetensors cannot store {info.dtype}; use .pth"))
                else:
                    items.append((info.name, info.shape, torch_name))
            total = sum(write.nbytes(shape, dt) for _, shape, dt in items)
            write.check_output_budget(total, ckpt, max_output_bytes)
            with progress_bar(total, "dumping", disable=not progress) as advance:
                if fmt == "safetensors":  # streamed in file order, no torch needed
                    from .write.prefetch import Prefetch

                    items.sort(key=lambda item: ckpt.entry_location(item[0]))
                    fill = Prefetch(lambda i, scratch: ckpt.checked_bytes(items[i][0]),
                                    lambda i, sink: ckpt.copy_to(items[i][0], sink),
                                    [write.nbytes(shape, dt) for _, shape, dt in items])
                    with fill:
                        write.write_safetensors(
                            state_path, items, fill, metadata={"format": "pt", "source": str(path), "layout": "tensorflow"},
                            force=force, progress=advance, after_item=lambda i: ckpt.release(items[i][0]))
                else:
                    import torch

                    from .write.pth import save_pth
                    from .write.tensors import numpy_to_torch

                    state = {}
                    for name, _, dt in items:
                        state[name] = numpy_to_torch(ckpt.read(name)).to(getattr(torch, dt))
                        advance(ckpt.variables[name].nbytes)
                    save_pth(state, state_path, force=force)
            tensors = len(items)
        if csv_path:
            write_csv(csv_path, data, force=force)
    return {"rows": len(data), "tensors": tensors, "skipped": skipped}
