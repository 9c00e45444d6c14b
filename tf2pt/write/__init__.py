"""Writing: state dicts to ``.safetensors`` (streamed) or ``.pth`` (plain tensors only).

Every writer shares one rule: output appears atomically at its path (a temporary file in the
same directory, then ``os.replace``) or not at all, and an existing file is only replaced with
``force=True`` (:mod:`.atomic`).

* :mod:`.safetensors` -- the streaming writer: the header first (every shape is known from the
  plan), then each tensor;
* :mod:`.tensors` -- the bytes of each planned tensor: straight from the source's memory map
  when no layout change is needed (CRC checked first), else converted by numpy in cache-sized
  tiles into a reused buffer, slab by slab above :data:`~.tensors.SLAB_BYTES`; torch only where
  numpy would not give the same bytes;
* :mod:`.prefetch` -- the next tensor made ready in a second thread while one is written;
* :mod:`.pth` -- ``torch.save`` of plain tensors;
* :mod:`.provenance` -- the metadata that says where the weights came from.

Memory: ``.safetensors`` needs, whatever the model size, a few 32 MiB chunks of the source for a
tensor written as stored (its pages are released chunk by chunk once written), or the source
tensor's pages plus two slabs (32 MiB each; up to 128 MiB for tensors of very long rows) for one
converted, since a converted tensor's next slab is made while one is written; prefetching adds
the next tensor's pages and two 32 MiB buffers at most. Dumping to safetensors needs no torch.
``.pth`` holds the whole state dict in memory (``torch.save`` serialises one dict).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

from ..errors import InputError
from .safetensors import ProgressFn, nbytes, save_safetensors, write_safetensors

__all__ = ["output_format", "save", "write_entries", "nbytes", "write_safetensors"]


def output_format(path) -> str:
    """``"safetensors"`` or ``"pth"`` from the file suffix; anything else is a usage error."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pth", ".pt"):
        return "pth"
    raise InputError(f"unknown output format {suffix or '(no suffix)'!r}", path=path,
                     hint="name the output *.safetensors or *.pth")


def output_budget(checkpoint, max_output_bytes: Optional[int] = None) -> int:
    """The most tensor bytes a command may write from ``checkpoint``: ``max_output_bytes``, or
    64x the size of its files plus 1 GiB (a real conversion writes about what it reads)."""
    if max_output_bytes is not None:
        return max_output_bytes
    size = 0
    for f in getattr(checkpoint, "files", ()):
        try:
            size += os.path.getsize(f)
        except OSError:
            pass
    return 64 * size + (1 << 30)


def check_output_budget(total: int, checkpoint, max_output_bytes: Optional[int] = None) -> None:
    budget = output_budget(checkpoint, max_output_bytes)
    if total > budget:
        raise InputError(f"the output would hold {total} bytes of tensors, more than the {budget} allowed "
                         "(64x the checkpoint's size plus 1 GiB)", path=getattr(checkpoint, "path", None),
                         hint="a checkpoint this small cannot hold that much; pass --max-output-bytes if you trust it")


def save(state_dict: Dict[str, Any], path, metadata: Optional[Dict[str, str]] = None, force: bool = False) -> None:
    """Write ``state_dict`` to ``path`` (format by suffix), atomically."""
    if output_format(path) == "safetensors":
        save_safetensors(state_dict, path, metadata, force)
    else:
        from .pth import save_pth

        save_pth(state_dict, path, force)


def write_entries(checkpoint, entries, path, metadata: Optional[Dict[str, str]] = None, force: bool = False,
                  progress: Optional[ProgressFn] = None,
                  final_metadata: Optional[Callable[[], Dict[str, str]]] = None, prefetch: bool = True) -> None:
    """Write a planned conversion (see :func:`tf2pt.plan.plan`) to ``path``.

    ``.safetensors`` streams one tensor at a time in file order, the next one made ready in a
    second thread unless ``prefetch`` is false (see :class:`~.prefetch.Prefetch`); ``.pth``
    materialises the state dict first (torch.save needs it whole).
    """
    from . import tensors

    if output_format(path) == "safetensors":
        from .prefetch import Prefetch

        ordered = tensors.file_order(checkpoint, entries)
        items = [(e.key, e.shape, e.dtype) for e in ordered]
        # the second thread converts; the writing thread checks the CRC32C of what it converted
        # before writing it (it would otherwise wait for the second thread, whose work is the longer)
        fill = Prefetch(lambda i, scratch: tensors.entry_bytes(checkpoint, ordered[i], scratch, check_crc=False),
                        lambda i, sink: tensors.fill_entry(checkpoint, ordered[i], sink),
                        [nbytes(shape, dtype) for _, shape, dtype in items], enabled=prefetch,
                        before_write=lambda i: tensors.check_source(checkpoint, ordered[i]))
        with fill:
            write_safetensors(path, items, fill, metadata, force, progress, final_metadata,
                              after_item=lambda i: checkpoint.release(ordered[i].source))
    else:
        from .pth import save_pth

        state_dict = {}
        for e in entries:
            state_dict[e.key] = tensors.as_tensor(e, checkpoint)
            checkpoint.release(e.source)
            if progress:
                progress(nbytes(e.shape, e.dtype))
        save_pth(state_dict, path, force)
