"""The ``.safetensors`` writer: a header fixed from the plan, then each tensor's bytes streamed in.

The header comes first (every shape is known before any data is read), then the tensors in the
given order, each written by a ``fill`` callback straight to the file (see :class:`Sink`). The
file appears atomically at its path or not at all (:mod:`.atomic`).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..dtypes import dtype_name, safetensors_code, size_of
from ..errors import InputError
from .atomic import atomic_output

Item = Tuple[str, Sequence[int], str]  # key, shape, dtype name
ProgressFn = Callable[[int], None]


def nbytes(shape: Sequence[int], dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * size_of(dtype)


def safetensors_header(items: Sequence[Item], metadata: Optional[Dict[str, str]] = None, reserve: int = 0) -> bytes:
    """The length-prefixed JSON header for ``items`` in the given order, padded with spaces to a
    multiple of 8 bytes (plus at least ``reserve`` spare bytes, for rewriting it later)."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, shape, dtype in items:
        name = dtype_name(dtype)
        code = safetensors_code(name)
        if code is None:
            raise InputError(f"tensor {key!r} has dtype {name}, which safetensors cannot store", hint="write a .pth instead")
        size = nbytes(shape, name)
        header[key] = {"dtype": code, "shape": [int(s) for s in shape], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * reserve
    raw += b" " * (-(len(raw) + 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor) -> memoryview:
    """The raw bytes of a torch tensor (C order; bfloat16/float8 reinterpreted)."""
    import torch

    t = tensor.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    elif t.element_size() == 1 and t.dtype not in (torch.uint8, torch.int8, torch.bool):
        t = t.view(torch.uint8)
    return memoryview(t.numpy()).cast("B")


class Sink:
    """Where one tensor's bytes go: unbuffered writes of any buffer (a memory-mapped slice of the
    source checkpoint is written without an intermediate copy)."""

    def __init__(self, fh):
        self.fh = fh
        self._fd = fh.fileno()

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        while view.nbytes:
            n = os.write(self._fd, view[: 1 << 30])
            view = view[n:]


def is_buffer(data) -> bool:
    """Whether ``data`` is one buffer (else an iterator of buffers, see :func:`write_bytes`)."""
    return isinstance(data, (memoryview, bytes, bytearray))


def write_bytes(sink: Sink, data) -> None:
    """Write what :func:`~.tensors.entry_bytes` returned: one buffer or an iterator of them."""
    if is_buffer(data):
        sink.write(data)
    else:
        for piece in data:
            sink.write(piece)


def write_safetensors(
    path,
    items: Sequence[Item],
    fill: Callable[[int, Sink], None],
    metadata: Optional[Dict[str, str]] = None,
    force: bool = False,
    progress: Optional[ProgressFn] = None,
    final_metadata: Optional[Callable[[], Dict[str, str]]] = None,
    after_item: Optional[Callable[[int], None]] = None,
) -> None:
    """Stream a safetensors file: ``items`` fix the header, then ``fill(i, sink)`` writes the
    bytes of tensor ``i`` (exactly its size; checked) to the :class:`Sink`.

    ``final_metadata``, if given, is called after the last tensor and replaces ``metadata`` in
    the header (e.g. hashes computed meanwhile); it may not outgrow the spare room reserved for
    it. On any error the temporary file is removed.
    """
    reserve = 256 if final_metadata else 0
    head = safetensors_header(items, metadata, reserve)
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "r+b", buffering=0) as fh:  # no truncation: ext4 would flush on close (auto_da_alloc)
            sink = Sink(fh)
            sink.write(head)
            position = len(head)
            for i, (key, shape, dtype) in enumerate(items):
                size = nbytes(shape, dtype)
                fill(i, sink)
                end = os.lseek(fh.fileno(), 0, os.SEEK_CUR)
                if end - position != size:
                    raise InputError(f"tensor {key!r} produced {end - position} bytes, expected {size}", path=path)
                position = end
                if progress:
                    progress(size)
                if after_item:
                    after_item(i)
            if final_metadata:
                new = safetensors_header(items, final_metadata())
                if len(new) > len(head):
                    raise InputError("the final header outgrew the space reserved for it", path=path)
                body = new[8:] + b" " * (len(head) - len(new))
                os.pwrite(fh.fileno(), struct.pack("<Q", len(body)) + body, 0)


def save_safetensors(state_dict: Dict[str, Any], path, metadata: Optional[Dict[str, str]] = None, force: bool = False) -> None:
    """Write a state dict of torch tensors (all in memory) to ``path``."""
    keys = list(state_dict)
    items = [(k, tuple(state_dict[k].shape), dtype_name(state_dict[k].dtype)) for k in keys]
    write_safetensors(path, items, lambda i, sink: sink.write(tensor_bytes(state_dict[keys[i]])), metadata, force)
