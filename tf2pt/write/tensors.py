"""Making the bytes of planned tensors: permuted copies in cache-sized tiles, slabs of large
tensors, reused scratch buffers, and torch where numpy would not give the same bytes.

A planned entry (:class:`tf2pt.plan.Entry`) becomes

* :func:`as_tensor` -- a CPU torch tensor in the target's dtype (always possible);
* :func:`as_array` / :func:`as_pieces` -- the same bytes from numpy alone, where numpy gives
  exactly what torch gives (no dtype change, a plain numeric dtype, a constant fill), so that a
  conversion that never needed torch finishes without importing it;
* :func:`entry_bytes` / :func:`fill_entry` -- what the streaming writer writes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import numpy as np

from ..dtypes import NUMPY_NATIVE, dtype_name
from .safetensors import Sink, nbytes, tensor_bytes
from .scratch import Scratch


def as_tensor(entry, checkpoint):
    """The value of ``entry`` as a CPU torch tensor in the target's dtype (reads the checkpoint)."""
    import torch

    dtype = getattr(torch, entry.dtype)
    if entry.fill is not None:
        value = entry.fill.value
        if callable(value):
            return value(entry.shape, dtype)
        return torch.full(entry.shape, value, dtype=dtype)
    source = checkpoint.read(entry.source)
    if entry.transform.perm is not None and source.dtype.kind in "fiubc" and source.dtype.name in NUMPY_NATIVE:
        entry.transform.check_rank(tuple(source.shape))
        view = torch_view(source).permute(entry.transform.perm(source.ndim))  # no copy yet
        return view.contiguous().to(dtype)
    return numpy_to_torch(entry.transform(source), copy=False).to(dtype)


def as_array(entry, checkpoint, scratch=None, check_crc: bool = True) -> Optional[np.ndarray]:
    """The value as a numpy array when numpy alone gives exactly what :func:`as_tensor` gives,
    else ``None``. With ``scratch``, the result is only valid until the next call;
    ``check_crc=False`` leaves the source's CRC32C to :func:`check_source`."""
    value = _numpy_value(entry, checkpoint, check_crc)
    return _copied(value.view, scratch) if isinstance(value, _Permuted) else value


def as_pieces(entry, checkpoint, scratch=None, piece_bytes: int = 32 << 20,
              check_crc: bool = True) -> Optional[Iterator[np.ndarray]]:
    """:func:`as_array` in C-ordered slabs along the first axis, each made when asked for, of
    about ``piece_bytes`` (see :data:`SLAB_MIN_ROWS`): converting a large tensor then needs a
    slab of memory besides the source, not a second copy of the tensor. ``None`` where
    :func:`as_array` is; a tensor that needs no permutation is one piece."""
    value = _numpy_value(entry, checkpoint, check_crc)
    if value is None:
        return None
    if not isinstance(value, _Permuted):
        return iter([value])
    return _slabs(value.view, scratch, piece_bytes)


def _numpy_value(entry, checkpoint, check_crc: bool = True):
    """The finished numpy value, a :class:`_Permuted` source view still to be copied, or
    ``None`` (numpy would not give exactly what torch gives)."""
    if entry.dtype not in NUMPY_NATIVE:
        return None
    if entry.fill is not None:
        value = entry.fill.value
        if callable(value) or not isinstance(value, (bool, int, float)):
            return None
        out = np.full(entry.shape, value, dtype=entry.dtype)
        return out if out.size == 0 or out.flat[0] == value else None  # inexact: torch decides
    info = checkpoint.variables[entry.source]
    if info.dtype != entry.dtype:
        return None
    source = checkpoint.read(entry.source) if check_crc else checkpoint.read(entry.source, check_crc=False)
    if entry.transform.perm is None:
        value = entry.transform(source)
        return value if value.flags.c_contiguous else np.ascontiguousarray(value)  # (keeps 0-d arrays 0-d)
    entry.transform.check_rank(tuple(source.shape))
    return _Permuted(source.transpose(entry.transform.perm(source.ndim)))


@dataclass(frozen=True)
class _Permuted:
    view: np.ndarray  # a permuted view of the source, not yet copied


#: the rows a slab of :func:`as_pieces` has at least, if that keeps it within 4 pieces'
#: size: a slab's rows are the source's contiguous run in a transposed copy, and shorter runs
#: than this lose the tiling's speed
SLAB_MIN_ROWS = 128


def _slabs(view: np.ndarray, scratch, piece_bytes: int) -> Iterator[np.ndarray]:
    row = max(1, view[:1].nbytes)
    step = max(1, piece_bytes // row, min(SLAB_MIN_ROWS, 4 * piece_bytes // row))
    for start in range(0, view.shape[0], step):
        yield _copied(view[start:start + step], scratch)


def _copied(view: np.ndarray, scratch) -> np.ndarray:
    """A C-ordered copy of ``view``, in ``scratch`` if given."""
    out = scratch.array(view.shape, view.dtype) if scratch is not None else np.empty(view.shape, view.dtype)
    blocked_copy(out, view)
    return out


def blocked_copy(out: np.ndarray, view: np.ndarray, lines: int = 16, min_run: int = 128,
                 min_bytes: int = 1 << 20) -> None:
    """``out[...] = view`` for a C-contiguous ``out`` and a permuted ``view``, in tiles.

    numpy copies in the destination's order, so a transposed source is read one element per
    cache line, worst for power-of-two row strides, whose lines compete for the same cache sets.
    A 2-D transpose (a Dense kernel; any swap of two blocks of axes) with such rows goes through
    a padded buffer (:func:`_transpose_through_buffer`); with other rows numpy's copy does as
    well. Any other permutation is copied in tiles that span the whole of the source's
    contiguous axis and about ``lines`` source rows (the destination's innermost axes are taken
    whole while they fit in ``2 * lines``, as a 3x3x3 kernel's 27 do), so the rows stay in cache
    until every element of each line is used (docs/performance.md has the speeds measured). One
    thread: splitting the tiles across threads lost more to the GIL than it gained. Tensors
    under ``min_bytes`` (in cache anyway) and short contiguous runs keep numpy's copy.
    """
    if out.ndim < 2 or out.nbytes < min_bytes or out.size == 0:
        np.copyto(out, view)
        return
    source = _transposed_source(view)
    if source is not None:  # a 2-D transpose
        if (source.strides[0] % ALIASING_ROW_BYTES) or min(source.shape) < TRANSPOSE_MIN_SIDE:
            np.copyto(out, view)  # rows that do not compete for cache sets: numpy's copy does well
        else:
            _transpose_through_buffer(out.reshape(source.shape[1], source.shape[0]), source)
        return
    # the source's contiguous axis: its smallest stride (axes of length 1 have no stride to speak of)
    s = min(range(view.ndim), key=lambda a: abs(view.strides[a]) if view.shape[a] > 1 else 1 << 62)
    if s == view.ndim - 1 or view.shape[s] < min_run:
        np.copyto(out, view)  # already read in order, or too short a run to repay the tiling
        return
    others = [a for a in range(view.ndim) if a != s]
    step = {}
    rows = 1  # source rows per tile so far
    for a in reversed(others):  # the destination's innermost axes first
        size = out.shape[a]
        step[a] = size if rows * size <= 2 * lines else max(1, min(size, lines // rows))
        rows *= step[a]
    index = [slice(None)] * out.ndim
    for starts in itertools.product(*(range(0, out.shape[a], step[a]) for a in others)):
        for a, start in zip(others, starts):
            index[a] = slice(start, start + step[a])
        tile = tuple(index)
        np.copyto(out[tile], view[tile])


def _transposed_source(view: np.ndarray) -> Optional[np.ndarray]:
    """``view`` as the transpose of a 2-D array ``(R, C)`` whose rows are contiguous, where it is
    one (a Dense kernel's ``(1, 0)``, or any permutation that swaps two blocks of axes, a slab of
    either included), else ``None``; a C-ordered copy of ``view`` is then ``(C, R)``."""
    for k in range(1, view.ndim):
        first = _merged_stride(view.shape[:k], view.strides[:k])
        second = _merged_stride(view.shape[k:], view.strides[k:])
        rows, cols = int(np.prod(view.shape[:k])), int(np.prod(view.shape[k:]))
        if first == view.itemsize and second is not None and second >= rows * view.itemsize:
            return np.lib.stride_tricks.as_strided(view, (cols, rows), (second, first), writeable=False)
    return None


def _merged_stride(shape, strides) -> Optional[int]:
    """The stride of ``shape``'s axes merged into one in C order, or ``None`` where they do not
    merge without a copy (axes of length 1 have no stride to speak of)."""
    axes = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not axes:
        return None
    for (_, outer), (n, inner) in zip(axes, axes[1:]):
        if outer != inner * n:
            return None
    return axes[-1][1]


#: :func:`_transpose_through_buffer`'s block: source rows copied at a time, and row length.
#: 256 x 256 (256 KiB of float32, within any L2 cache) beat 64 x 1024 on the shapes measured
#: (docs/performance.md), most on large kernels (2048 x 2048 float32: 3.9-5.7 GiB/s against
#: 2.4-2.7); it tied on 1024 x 1024 and lost on sources of 128 rows or fewer, by up to a sixth
TRANSPOSE_ROWS, TRANSPOSE_COLS = 256, 256
#: a 2-D transpose with fewer rows or columns than this keeps numpy's copy
TRANSPOSE_MIN_SIDE = 64
#: source rows a multiple of this many bytes apart compete for the same cache sets when read
#: down a column (a 2-D transpose goes through the buffer then; other strides do as well
#: with numpy's own copy, measured on the shapes in docs/performance.md)
ALIASING_ROW_BYTES = 1024


def _transpose_through_buffer(out: np.ndarray, source: np.ndarray) -> None:
    """``out[...] = source.T`` for a 2-D ``source`` with contiguous rows, block by block through
    a small buffer whose row length is padded by a cache line. Read straight from the source, a
    transposed copy touches one cache line per element, and rows a power of two of bytes apart
    compete for the same cache sets (a 1024x1024 float32 kernel ran at 0.6-1.1 GiB/s here);
    the buffer's padded rows fall in different sets, so each block of 256 x 256 elements is
    read once in order and then transposed within the L2 cache (about 6 GiB/s here)."""
    r, c = source.shape
    pad = max(1, 64 // source.itemsize)
    buf = np.empty((TRANSPOSE_ROWS, TRANSPOSE_COLS + pad), source.dtype)
    for j in range(0, r, TRANSPOSE_ROWS):
        n = min(TRANSPOSE_ROWS, r - j)
        for i in range(0, c, TRANSPOSE_COLS):
            m = min(TRANSPOSE_COLS, c - i)
            block = buf[:n, :m]
            np.copyto(block, source[j:j + n, i:i + m])
            np.copyto(out[i:i + m, j:j + n], block.T)


def torch_view(array: np.ndarray):
    """A torch tensor sharing ``array``'s memory, read-only memory maps included (tf2pt never
    writes through it)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def numpy_to_torch(array: np.ndarray, copy: bool = True):
    """A torch tensor owning a copy of ``array`` (with ``copy=False``: sharing it when it is
    already a writable, C-ordered array of its own): handles read-only memory maps and
    ml_dtypes' bfloat16/float8 (numpy cannot hand those to torch directly: the bytes are
    reinterpreted)."""
    import torch

    if array.dtype == object:
        raise TypeError("string tensors have no torch equivalent")
    name = array.dtype.name
    if name == "bfloat16" or name.startswith("float8"):
        target = getattr(torch, name, None)
        if target is None:
            raise TypeError(f"this torch has no {name}")
        raw = np.array(array, order="C").view(np.int16 if array.dtype.itemsize == 2 else np.uint8)
        return torch.from_numpy(raw).view(target)
    if not copy and array.flags.writeable and array.flags.c_contiguous and array.flags.owndata:
        return torch.from_numpy(array)
    return torch.from_numpy(np.array(array, copy=True, order="C"))


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


def entry_bytes(checkpoint, entry, scratch: Optional[Scratch] = None, check_crc: bool = True):
    """The bytes to write for one planned entry without torch: a CRC-checked view of the source
    when layout and dtype are unchanged (above ``WHOLE_BYTES``, an iterator of checked chunks:
    :meth:`~tf2pt.read.bundle.BundleCheckpoint.checked_bytes`), else the tensor numpy converts
    (see :func:`as_array`; with ``scratch``, valid until its next use) -- above
    :data:`SLAB_BYTES`, an iterator of slabs made as they are written. ``None`` where only
    :func:`fill_entry` can. ``check_crc=False`` converts without checking the source's CRC32C,
    which :func:`check_source` then checks before the bytes are written (the streaming writer
    checks in the writing thread what its second thread converted, which balances the two)."""
    if _copied_as_is(checkpoint, entry):
        return checkpoint.checked_bytes(entry.source)
    if nbytes(entry.shape, entry.dtype) > SLAB_BYTES:
        pieces = as_pieces(entry, checkpoint, scratch, SLAB_BYTES, check_crc)
        return None if pieces is None else (array_bytes(piece) for piece in pieces)
    array = as_array(entry, checkpoint, scratch, check_crc)
    return None if array is None else array_bytes(array)


def check_source(checkpoint, entry) -> None:
    """The CRC32C check that :func:`entry_bytes` with ``check_crc=False`` left out: of the
    source of a converted entry (a copy as stored is checked as it is read; fills have none)."""
    if entry.source and entry.fill is None and not _copied_as_is(checkpoint, entry):
        checkpoint.verify_crc(entry.source)


def fill_entry(checkpoint, entry, sink: Sink) -> None:
    """Write what :func:`entry_bytes` declines: the source's own copy (partitioned or big-endian
    variables), else torch's tensor (a dtype change numpy does not make exactly, a fill computed
    by code)."""
    if _copied_as_is(checkpoint, entry):
        checkpoint.copy_to(entry.source, sink)
    else:
        sink.write(tensor_bytes(as_tensor(entry, checkpoint)))


def file_order(checkpoint, entries: List[Any]) -> List[Any]:
    """``entries`` sorted by where their source lies in the data files (sequential reads);
    entries filled by rule keep their order, after the others."""
    return sorted(entries, key=lambda e: (0, *checkpoint.entry_location(e.source)) if e.source else (1, 0, 0))
