"""What every checkpoint source shares: :class:`Checkpoint` (the reading interface) and
:class:`VariableInfo` (one listed variable). No TensorFlow, and numpy only when data is read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import CheckpointNotFoundError, UnsupportedError


class _Numpy:
    """numpy, imported on first use: listing a checkpoint (``tf2pt inspect``) does not need it,
    and importing it is most of the listing's time."""

    def __getattr__(self, name):
        import numpy

        return getattr(numpy, name)


np = _Numpy()

DEFAULT_CHUNK = 64 << 20


def prod(shape) -> int:
    """The number of elements of ``shape`` (1 for a scalar), without numpy."""
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class VariableInfo:
    """One variable as listed by a checkpoint (no data)."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    nbytes: int
    role: str
    role_reason: str
    readable_name: Optional[str] = None
    slot_of: Optional[str] = None
    slot_name: Optional[str] = None
    partitions: int = 0
    shard: int = 0
    #: Keras files: the layer that owns the variable (``conv2d_1``, ``inner/dense``), its class
    #: (``Conv2D``) and config (activation, padding, epsilon, ...) where the file has them, and the
    #: variable's position in the model's order
    layer: Optional[str] = None
    layer_class: Optional[str] = None
    layer_config: Optional[Dict[str, Any]] = field(default=None, compare=False, hash=False)
    order: Optional[int] = None

    @property
    def num_elements(self) -> int:
        return prod(self.shape)


class Checkpoint:
    """Base class of every checkpoint source; all share this interface.

    * ``path``: what the user gave; ``prefix``: the resolved bundle prefix (or the file read);
    * ``kind``: ``"bundle"``, ``"savedmodel"``, ``"graphdef"``, ...;
    * ``files``: the :class:`~pathlib.Path` of every file the source reads (for hashing, provenance);
    * ``fingerprint_files`` (property): the files whose sha256 identifies the source cheaply --
      a bundle's ``.index``, whose CRC32C of every tensor ``read`` checks; by default all files;
    * ``crc_checked``: whether every tensor read is checked against a checksum the source holds;
    * ``notes``: one-line remarks for the user (e.g. the state-file fallback);
    * ``variables``: name -> :class:`VariableInfo`, built without reading data; sorted by name,
      except where the file records the model's order (Keras files), which is kept;
    * ``read(name, check_crc=True)``, ``iter_chunks(name, chunk_bytes)``, ``close()``; a context manager.

    A new source implements ``__init__`` (fill the attributes above) and ``read``; the generic
    ``iter_chunks`` slices what ``read`` returns.
    """

    kind = "base"
    crc_checked = False

    def __init__(self, path):
        self.path = os.fspath(path)
        self.prefix: Optional[str] = None
        self.files: List[Path] = []
        self.notes: List[str] = []
        self.variables: Dict[str, VariableInfo] = {}

    @property
    def fingerprint_files(self) -> List[Path]:
        return list(self.files)

    def read(self, name: str, check_crc: bool = True) -> np.ndarray:
        raise NotImplementedError

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK) -> Iterator[memoryview]:
        """Raw bytes of one tensor in native (little-endian) order, in chunks of at most
        ``chunk_bytes``. This generic version reads the whole tensor first, so any CRC32C
        failure is raised before the first chunk."""
        array = self.read(name)
        if array.dtype == object:
            raise UnsupportedError(f"variable {name!r} is a string tensor, which has no raw byte form", path=self.path)
        # a uint8 view: the buffer protocol knows neither bfloat16 nor float8
        raw = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        for start in range(0, len(raw), chunk_bytes):
            yield raw[start:start + chunk_bytes]

    def copy_to(self, name: str, sink) -> None:
        """Write the raw little-endian bytes of ``name`` to ``sink`` (a :class:`tf2pt.write.safetensors.Sink`)."""
        for chunk in self.iter_chunks(name):
            sink.write(chunk)

    def verify_crc(self, name: str) -> None:
        """Check ``name``'s stored bytes against the checksum the source holds for them, as
        ``read(name)`` does; sources without checksums have nothing to check."""

    def checked_bytes(self, name: str) -> Optional[memoryview]:
        """The raw bytes of ``name`` as one checked buffer, where the source holds them so;
        ``None`` here (use :meth:`copy_to`)."""
        return None

    def release(self, name: Optional[str]) -> None:
        """Done with ``name`` (``None``: nothing): a source that maps files releases its pages."""

    def entry_location(self, name: str) -> Tuple[int, int]:
        """``(shard, offset)`` of a variable's data, for reading in file order; sources without
        data files keep their listing's order."""
        return (0, 0)

    def info(self, name: str) -> VariableInfo:
        try:
            return self.variables[name]
        except KeyError:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.path) from None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.path!r}: {len(self.variables)} variables>"


class IndexedCheckpoint(Checkpoint):
    """A source with a bundle ``.index`` (``files[0]``) that records every tensor's CRC32C."""

    #: every tensor read is checked against the CRC32C the index records for it
    crc_checked = True

    @property
    def fingerprint_files(self) -> List[Path]:
        """The ``.index``: it holds every tensor's CRC32C (checked on read), so its sha256 and
        those checks identify the data without a second pass over it."""
        return self.files[:1]
