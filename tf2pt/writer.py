"""Write state dicts: ``.safetensors`` (streamed) or ``.pth`` (plain tensors only).

Every writer shares one signature family and one rule: output appears atomically at its path
(a temporary file in the same directory, then ``os.replace``) or not at all, and an existing
file is only replaced with ``force=True``.

Memory needed:

* ``.safetensors`` is streamed tensor by tensor: the header first (every shape is known from
  the plan), then each tensor in the order the tensors lie in the checkpoint's data files --
  written straight from the source's memory map when no layout change is needed (CRC checked
  first), else converted into a reused buffer (by numpy, in cache-sized tiles; tensors above
  :data:`SLAB_BYTES` slab by slab). Source pages are released once written, so peak memory is
  about the largest tensor plus one slab (32 MiB; up to 128 MiB for tensors of very long
  rows) whatever the model size. The next tensor of 1-32 MiB is made ready in a second thread
  meanwhile (:class:`Prefetch`), which adds its pages and two 32 MiB buffers at most: about
  the largest tensor + 250 MiB in all, at worst. Dumping to safetensors needs no torch.
* ``.pth`` goes through ``torch.save``, which serialises one dict: the whole state dict is in
  memory at once (peak about the model size, plus torch's own buffers).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._atomic import atomic_output
from .errors import InputError

#: dtype name -> (safetensors code or None, bytes per element)
DTYPES: Dict[str, Tuple[Optional[str], int]] = {
    "float64": ("F64", 8), "float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2),
    "float8_e4m3fn": ("F8_E4M3", 1), "float8_e5m2": ("F8_E5M2", 1),
    "int64": ("I64", 8), "int32": ("I32", 4), "int16": ("I16", 2), "int8": ("I8", 1),
    "uint64": ("U64", 8), "uint32": ("U32", 4), "uint16": ("U16", 2), "uint8": ("U8", 1), "bool": ("BOOL", 1),
    "complex64": ("C64", 8), "complex128": (None, 16),
    "float8_e4m3fnuz": (None, 1), "float8_e5m2fnuz": (None, 1),
}

Item = Tuple[str, Sequence[int], str]  # key, shape, dtype name
ProgressFn = Callable[[int], None]


def output_format(path) -> str:
    """``"safetensors"`` or ``"pth"`` from the file suffix; anything else is a usage error."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pth", ".pt"):
        return "pth"
    raise InputError(f"unknown output format {suffix or '(no suffix)'!r}", path=path,
                     hint="name the output *.safetensors or *.pth")


def dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32``, ``np.dtype("float32")`` or ``"float32"``."""
    return dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")


def nbytes(shape: Sequence[int], dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * DTYPES[dtype_name(dtype)][1]


def safetensors_header(items: Sequence[Item], metadata: Optional[Dict[str, str]] = None, reserve: int = 0) -> bytes:
    """The length-prefixed JSON header for ``items`` in the given order, padded with spaces to a
    multiple of 8 bytes (plus at least ``reserve`` spare bytes, for rewriting it later)."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, shape, dtype in items:
        name = dtype_name(dtype)
        code = DTYPES.get(name, (None, 0))[0]
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
    keys = list(state_dict)
    items = [(k, tuple(state_dict[k].shape), dtype_name(state_dict[k].dtype)) for k in keys]
    write_safetensors(path, items, lambda i, sink: sink.write(tensor_bytes(state_dict[keys[i]])), metadata, force)


def save_pth(state_dict: Dict[str, Any], path, force: bool = False) -> None:
    """``torch.save`` of plain tensors: loads with ``torch.load(path, weights_only=True)``."""
    import torch

    # detach() turns Parameters into plain tensors, which weights_only loading accepts
    plain = {str(k): torch.as_tensor(v).detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_output(path, force=force) as tmp:
        with open(tmp, "r+b") as fh:  # not truncating the empty temp file spares ext4's flush on close
            torch.save(plain, fh)


def save(state_dict: Dict[str, Any], path, metadata: Optional[Dict[str, str]] = None, force: bool = False) -> None:
    """Write ``state_dict`` to ``path`` (format by suffix), atomically."""
    if output_format(path) == "safetensors":
        save_safetensors(state_dict, path, metadata, force)
    else:
        save_pth(state_dict, path, force)


def _release(checkpoint, name: Optional[str]) -> None:
    release = getattr(checkpoint, "release", None)
    if release is not None and name is not None:
        release(name)


def file_order(checkpoint, entries: List[Any]) -> List[Any]:
    """``entries`` sorted by where their source lies in the data files (sequential reads);
    entries filled by rule keep their order, after the others."""
    locate = getattr(checkpoint, "entry_location", None)
    if locate is None:
        return list(entries)
    return sorted(entries, key=lambda e: (0, *locate(e.source)) if e.source else (1, 0, 0))


class Scratch:
    """A reusable buffer for converted tensors: page faults are paid once, not per tensor."""

    def __init__(self):
        self._buf = None

    def _bytes(self, need: int):
        import numpy as np

        if self._buf is None or self._buf.nbytes < need:
            self._buf = np.empty(max(need, 1 << 20), dtype=np.uint8)
        return self._buf[:need]

    def array(self, shape, dtype):
        """An uninitialised C-ordered numpy array of ``shape`` and ``dtype``, in the buffer."""
        import numpy as np

        dtype = np.dtype(dtype)
        return self._bytes(nbytes(shape, dtype.name)).view(dtype).reshape(shape)


def array_bytes(array) -> memoryview:
    """The raw bytes of a numpy array, in C order."""
    import numpy as np

    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _copied_as_is(checkpoint, entry) -> bool:
    info = checkpoint.variables.get(entry.source) if entry.source else None
    return (info is not None and entry.transform is not None and entry.transform.name == "identity"
            and info.dtype == dtype_name(entry.dtype))


#: Tensors converted by numpy above this size are made and written in slabs of this size, so
#: the converted copy never doubles the memory a large tensor needs.
SLAB_BYTES = 32 << 20


def entry_bytes(checkpoint, entry, scratch: Optional[Scratch] = None):
    """The bytes to write for one planned entry without torch: a CRC-checked view of the source
    when layout and dtype are unchanged, else the tensor numpy converts (see ``Entry.array``;
    with ``scratch``, valid until its next use) -- above :data:`SLAB_BYTES`, an iterator of
    slabs made as they are written. ``None`` where only :func:`fill_entry` can."""
    if _copied_as_is(checkpoint, entry):
        return checkpoint.verified_bytes(entry.source)
    if nbytes(entry.shape, entry.dtype) > SLAB_BYTES:
        pieces = entry.pieces(checkpoint, scratch, SLAB_BYTES)
        return None if pieces is None else (array_bytes(piece) for piece in pieces)
    array = entry.array(checkpoint, scratch)
    return None if array is None else array_bytes(array)


def write_bytes(sink: Sink, data) -> None:
    """Write what :func:`entry_bytes` returned: one buffer or an iterator of them."""
    if isinstance(data, (memoryview, bytes, bytearray)):
        sink.write(data)
    else:
        for piece in data:
            sink.write(piece)


def fill_entry(checkpoint, entry, sink: Sink) -> None:
    """Write what :func:`entry_bytes` declines: the source's own copy (partitioned or big-endian
    variables), else torch's tensor (a dtype change numpy does not make exactly, a fill computed
    by code)."""
    if _copied_as_is(checkpoint, entry):
        checkpoint.copy_to(entry.source, sink)
    else:
        sink.write(tensor_bytes(entry.tensor(checkpoint)))


#: Tensors in this size range are made ready (read, CRC-checked, converted) in a second thread
#: while the one before is written. Smaller ones gain less than the hand-over costs; larger ones
#: would hold a second large tensor in memory (the limit bounds what prefetching adds to it).
PREFETCH_MIN = 1 << 20
PREFETCH_MAX = 32 << 20


class Prefetch:
    """A ``fill`` for :func:`write_safetensors` that overlaps making item ``i + 1`` ready with
    writing item ``i`` (on two cores: the write is a kernel copy, the preparation a CRC and a
    permuted copy, both outside the GIL). ``prepare(i, scratch)`` returns the bytes of item
    ``i`` or ``None``, in which case ``fallback(i, sink)`` writes it with nothing in flight;
    ``sizes[i]`` decide which items are worth prefetching. Two scratch buffers alternate
    between prefetched items, so the one being written is never the one being filled; a third
    serves items too large to prefetch. Use as a context manager: leaving it waits for the
    item in flight, so the checkpoint is never closed under it. ``enabled=False`` (or one core)
    makes every item ready in the writing thread."""

    def __init__(self, prepare, fallback, sizes: Sequence[int], enabled: bool = True):
        self._prepare, self._fallback, self._sizes = prepare, fallback, list(sizes)
        self._enabled = enabled and (os.cpu_count() or 1) > 1
        self._scratch = [Scratch(), Scratch(), Scratch()]
        self._pending: Dict[int, Any] = {}
        self._pool = None

    def _eligible(self, i: int) -> bool:
        return self._enabled and i < len(self._sizes) and PREFETCH_MIN <= self._sizes[i] <= PREFETCH_MAX

    def _make(self, i: int):
        return self._prepare(i, self._scratch[i % 2 if self._eligible(i) else 2])

    def __call__(self, i: int, sink: Sink) -> None:
        future = self._pending.pop(i, None)
        data = future.result() if future is not None else self._make(i)
        if data is None:
            self._fallback(i, sink)
        if self._eligible(i + 1):
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tf2pt-prefetch")
            self._pending[i + 1] = self._pool.submit(self._make, i + 1)
        if data is not None:
            write_bytes(sink, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for future in self._pending.values():
            try:
                future.result()
            except BaseException:  # the error being raised, if any, is the one that matters
                pass
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def write_entries(checkpoint, entries, path, metadata: Optional[Dict[str, str]] = None, force: bool = False,
                  progress: Optional[ProgressFn] = None,
                  final_metadata: Optional[Callable[[], Dict[str, str]]] = None, prefetch: bool = True) -> None:
    """Write a planned conversion (see :func:`tf2pt.conversion.plan`) to ``path``.

    ``.safetensors`` streams one tensor at a time in file order, the next one made ready in a
    second thread unless ``prefetch`` is false (see :class:`Prefetch`); ``.pth`` materialises
    the state dict first (torch.save needs it whole).
    """
    if output_format(path) == "safetensors":
        ordered = file_order(checkpoint, entries)
        items = [(e.key, e.shape, dtype_name(e.dtype)) for e in ordered]
        fill = Prefetch(lambda i, scratch: entry_bytes(checkpoint, ordered[i], scratch),
                        lambda i, sink: fill_entry(checkpoint, ordered[i], sink),
                        [nbytes(shape, dtype) for _, shape, dtype in items], enabled=prefetch)
        with fill:
            write_safetensors(path, items, fill, metadata, force, progress, final_metadata,
                              after_item=lambda i: _release(checkpoint, ordered[i].source))
    else:
        state_dict = {}
        for e in entries:
            state_dict[e.key] = e.tensor(checkpoint)
            _release(checkpoint, e.source)
            if progress:
                progress(nbytes(e.shape, e.dtype))
        save_pth(state_dict, path, force)
