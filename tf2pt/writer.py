"""Write state dicts: ``.safetensors`` (streamed) or ``.pth`` (plain tensors only).

Every writer shares one signature family and one rule: output appears atomically at its path
(a temporary file in the same directory, then ``os.replace``) or not at all, and an existing
file is only replaced with ``force=True``.

Memory: ``.safetensors`` is written tensor by tensor -- header first (all shapes are known from
the plan), then each tensor's bytes, streamed straight from the memory-mapped checkpoint when no
layout change is needed -- so peak memory is about one tensor. ``.pth`` goes through
``torch.save``, which needs the whole state dict in memory at once.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ._atomic import atomic_output
from .errors import InputError

SUFFIXES = (".safetensors", ".pth", ".pt")

# torch dtype name -> safetensors dtype code
_ST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
    "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
    "complex64": "C64",
}

ProgressFn = Callable[[int], None]


def output_format(path) -> str:
    """``"safetensors"`` or ``"pth"`` from the file suffix; anything else is a usage error."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pth", ".pt"):
        return "pth"
    raise InputError(
        f"unknown output format {suffix or '(no suffix)'!r}", path=path,
        hint="name the output *.safetensors or *.pth",
    )


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _nbytes(shape: Sequence[int], dtype) -> int:
    import torch

    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def safetensors_header(items: Sequence[Tuple[str, Sequence[int], Any]], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The length-prefixed, 8-byte-aligned JSON header for ``(key, shape, torch dtype)`` items,
    laid out in the given order."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, shape, dtype in items:
        name = _dtype_name(dtype)
        if name not in _ST_DTYPES:
            raise InputError(f"tensor {key!r} has dtype {name}, which safetensors cannot store", hint="write a .pth instead")
        size = _nbytes(shape, dtype)
        header[key] = {"dtype": _ST_DTYPES[name], "shape": [int(s) for s in shape], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(len(raw) + 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _tensor_bytes(tensor) -> memoryview:
    import torch

    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return memoryview(t.numpy()).cast("B")


def write_safetensors_stream(
    path,
    items: Sequence[Tuple[str, Sequence[int], Any]],
    chunks: Callable[[int], Iterable],
    metadata: Optional[Dict[str, str]] = None,
    force: bool = False,
    progress: Optional[ProgressFn] = None,
) -> None:
    """Stream a safetensors file: ``items`` fixes the header, ``chunks(i)`` yields the bytes of
    item ``i`` (any buffer objects). A size mismatch aborts the write."""
    head = safetensors_header(items, metadata)
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(head)
            for i, (key, shape, dtype) in enumerate(items):
                want = _nbytes(shape, dtype)
                got = 0
                for chunk in chunks(i):
                    n = fh.write(chunk)
                    got += n
                    if progress:
                        progress(n)
                if got != want:
                    raise InputError(f"tensor {key!r} produced {got} bytes, expected {want}", path=path)


def save_safetensors(state_dict: Dict[str, Any], path, metadata: Optional[Dict[str, str]] = None, force: bool = False) -> None:
    keys = list(state_dict)
    items = [(k, tuple(state_dict[k].shape), state_dict[k].dtype) for k in keys]
    write_safetensors_stream(path, items, lambda i: [_tensor_bytes(state_dict[keys[i]])], metadata, force)


def save_pth(state_dict: Dict[str, Any], path, force: bool = False) -> None:
    """``torch.save`` of plain tensors: loads with ``torch.load(path, weights_only=True)``."""
    import torch

    # detach() turns Parameters into plain tensors, which weights_only loading accepts
    plain = {str(k): torch.as_tensor(v).detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_output(path, force=force) as tmp:
        torch.save(plain, tmp)


def save(state_dict: Dict[str, Any], path, metadata: Optional[Dict[str, str]] = None, force: bool = False) -> None:
    """Write ``state_dict`` to ``path`` (format by suffix), atomically."""
    if output_format(path) == "safetensors":
        save_safetensors(state_dict, path, metadata, force)
    else:
        save_pth(state_dict, path, force)


def _entry_chunks(checkpoint, entry) -> Iterable:
    """Bytes of one planned entry: raw chunks straight from the checkpoint when the layout and
    dtype are unchanged (CRC checked on the way), else the converted tensor."""
    info = checkpoint.variables.get(entry.source) if entry.source else None
    if (
        info is not None
        and entry.transform is not None
        and entry.transform.name == "identity"
        and info.dtype == _dtype_name(entry.dtype)
        and hasattr(checkpoint, "iter_chunks")
    ):
        return checkpoint.iter_chunks(entry.source)
    return [_tensor_bytes(entry.tensor(checkpoint))]


def write_entries(checkpoint, entries, path, metadata: Optional[Dict[str, str]] = None,
                  force: bool = False, progress: Optional[ProgressFn] = None) -> None:
    """Write a planned conversion (see :func:`tf2pt.conversion.plan`) to ``path``.

    ``.safetensors`` streams one tensor at a time; ``.pth`` materialises the state dict first.
    """
    if output_format(path) == "safetensors":
        items = [(e.key, e.shape, e.dtype) for e in entries]
        write_safetensors_stream(path, items, lambda i: _entry_chunks(checkpoint, entries[i]), metadata, force, progress)
    else:
        state_dict = {}
        for e in entries:
            state_dict[e.key] = e.tensor(checkpoint)
            if progress:
                progress(_nbytes(e.shape, e.dtype))
        save_pth(state_dict, path, force)
