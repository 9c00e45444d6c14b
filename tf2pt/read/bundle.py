"""Read TensorFlow checkpoints without TensorFlow.

TF's V2 checkpoint ("tensor bundle") is ``PREFIX.index`` -- a sorted string table mapping each
variable name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C,
slices) -- plus ``PREFIX.data-NNNNN-of-MMMMM`` shards holding the raw tensor bytes.

* Numeric tensors are stored raw, in the byte order the header names (little-endian in
  practice). bfloat16 and float8 come from ``ml_dtypes``.
* String tensors: one varint64 length per element, a fixed32 masked CRC32C of the lengths (each
  taken as a uint32 in the writer's byte order, uint64 above 2**32 - 1, not as its varint), then
  the bytes of each string. The entry's CRC32C runs over those length integers, the 4 checksum
  bytes and the string bytes.
* Numeric CRC32Cs cover the bytes exactly as stored (before any byte swap). A ``crc32c`` field
  absent from an entry is 0 (proto3), not "unchecked": TF compares against 0, and so does tf2pt.
* Partitioned variables: the full variable's entry lists its ``slices`` and holds no data; each
  slice is stored under the key ``OrderedCode(0, name, rank, start_0, length_0, ...)`` (see
  :func:`slice_key`), where a full extent (no ``length`` in the proto) is ``start=0, length=-1``.
  Like TF, tf2pt lists the full variable, hides the slice keys and assembles it on read, after
  checking at open that the slices tile the full shape exactly (no gaps, no overlaps).
* The key ``""`` holds the ``BundleHeaderProto`` (shard count, endianness, version). Big-endian
  bundles are byte-swapped on read; a header whose ``min_consumer`` is above 1 is refused.

Opening parses the index and checks it against the data files (every entry within its shard,
sizes consistent with shapes); tensor data is read lazily through memory maps, and each read
checks the tensor's CRC32C. Every problem raises a typed error from :mod:`tf2pt.errors`.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .. import dtypes
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from ._crc import crc32c, mask
from ._proto import ProtoError, as_bytes, as_int, as_int64, iter_fields, packed_varints, read_varint, tensor_shape
from ._sstable import TableError, read_table
from .base import DEFAULT_CHUNK, IndexedCheckpoint, VariableInfo, np, prod
from .files import read_regular, regular_size
from .roles import classify
from .slices import parse_slice_key, slice_key

HEADER_KEY = b""
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)

#: the most bytes :meth:`BundleCheckpoint.checked_bytes` hands over as one view; larger tensors
#: come in chunks of this size, each released once written. A 1 GiB tensor written whole from
#: the map held 1 GiB of it mapped while the page cache grew by as much (and in one interleaved
#: measurement its write stalled in 4 rounds of 7, chunks of 8-64 MiB in 1-2, `cp` in none)
WHOLE_BYTES = 32 << 20


@dataclass
class IndexEntry:
    """One ``BundleEntryProto`` of the index."""

    dtype: int
    shape: Tuple[int, ...]
    shard: int = 0
    offset: int = 0
    size: int = 0
    crc: int = 0  # proto3: an absent crc32c is 0, and TF checks it as 0
    slices: List[List[Tuple[int, Optional[int]]]] = field(default_factory=list)


def _parse_entry(value: bytes) -> IndexEntry:
    e = IndexEntry(dtype=0, shape=())
    for number, wire, v in iter_fields(value):
        if number == 1:
            e.dtype = as_int(v, "dtype")
        elif number == 2:
            e.shape = tensor_shape(as_bytes(v, "shape"))
        elif number == 3:
            e.shard = as_int64(v, "shard_id")
        elif number == 4:
            e.offset = as_int64(v, "offset")
        elif number == 5:
            e.size = as_int64(v, "size")
        elif number == 6:
            e.crc = as_int(v, "crc32c") & 0xFFFFFFFF
        elif number == 7:
            extents: List[Tuple[int, Optional[int]]] = []
            for n2, _, ext in iter_fields(as_bytes(v, "slice")):
                if n2 == 1:
                    start, length = 0, None
                    for n3, _, x in iter_fields(as_bytes(ext, "extent")):
                        if n3 == 1:
                            start = as_int64(x, "extent start")
                        elif n3 == 2:
                            length = as_int64(x, "extent length")
                    extents.append((start, length))
            e.slices.append(extents)
    return e


def _parse_header(value: bytes) -> Tuple[int, int, Tuple[int, int, List[int]]]:
    """``(num_shards, endianness, (producer, min_consumer, bad_consumers))``; proto3 defaults."""
    num_shards, endianness, version = 0, 0, (0, 0, [])
    for number, _, v in iter_fields(value):
        if number == 1:
            num_shards = as_int64(v, "num_shards")
        elif number == 2:
            endianness = as_int64(v, "endianness")
        elif number == 3:
            producer, min_consumer, bad = 0, 0, []
            for n2, _, x in iter_fields(as_bytes(v, "version")):
                if n2 == 1:
                    producer = as_int64(x, "producer")
                elif n2 == 2:
                    min_consumer = as_int64(x, "min_consumer")
                elif n2 == 3:
                    bad += [as_int64(y) for y in packed_varints(x)]
            version = (producer, min_consumer, bad)
    return num_shards, endianness, version


#: the tensor-bundle format version this reader implements (TF's ``kTensorBundleVersion``)
BUNDLE_VERSION = 1


class BundleCheckpoint(IndexedCheckpoint):
    """A V2 tensor bundle (also the ``variables/`` of a SavedModel)."""

    kind = "bundle"

    def __init__(self, path, prefix: str, kind: str = "bundle", notes=(), savedmodel_dir: Optional[str] = None):
        super().__init__(path)
        self.kind = kind
        self.prefix = prefix
        self.savedmodel_dir = savedmodel_dir
        self.notes = list(notes)
        self.index_path = prefix + ".index"
        self._maps: Dict[int, Optional[mmap.mmap]] = {}
        self._files: Dict[int, object] = {}
        self._load_index()

    # -- errors ---------------------------------------------------------------------------
    def _corrupt(self, problem: str, path: Optional[str] = None, hint: Optional[str] = None):
        return CorruptCheckpointError(problem, path=path or self.index_path,
                                      hint=hint or "the checkpoint is damaged; re-copy or re-save it")

    # -- index --------------------------------------------------------------------------------
    def _load_index(self) -> None:
        raw = read_regular(self.index_path, "checkpoint index")
        if not raw:
            raise self._corrupt("empty file (0 bytes), not a checkpoint index")
        try:
            table = read_table(raw)
        except TableError as exc:
            raise self._corrupt(str(exc)) from None
        if not table or table[0][0] != HEADER_KEY:
            raise self._corrupt("index has no bundle header (not a TF V2 checkpoint index)")
        try:
            self.num_shards, endianness, version = _parse_header(table[0][1])
        except ProtoError as exc:
            raise self._corrupt(f"malformed bundle header ({exc})") from None
        try:
            entries: Dict[str, IndexEntry] = {}
            raw_keys: Dict[bytes, IndexEntry] = {}
            for key, value in table[1:]:
                entry = _parse_entry(value)
                raw_keys[key] = entry
        except ProtoError as exc:
            raise self._corrupt(f"malformed index entry for {key[:60]!r} ({exc})") from None
        if not 1 <= self.num_shards <= 1_000_000:
            raise self._corrupt(f"header claims {self.num_shards} shards")
        if endianness not in (0, 1):
            raise self._corrupt(f"header names an unknown byte order ({endianness})")
        self.big_endian = endianness == 1
        producer, min_consumer, bad_consumers = version
        if producer < 0 or min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in bad_consumers:
            raise UnsupportedError(
                f"bundle format version (producer {producer}, min_consumer {min_consumer}) is not readable "
                f"by a version-{BUNDLE_VERSION} reader", path=self.index_path,
                hint="re-save it with TensorFlow, or use --backend tf with a TensorFlow that reads it")
        # Slice keys (OrderedCode, starting with a 0 byte) are hidden, as TF hides them; the
        # full variable's entry lists them.
        self._slices: Dict[bytes, IndexEntry] = {}
        for key, entry in raw_keys.items():
            if key[:1] == b"\x00" and parse_slice_key(key) is not None:
                self._slices[key] = entry
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise self._corrupt(f"variable name {key[:60]!r} is not valid UTF-8") from None
            entries[name] = entry
        self._entries = entries
        self._check_files()
        self._check_entries()
        self._check_data_claims()
        used = {slice_key(name, x) for name, e in entries.items() for x in e.slices} if self._slices else set()
        orphans = len(self._slices) - len(used)
        if orphans:
            self.notes.append(f"{orphans} partitioned-variable slice entr{'y' if orphans == 1 else 'ies'} "
                              "belong to no listed variable and were ignored")
        self.variables = self._describe()

    def _data_path(self, shard: int) -> str:
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def _check_files(self) -> None:
        self._sizes: Dict[int, int] = {}
        missing = []
        for shard in range(self.num_shards):
            p = self._data_path(shard)
            if not os.path.lexists(p):
                missing.append(p)
                continue
            self._sizes[shard] = regular_size(p, "data shard")
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise CheckpointNotFoundError(f"data shard missing ({os.path.basename(missing[0])}{more})", path=missing[0],
                                          hint="copy every PREFIX.data-*-of-* file next to the .index")
        self.files = [Path(self.index_path)] + [Path(self._data_path(s)) for s in range(self.num_shards)]

    def _check_extent(self, label: str, entry: IndexEntry) -> None:
        if any(d < 0 for d in entry.shape):
            raise self._corrupt(f"variable {label} has a negative dimension {list(entry.shape)}")
        if not 0 <= entry.shard < self.num_shards:
            raise self._corrupt(f"variable {label} is in shard {entry.shard}, but there are {self.num_shards}")
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > self._sizes[entry.shard]:
            raise self._corrupt(
                f"variable {label} claims bytes [{entry.offset}, {entry.offset + entry.size}) of a "
                f"{self._sizes[entry.shard]}-byte data file (truncated?)", path=self._data_path(entry.shard))
        n = prod(entry.shape)
        if not dtypes.is_supported(entry.dtype):
            return  # unsupported dtype: listed, refused on read
        if dtypes.is_string(entry.dtype):
            if entry.size < 4 + n:  # at least one length byte per element and the length CRC
                raise self._corrupt(f"string variable {label} has {n} elements but only {entry.size} bytes")
        elif n * dtypes.itemsize(entry.dtype) != entry.size:
            raise self._corrupt(
                f"variable {label}: shape {list(entry.shape)} x {dtypes.name(entry.dtype)} is "
                f"{n * dtypes.itemsize(entry.dtype)} bytes, but the index says {entry.size}")

    def _check_entries(self) -> None:
        for name, entry in self._entries.items():
            if entry.slices:
                if not entry.shape or any(d < 0 for d in entry.shape):
                    raise self._corrupt(f"partitioned variable {name!r} has shape {list(entry.shape)}")
                for extents in entry.slices:
                    if len(extents) != len(entry.shape):
                        raise self._corrupt(f"partitioned variable {name!r} has a slice of the wrong rank")
                    for (start, length), dim in zip(extents, entry.shape):
                        if (length is None and start != 0) or start < 0 or (
                                length is not None and (length < 0 or start + length > dim)):
                            raise self._corrupt(f"partitioned variable {name!r} has a slice outside its shape")
                    key = slice_key(name, extents)
                    part = self._slices.get(key)
                    if part is None:
                        raise self._corrupt(f"partitioned variable {name!r} is missing a slice")
                    if part.dtype != entry.dtype:
                        raise self._corrupt(f"partitioned variable {name!r} has a slice of another dtype")
                    want = tuple(dim if length is None else length for (_, length), dim in zip(extents, entry.shape))
                    if part.shape != want:
                        raise self._corrupt(f"partitioned variable {name!r} has a slice of shape {list(part.shape)}, expected {list(want)}")
                    self._check_extent(repr(name) + " (slice)", part)
                self._check_tiling(name, entry)
            else:
                self._check_extent(repr(name), entry)

    #: slices checked pairwise at most (TF partitions along one axis, checked in n log n; a
    #: crafted tiling along several axes could otherwise cost n**2)
    MAX_MULTI_AXIS_SLICES = 4096

    def _check_tiling(self, name: str, entry: IndexEntry) -> None:
        """The slices of a partitioned variable cover its shape exactly once (TF refuses to
        restore a variable its slices do not cover; overlaps would be ambiguous)."""
        boxes = [[(start, dim if length is None else start + length) for (start, length), dim in zip(x, entry.shape)]
                 for x in entry.slices]
        covered = sum(prod(hi - lo for lo, hi in box) for box in boxes)
        if covered != prod(entry.shape):
            raise self._corrupt(f"partitioned variable {name!r}: its slices cover {covered} of "
                                f"{prod(entry.shape)} elements")
        cut = [d for d, dim in enumerate(entry.shape) if any(box[d] != (0, dim) for box in boxes)]
        if len(cut) <= 1:  # one partitioned axis, as TF writes: sorted, each slice starts where one ends
            axis = cut[0] if cut else 0
            spans = sorted(box[axis] for box in boxes)
            end = 0
            for lo, hi in spans:
                if lo != end:
                    raise self._corrupt(f"partitioned variable {name!r} has overlapping slices")
                end = hi
            return
        if len(boxes) > self.MAX_MULTI_AXIS_SLICES:
            raise UnsupportedError(f"partitioned variable {name!r} has {len(boxes)} slices along {len(cut)} axes "
                                   f"(tf2pt checks at most {self.MAX_MULTI_AXIS_SLICES} such slices)",
                                   path=self.index_path)
        # sweep along the axis with the most distinct starts
        axis = max(cut, key=lambda d: len({box[d][0] for box in boxes}))
        boxes.sort(key=lambda box: box[axis])
        for i, a in enumerate(boxes):
            for j in range(i + 1, len(boxes)):
                b = boxes[j]
                if b[axis][0] >= a[axis][1]:
                    break
                if all(bl < ah and al < bh for (al, ah), (bl, bh) in zip(a, b)):
                    raise self._corrupt(f"partitioned variable {name!r} has overlapping slices")

    def _check_data_claims(self) -> None:
        """No two entries share data: each shard's entries claim at most its size in all. (TF
        stores every tensor once; entries pointing at the same bytes would make a small file
        write a huge output.)"""
        claimed: Dict[int, int] = {}
        for entry in list(self._entries.values()) + list(self._slices.values()):
            if not entry.slices:
                claimed[entry.shard] = claimed.get(entry.shard, 0) + entry.size
        for shard, total in claimed.items():
            if total > self._sizes.get(shard, 0):
                raise self._corrupt(f"its entries claim {total} bytes of a {self._sizes.get(shard, 0)}-byte data file: "
                                    "some share the same data", path=self._data_path(shard))

    def _describe(self) -> Dict[str, VariableInfo]:
        from .metagraph import recorded_roles
        from .objgraph import decode, keys_by_node

        graph = {}
        nodes: Dict[int, List[str]] = {}
        og = self._entries.get(OBJECT_GRAPH_KEY)
        if og is not None and (og.dtype != 7 or og.shape != () or og.slices):
            self.notes.append(f"{OBJECT_GRAPH_KEY} is not a scalar string; readable names are not available")
        elif og is not None:
            try:  # read without numpy: the listing does not need it
                (data,) = self._string_list(repr(OBJECT_GRAPH_KEY), og, self._bytes(og), 1)
                graph = decode(data)
                nodes = keys_by_node(data) if self.savedmodel_dir else {}
            except ProtoError as exc:
                raise self._corrupt(f"the object graph ({OBJECT_GRAPH_KEY}) is malformed ({exc})") from None
        # what the graph itself records (.meta collections, SavedVariable.trainable) before names
        recorded, recorded_from = recorded_roles(self.prefix, self.savedmodel_dir, nodes)
        out: Dict[str, VariableInfo] = {}
        overridden = 0
        for name in sorted(self._entries):
            e = self._entries[name]
            g = graph.get(name)
            role, reason = classify(name, slot_of=g.slot_of if g else None, owner=g.owner if g else None,
                                    recorded=recorded.get(name))
            if name == OBJECT_GRAPH_KEY:
                role, reason = "training", "object graph"
            elif recorded.get(name) and "recorded in the graph" in reason:
                overridden += 1
            size = sum(self._slices[slice_key(name, x)].size for x in e.slices) if e.slices else e.size
            out[name] = VariableInfo(
                name=name, dtype=dtypes.name(e.dtype), shape=tuple(e.shape), nbytes=size, role=role, role_reason=reason,
                readable_name=g.readable_name if g else None, slot_of=g.slot_of if g else None,
                slot_name=g.slot_name if g else None, partitions=len(e.slices), shard=e.shard,
            )
        if overridden:
            self.notes.append(f"{overridden} variable{'s' if overridden != 1 else ''} named like training state "
                              f"{'are' if overridden != 1 else 'is'} recorded as model variables in {recorded_from}: "
                              "listed as inference")
        return out

    # -- data -------------------------------------------------------------------------------------
    def _map(self, shard: int):
        if shard not in self._maps:
            path = self._data_path(shard)
            try:
                fh = self._open_shard(path)
            except OSError as exc:
                hint = "raise the open-file limit (ulimit -n)" if exc.errno in (errno.EMFILE, errno.ENFILE) else None
                raise CheckpointNotFoundError(f"cannot open data shard: {exc.strerror}", path=path, hint=hint) from None
            st = os.fstat(fh.fileno())
            size = st.st_size
            if not stat.S_ISREG(st.st_mode) or size != self._sizes[shard]:
                fh.close()
                raise self._corrupt("data file changed size while open", path=path)
            self._files[shard] = fh
            try:
                self._maps[shard] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            except OSError as exc:  # the map holds a descriptor of its own
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._close_idle(keep=shard):
                    raise
                self._maps[shard] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[shard]

    def _open_shard(self, path: str):
        try:
            return open(path, "rb")
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._close_idle():
                raise
            return open(path, "rb")

    def _close_idle(self, keep: Optional[int] = None) -> bool:
        """Out of file descriptors (a bundle of more shards than ``ulimit -n``): close the maps
        no array views any more (a later read maps them again). Whether any was closed."""
        closed = False
        for shard in [s for s in self._maps if s != keep]:
            mm = self._maps[shard]
            try:
                if mm is not None:
                    mm.close()
            except BufferError:  # still viewed
                continue
            self._files.pop(shard).close()
            del self._maps[shard]
            closed = True
        return closed

    def _bytes(self, entry: IndexEntry) -> memoryview:
        mm = self._map(entry.shard)
        if mm is None:
            return memoryview(b"")
        # a map of a file truncated under us faults (SIGBUS) where it is read: check first
        if os.fstat(self._files[entry.shard].fileno()).st_size != self._sizes[entry.shard]:
            raise self._corrupt("data file changed size while it was read (rewritten by another process?)",
                                path=self._data_path(entry.shard), hint="let the writer finish, then retry")
        return memoryview(mm)[entry.offset: entry.offset + entry.size]

    def _check_crc(self, label: str, entry: IndexEntry, data) -> None:
        if mask(crc32c(data)) != entry.crc:
            raise self._corrupt(f"variable {label} fails its CRC32C check (data corrupted)",
                                path=self._data_path(entry.shard))

    def _entry_array(self, label: str, entry: IndexEntry, check_crc: bool) -> np.ndarray:
        np_dtype = dtypes.numpy_dtype(entry.dtype, self.big_endian)
        if np_dtype is None:
            raise UnsupportedError(f"variable {label} has dtype {dtypes.name(entry.dtype)}, which has no array form",
                                   path=self.index_path, hint="exclude it (it is not a model weight)")
        data = self._bytes(entry)
        n = prod(entry.shape)
        if np_dtype == object:
            return self._strings(label, entry, data, n)  # checks its own CRCs
        if check_crc:
            self._check_crc(label, entry, data)
        array = np.frombuffer(data, dtype=np_dtype, count=n).reshape(entry.shape)
        if self.big_endian and np_dtype.itemsize > 1:
            array = array.astype(np_dtype.newbyteorder("="))
        return array

    def _strings(self, label: str, entry: IndexEntry, data, n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = self._string_list(label, entry, data, n)
        return out.reshape(entry.shape)

    def _string_list(self, label: str, entry: IndexEntry, data, n: int) -> List[bytes]:
        """Varint64 lengths, a fixed32 masked CRC32C, then the bytes. For backward compatibility
        TF checksums each length as a uint32 (uint64 above 2**32 - 1) in the writer's byte order,
        not as its varint; the entry's CRC continues over the length checksum and the string bytes."""
        buf = bytes(data)
        order = "big" if self.big_endian else "little"  # the writer's byte order, for the checksums
        pos, lengths = 0, []
        length_crc = 0
        try:
            for _ in range(n):
                length, pos = read_varint(buf, pos, len(buf))
                lengths.append(length)
                length_crc = crc32c(length.to_bytes(4 if length <= 0xFFFFFFFF else 8, order), length_crc)
        except ProtoError:
            raise self._corrupt(f"string variable {label} has malformed lengths") from None
        except OverflowError:
            raise self._corrupt(f"string variable {label} has a length above 2**64") from None
        if pos + 4 > len(buf):
            raise self._corrupt(f"string variable {label} is truncated")
        if mask(length_crc) != int.from_bytes(buf[pos:pos + 4], order):
            raise self._corrupt(f"string variable {label} fails its length CRC32C check (data corrupted)",
                                path=self._data_path(entry.shard))
        if mask(crc32c(buf[pos:], length_crc)) != entry.crc:
            raise self._corrupt(f"string variable {label} fails its CRC32C check (data corrupted)",
                                path=self._data_path(entry.shard))
        pos += 4
        if pos + sum(lengths) != len(buf):
            raise self._corrupt(f"string variable {label}: lengths do not add up to its {len(buf)} bytes")
        out = []
        for length in lengths:
            out.append(buf[pos:pos + length])
            pos += length
        return out

    def read(self, name: str, check_crc: bool = True) -> np.ndarray:
        """The tensor ``name`` as a numpy array: a read-only view of the memory-mapped file when
        the data needs no conversion, else a copy. ``check_crc`` checks its CRC32C first."""
        entry = self._entries.get(name)
        if entry is None:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.index_path)
        if not entry.slices:
            return self._entry_array(repr(name), entry, check_crc)
        np_dtype = dtypes.numpy_dtype(entry.dtype)
        if np_dtype is None:
            raise UnsupportedError(f"variable {name!r} has dtype {dtypes.name(entry.dtype)}, which has no array form",
                                   path=self.index_path)
        full = np.zeros(entry.shape, dtype=np_dtype if np_dtype != object else object)
        for extents in entry.slices:
            part = self._slices[slice_key(name, extents)]
            index = tuple(slice(None) if length is None else slice(start, start + length) for start, length in extents)
            full[index] = self._entry_array(f"{name!r} (slice)", part, check_crc)
        return full

    def verify_crc(self, name: str) -> None:
        """Check the CRC32C of ``name``'s stored bytes (of each slice of a partitioned variable),
        as ``read(name)`` does: for data read with ``check_crc=False`` before it is written."""
        entry = self._entries.get(name)
        if entry is None:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.index_path)
        label = f"{name!r} (slice)" if entry.slices else repr(name)
        for part in self._parts(name, entry):
            if dtypes.numpy_dtype(part.dtype, self.big_endian) not in (None, object):  # strings check their own
                self._check_crc(label, part, self._bytes(part))

    def _parts(self, name: str, entry: IndexEntry) -> List[IndexEntry]:
        """Where ``name``'s bytes are stored: its slices' entries, or its own."""
        return [self._slices[slice_key(name, x)] for x in entry.slices] if entry.slices else [entry]

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK) -> Iterator[memoryview]:
        """Raw little-endian bytes of ``name`` in chunks, straight from the memory map.

        The CRC32C is computed on the way; a mismatch raises before the last chunk is yielded,
        so a streaming writer never finishes a file with corrupt data. A chunk's pages are
        released when the chunk after next is asked for: the consumer may be writing one chunk
        while the next is made ready, so the last chunk's pages are left to :meth:`release`.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.index_path)
        if entry.slices or self.big_endian or not dtypes.numeric_on_disk(entry.dtype):
            yield from super().iter_chunks(name, chunk_bytes)
            return
        data = self._bytes(entry)
        crc = 0
        total = len(data)
        written = None  # (offset, size) of the chunk before the one last yielded
        last = None  # (offset, size) of the chunk last yielded
        for start in range(0, max(total, 1), chunk_bytes):
            chunk = data[start:start + chunk_bytes]
            crc = crc32c(chunk, crc) if len(chunk) else crc
            if start + chunk_bytes >= total and mask(crc) != entry.crc:
                raise self._corrupt(f"variable {name!r} fails its CRC32C check (data corrupted)",
                                    path=self._data_path(entry.shard))
            if written is not None:
                self._release_range(entry.shard, entry.offset + written[0], written[1])  # written: drop its pages
            if len(chunk):
                yield chunk
                written, last = last, (start, len(chunk))
        if written is not None:
            self._release_range(entry.shard, entry.offset + written[0], written[1])

    def copy_to(self, name: str, sink) -> None:
        """Write the raw bytes of ``name`` to ``sink`` (see :class:`tf2pt.write.safetensors.Sink`)
        straight from the memory map, in chunks of :data:`WHOLE_BYTES`: the CRC32C is computed
        on the way (a mismatch raises before the last chunk is written) and each chunk's pages
        are released once written, so a tensor of any size holds at most three chunks mapped."""
        for chunk in self.iter_chunks(name, WHOLE_BYTES):
            sink.write(chunk)
        self.release(name)

    def checked_bytes(self, name: str):
        """The raw little-endian bytes of ``name`` as a view of the memory map, CRC32C checked,
        when they are stored whole as they are to be written; above :data:`WHOLE_BYTES`, an
        iterator of views of that size (:meth:`iter_chunks`: the CRC32C is checked before the
        last is yielded). ``None`` for partitioned, big-endian, string and unknown variables
        (use :meth:`copy_to`)."""
        entry = self._entries.get(name)
        if entry is None or entry.slices or self.big_endian or not dtypes.numeric_on_disk(entry.dtype):
            return None
        if entry.size > WHOLE_BYTES:
            return self.iter_chunks(name, WHOLE_BYTES)
        data = self._bytes(entry)
        self._check_crc(repr(name), entry, data)
        return data

    def _release_range(self, shard: int, offset: int, size: int) -> None:
        """Drop the pages of ``[offset, offset + size)`` from this process's memory (they stay
        in the page cache), so streaming a large checkpoint does not grow the RSS."""
        mm = self._maps.get(shard)
        if mm is None or _MADV_DONTNEED is None or size <= 0:
            return
        start = offset - offset % mmap.PAGESIZE  # madvise wants an aligned start; the kernel rounds the end
        end = min(offset + size, len(mm))
        if end > start:
            try:
                mm.madvise(_MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass

    def release(self, name: Optional[str]) -> None:
        """Done with ``name``: release its pages (a later read maps them again)."""
        entry = self._entries.get(name) if name is not None else None
        if entry is None:
            return
        for part in self._parts(name, entry):
            self._release_range(part.shard, part.offset, part.size)

    def entry_location(self, name: str) -> Tuple[int, int]:
        """``(shard, offset)`` of a variable's data, for reading in file order."""
        e = self._entries[name]
        if e.slices:
            first = self._slices[slice_key(name, e.slices[0])]
            return (first.shard, first.offset)
        return (e.shard, e.offset)

    def close(self) -> None:
        for shard, mm in list(self._maps.items()):
            if mm is not None:
                try:
                    mm.close()
                except BufferError:  # arrays still view it; the map closes when they are gone
                    pass
        for fh in self._files.values():
            fh.close()
        self._maps.clear()
        self._files.clear()
