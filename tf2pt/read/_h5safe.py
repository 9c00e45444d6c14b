"""Opening HDF5 files from strangers with h5py, safely.

HDF5 can make a file read another file (external links, external raw-data storage, virtual
datasets), load a filter plugin (a shared library) for an unknown filter id, or declare a dataset
far larger than the bytes it stores (an unallocated dataset reads as its fill value; a compressed
one inflates). Before any data is read, :func:`scan` walks every link of the file *without
following it* and refuses:

* external links and user-defined links, anywhere in the file;
* soft links (tf2pt never follows them: Keras does not write them);
* datasets with external storage or a virtual layout;
* datasets whose filters are not the standard deflate / shuffle / fletcher32 / LZF ones
  (an unknown filter id makes HDF5 look for a plugin library);
* datasets whose declared size is not backed by the bytes the file stores (uncompressed: at
  least the declared size; compressed: at most :data:`MAX_INFLATE` times what is stored);
* non-numeric element types (compound, variable-length, references, opaque).

Every refusal is a typed error from :mod:`tf2pt.errors` naming the object.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

from ..errors import CorruptCheckpointError, UnsupportedError

#: deflate's best case is about 1032:1; nothing legitimate inflates further
MAX_INFLATE = 1100
#: filters HDF5 implements itself (no plugin is loaded): deflate, shuffle, fletcher32; LZF is h5py's
SAFE_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
MAX_OBJECTS = 1_000_000
MAX_DEPTH = 64

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def h5py_module():
    try:
        import h5py
    except ImportError:
        from ..errors import DependencyError

        raise DependencyError("h5py", "reading Keras .h5 files") from None
    return h5py


def is_hdf5(path: str) -> bool:
    """HDF5's signature at offset 0 (or 512, 1024, ... for a user block)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head == HDF5_MAGIC:
                return True
            for off in (512, 1024, 2048, 4096):
                fh.seek(off)
                if fh.read(8) == HDF5_MAGIC:
                    return True
    except OSError:
        return False
    return False


def open_file(source, label: str):
    """``h5py.File`` read-only on a path or a seekable binary file object; a file HDF5 cannot
    parse is a :class:`CorruptCheckpointError`."""
    h5py = h5py_module()
    try:
        return h5py.File(source, "r", locking=False) if isinstance(source, (str, os.PathLike)) else h5py.File(source, "r")
    except OSError as exc:
        raise CorruptCheckpointError(f"not a readable HDF5 file ({_reason(exc)})", path=label,
                                     hint="the file is damaged or truncated; re-copy or re-save it") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__


def check_dataset(dset, where: str, label: str, file_size: int) -> None:
    """Refuse a dataset that reads another file, needs a plugin, or declares more than it stores."""
    h5py = h5py_module()
    if dset.is_virtual:
        raise UnsupportedError(f"dataset {where!r} is a virtual dataset (its data lives in other files)", path=label,
                               hint="tf2pt reads only data stored in the file itself")
    if dset.external:
        raise UnsupportedError(f"dataset {where!r} keeps its data in external files", path=label,
                               hint="tf2pt reads only data stored in the file itself")
    dt = dset.dtype
    if dt.kind not in "fiubc" or dt.fields is not None or dt.subdtype is not None or h5py.check_dtype(vlen=dt) is not None \
            or h5py.check_dtype(ref=dt) is not None:
        raise UnsupportedError(f"dataset {where!r} has element type {dt!s}, not a number", path=label,
                               hint="Keras weights are numeric arrays; this is not a Keras weight file")
    plist = dset.id.get_create_plist()
    filtered = False
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in SAFE_FILTERS:
            raise UnsupportedError(f"dataset {where!r} uses HDF5 filter {code}, which would load a plugin library",
                                   path=label, hint="re-save the weights without that compression")
        filtered = filtered or code in (1, 32000)
    n = 1
    for d in dset.shape or ():
        n *= int(d)
    declared = n * dt.itemsize
    stored = int(dset.id.get_storage_size())
    if declared == 0:
        return
    if filtered:
        if declared > MAX_INFLATE * max(stored, 1) or stored > file_size:
            raise CorruptCheckpointError(f"dataset {where!r} declares {declared} bytes but stores {stored} compressed",
                                         path=label, hint="the file is damaged or crafted; re-copy or re-save it")
    elif stored < declared or declared > file_size:
        raise CorruptCheckpointError(f"dataset {where!r} declares {declared} bytes but stores {stored}", path=label,
                                     hint="the file is damaged or crafted; re-copy or re-save it")


def scan(f, label: str, file_size: int, on_group: Optional[Callable[[str, object], None]] = None) -> Dict[str, object]:
    """Walk every link of ``f`` without following any but hard links; refuse what
    :mod:`this module <tf2pt.read._h5safe>` refuses. Returns ``{path: dataset}`` of every dataset
    reached by hard links (first path wins)."""
    h5py = h5py_module()
    datasets: Dict[str, object] = {}
    seen = set()
    count = 0

    def walk(group, prefix: str, depth: int):
        nonlocal count
        if depth > MAX_DEPTH:
            raise CorruptCheckpointError(f"groups nested more than {MAX_DEPTH} deep at {prefix!r}", path=label)
        try:
            names = list(group.keys())
        except (OSError, RuntimeError, KeyError) as exc:
            raise CorruptCheckpointError(f"cannot list group {prefix or '/'!r} ({_reason(exc)})", path=label) from None
        for name in names:
            count += 1
            if count > MAX_OBJECTS:
                raise CorruptCheckpointError(f"more than {MAX_OBJECTS} objects", path=label)
            where = f"{prefix}/{name}" if prefix else name
            try:
                link = group.get(name, getlink=True)
            except (OSError, RuntimeError, KeyError, TypeError) as exc:
                raise UnsupportedError(f"link {where!r} cannot be read safely ({_reason(exc)})", path=label) from None
            if isinstance(link, h5py.ExternalLink):
                raise UnsupportedError(f"{where!r} is an HDF5 external link to {link.filename!r}:{link.path!r}",
                                       path=label, hint="tf2pt never follows a link out of the file; "
                                                        "re-save the weights into one file")
            if isinstance(link, h5py.SoftLink):
                raise UnsupportedError(f"{where!r} is an HDF5 soft link to {link.path!r}", path=label,
                                       hint="Keras does not write links; re-save the weights with Keras")
            if not isinstance(link, h5py.HardLink):
                raise UnsupportedError(f"{where!r} is an HDF5 link of an unknown kind", path=label)
            try:
                obj = group[name]
                key = hash(obj.id)  # h5py hashes an object id by file and object address
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                raise CorruptCheckpointError(f"cannot open {where!r} ({_reason(exc)})", path=label) from None
            if key in seen:  # a second hard link to an object already seen (or a cycle)
                continue
            seen.add(key)
            if isinstance(obj, h5py.Group):
                if on_group is not None:
                    on_group(where, obj)
                walk(obj, where, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                check_dataset(obj, where, label, file_size)
                datasets[where] = obj
            else:  # a committed datatype: harmless, not ours
                continue

    seen.add(hash(f.id))
    walk(f, "", 0)
    return datasets


def read_dataset(dset, where: str, label: str):
    """The dataset's values as a native-byte-order numpy array."""
    import numpy as np

    try:
        a = dset[()]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise CorruptCheckpointError(f"cannot read dataset {where!r} ({_reason(exc)})", path=label,
                                     hint="the file is damaged or truncated; re-copy or re-save it") from None
    a = np.asarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a
