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

import glob
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import dtypes
from ._crc import crc32c, mask
from ._proto import ProtoError, as_bytes, as_int, as_int64, iter_fields, read_varint, tensor_shape
from ._sstable import TableError, read_table
from .errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedError
from .roles import classify


class _Numpy:
    """numpy, imported on first use: listing a checkpoint (``tf2pt inspect``) does not need it,
    and importing it is most of the listing's time."""

    def __getattr__(self, name):
        import numpy

        return getattr(numpy, name)


np = _Numpy()

HEADER_KEY = b""
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
DEFAULT_CHUNK = 64 << 20

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


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

    @property
    def num_elements(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def partitioned(self) -> int:
        """Number of slices of a partitioned variable; 0 (false) when stored whole."""
        return self.partitions


@dataclass
class _Entry:
    dtype: int
    shape: Tuple[int, ...]
    shard: int = 0
    offset: int = 0
    size: int = 0
    crc: int = 0  # proto3: an absent crc32c is 0, and TF checks it as 0
    slices: List[List[Tuple[int, Optional[int]]]] = field(default_factory=list)


class Checkpoint:
    """Base class of every checkpoint source; all share this interface.

    * ``path``: what the user gave; ``prefix``: the resolved bundle prefix (or the file read);
    * ``kind``: ``"bundle"``, ``"savedmodel"``, ``"graphdef"``, ...;
    * ``files``: the :class:`~pathlib.Path` of every file the source reads (for hashing, provenance);
    * ``notes``: one-line remarks for the user (e.g. the state-file fallback);
    * ``variables``: name -> :class:`VariableInfo`, sorted by name, built without reading data;
    * ``read(name, verify=True)``, ``iter_chunks(name, chunk_bytes)``, ``close()``; a context manager.

    A new source implements ``__init__`` (fill the attributes above) and ``read``; the generic
    ``iter_chunks`` slices what ``read`` returns.
    """

    kind = "base"

    def __init__(self, path):
        self.path = os.fspath(path)
        self.prefix: Optional[str] = None
        self.files: List[Path] = []
        self.notes: List[str] = []
        self.variables: Dict[str, VariableInfo] = {}

    def read(self, name: str, verify: bool = True) -> np.ndarray:
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
        """Write the raw little-endian bytes of ``name`` to ``sink`` (a :class:`tf2pt.writer.Sink`)."""
        for chunk in self.iter_chunks(name):
            sink.write(chunk)

    def verified_bytes(self, name: str) -> Optional[memoryview]:
        """The raw bytes of ``name`` as one checked buffer, where the source holds them so;
        ``None`` here (use :meth:`copy_to`)."""
        return None

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


# ----------------------------------------------------------------------------------------------
# OrderedCode, for the keys of partitioned-variable slices (tensorflow/core/lib/strings/ordered_code)
# ----------------------------------------------------------------------------------------------


def _num_increasing(value: int) -> bytes:
    """Unsigned: a length byte, then the big-endian bytes."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def _escape(value: bytes) -> bytes:
    out = bytearray()
    for b in value:
        if b == 0x00:
            out += b"\x00\xff"
        elif b == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(b)
    return bytes(out) + b"\x00\x01"


_HEADER_BITS = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0),
                (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]


def _signed_num_increasing(value: int) -> bytes:
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(_HEADER_BITS[1][0] ^ value) & 0xFF])
    length = (x.bit_length() + 7) // 7
    buf = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big"))  # sign-extended to 10 bytes
    begin = buf[10 - length:]
    begin[0] ^= _HEADER_BITS[length][0]
    begin[1] ^= _HEADER_BITS[length][1]
    return bytes(begin)


def slice_key(name: str, extents: Sequence[Tuple[int, Optional[int]]]) -> bytes:
    """The index key TF stores one slice of a partitioned variable under.

    ``extents`` holds ``(start, length)`` per dimension; ``length=None`` is a full dimension
    (a ``TensorSliceProto`` extent without ``length``), encoded like TF's ``TensorSlice`` as
    ``start`` (0) and length ``-1``.
    """
    key = _num_increasing(0) + _escape(name.encode("utf-8")) + _num_increasing(len(extents))
    for start, length in extents:
        key += _signed_num_increasing(start) + _signed_num_increasing(-1 if length is None else length)
    return key


def _read_num_increasing(key: bytes, pos: int) -> Tuple[int, int]:
    n = key[pos]
    if n > 8 or pos + 1 + n > len(key):
        raise ValueError("bad unsigned number")
    return int.from_bytes(key[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def _read_escaped(key: bytes, pos: int) -> Tuple[bytes, int]:
    out = bytearray()
    while pos + 1 < len(key):
        b, nxt = key[pos], key[pos + 1]
        if b == 0x00:
            if nxt == 0x01:
                return bytes(out), pos + 2
            if nxt != 0xFF:
                raise ValueError("bad escape")
            out.append(0x00)
            pos += 2
        elif b == 0xFF:
            if nxt != 0x00:
                raise ValueError("bad escape")
            out.append(0xFF)
            pos += 2
        else:
            out.append(b)
            pos += 1
    raise ValueError("unterminated string")


def _read_signed_num_increasing(key: bytes, pos: int) -> Tuple[int, int]:
    if pos >= len(key):
        raise ValueError("missing signed number")
    first = key[pos]
    # the first two bytes; past the end, bits opposite to the sign bit (they end the length count)
    window = first << 8 | (key[pos + 1] if pos + 1 < len(key) else (0x00 if first & 0x80 else 0xFF))
    negative = not window & 0x8000
    if negative:
        window ^= 0xFFFF
    length = min(16 - (window ^ 0xFFFF).bit_length(), 10)  # leading bits equal to the sign bit
    raw = key[pos:pos + length]
    if len(raw) != length:
        raise ValueError("truncated signed number")
    bits = int.from_bytes(raw, "big") ^ (_HEADER_BITS[length][0] << 8 * (length - 1))
    if length >= 2:
        bits ^= _HEADER_BITS[length][1] << 8 * (length - 2)
    value = bits - (1 << 8 * length) if negative else bits  # two's complement of the low bytes
    if not -(1 << 63) <= value < (1 << 63) or _signed_num_increasing(value) != raw:
        raise ValueError("non-canonical signed number")
    return value, pos + length


def parse_slice_key(key: bytes) -> Optional[Tuple[str, List[Tuple[int, Optional[int]]]]]:
    """Inverse of :func:`slice_key`: ``(name, extents)``, or ``None`` if ``key`` is not one."""
    try:
        zero, pos = _read_num_increasing(key, 0)
        if zero != 0:
            return None
        name, pos = _read_escaped(key, pos)
        rank, pos = _read_num_increasing(key, pos)
        extents: List[Tuple[int, Optional[int]]] = []
        for _ in range(rank):
            start, pos = _read_signed_num_increasing(key, pos)
            length, pos = _read_signed_num_increasing(key, pos)
            extents.append((start, None if length == -1 else length))
        if pos != len(key) or rank == 0:
            return None
        return name.decode("utf-8"), extents
    except (ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------------------------
# path resolution
# ----------------------------------------------------------------------------------------------


_SIMPLE_ESCAPES = {ord("n"): 0x0A, ord("t"): 0x09, ord("r"): 0x0D, ord("a"): 0x07, ord("b"): 0x08, ord("f"): 0x0C,
                   ord("v"): 0x0B}


def _unescape_text_proto(raw: bytes) -> str:
    """A text-format string literal's body (C escapes: \\n, \\", octal \\303, hex \\xc3) as text;
    the bytes are UTF-8 (TF writes non-ASCII paths raw or octal-escaped)."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c != 0x5C or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = raw[i + 1]
        if 0x30 <= e <= 0x37:  # up to three octal digits
            j = i + 1
            while j < min(i + 4, n) and 0x30 <= raw[j] <= 0x37:
                j += 1
            out.append(int(raw[i + 1:j], 8) & 0xFF)
            i = j
        elif e in (ord("x"), ord("X")):
            j = i + 2
            while j < min(i + 4, n) and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 2:j], 16) if j > i + 2 else e)
            i = j
        else:
            out.append(_SIMPLE_ESCAPES.get(e, e))
            i += 2
    return out.decode("utf-8", "surrogateescape")


def _parse_state_file(path: str) -> Optional[str]:
    """``model_checkpoint_path`` of a ``checkpoint`` state file (a text ``CheckpointState``)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError:
        return None
    m = re.search(rb'^\s*model_checkpoint_path\s*:\s*(["\'])((?:(?!\1)[^\\\n]|\\.)*)\1', data, re.M)
    if not m:
        return None
    return _unescape_text_proto(m.group(2))


def _refuse_v1(path: str) -> None:
    """A V1 checkpoint is one file, itself a table (same magic as an index): say so clearly."""
    try:
        if os.path.isfile(path) and os.path.getsize(path) >= 48:
            with open(path, "rb") as fh:
                fh.seek(-8, os.SEEK_END)
                magic = int.from_bytes(fh.read(8), "little")
        else:
            return
    except OSError:
        return
    if magic == 0xDB4775248B80FB57:
        raise UnsupportedError("a TF V1 checkpoint (single-file format); tf2pt reads V2 bundles (.index + .data)",
                               path=path, hint="load it in TensorFlow and save it again with tf.compat.v1.train.Saver(), "
                                               "which writes V2 by default")


def resolve(path) -> Tuple[str, str, List[str], Optional[str]]:
    """``(prefix, kind, notes, savedmodel_dir)`` for any accepted form of checkpoint path."""
    path = os.fspath(path)
    notes: List[str] = []
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")) and (
            os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))
        ):
            return os.path.join(path, "variables", "variables"), "savedmodel", notes, path
        state = os.path.join(path, "checkpoint")
        if os.path.isfile(state):
            named = _parse_state_file(state)
            if named is None:
                raise CheckpointNotFoundError("the 'checkpoint' state file names no model_checkpoint_path", path=state,
                                              hint="pass the checkpoint prefix instead")
            candidate = named if os.path.isabs(named) else os.path.join(path, named)
            if os.path.isfile(candidate + ".index"):
                return candidate, "bundle", notes, None
            _refuse_v1(candidate)
            beside = os.path.join(path, os.path.basename(named.rstrip("/\\")))
            _refuse_v1(beside)
            if os.path.isfile(beside + ".index"):
                notes.append(f"the 'checkpoint' file names {named!r}, which does not exist here; "
                             f"using {os.path.basename(beside)!r} next to it")
                return beside, "bundle", notes, None
            raise CheckpointNotFoundError(
                f"the 'checkpoint' state file names {named!r}, which does not exist, and no bundle "
                f"{os.path.basename(named)!r} is next to it", path=state,
                hint="copy the .index and .data files next to the state file, or pass the prefix")
        indexes = sorted(glob.glob(os.path.join(glob.escape(path), "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")], "bundle", notes, None
        if not indexes:
            raise CheckpointNotFoundError("no checkpoint in this directory (no *.index, 'checkpoint' file or SavedModel)",
                                          path=path, hint="pass a checkpoint prefix such as DIR/model.ckpt-1000")
        names = ", ".join(os.path.basename(i)[: -len(".index")] for i in indexes[:5])
        raise CheckpointNotFoundError(f"{len(indexes)} checkpoints in this directory ({names}{', ...' if len(indexes) > 5 else ''})",
                                      path=path, hint="pass one prefix, e.g. DIR/" + os.path.basename(indexes[-1])[:-6])
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)], "bundle", notes, None
    if _DATA_SUFFIX.search(path):
        return _DATA_SUFFIX.sub("", path), "bundle", notes, None
    if os.path.isfile(path + ".index"):
        return path, "bundle", notes, None
    if os.path.isfile(path):
        _refuse_v1(path)
        raise CheckpointNotFoundError("not a checkpoint (no PREFIX.index next to it)", path=path,
                                      hint="pass the checkpoint prefix, its .index, or its directory")
    raise CheckpointNotFoundError("no such file or directory", path=path,
                                  hint="pass a checkpoint prefix (e.g. model.ckpt-1000), its .index, or a directory")


# ----------------------------------------------------------------------------------------------
# the bundle reader
# ----------------------------------------------------------------------------------------------


def _parse_entry(value: bytes) -> _Entry:
    e = _Entry(dtype=0, shape=())
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
                    bad += [as_int64(y) for y in ([x] if isinstance(x, int) else _packed(x))]
            version = (producer, min_consumer, bad)
    return num_shards, endianness, version


def _packed(value: bytes) -> List[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = read_varint(value, pos, len(value))
        out.append(v)
    return out


#: the tensor-bundle format version this reader implements (TF's ``kTensorBundleVersion``)
BUNDLE_VERSION = 1


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class BundleCheckpoint(Checkpoint):
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
        try:
            with open(self.index_path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise CheckpointNotFoundError("checkpoint index not found", path=self.index_path) from None
        except OSError as exc:
            raise CheckpointNotFoundError(f"cannot read: {exc.strerror}", path=self.index_path) from None
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
            entries: Dict[str, _Entry] = {}
            raw_keys: Dict[bytes, _Entry] = {}
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
        self._slices: Dict[bytes, _Entry] = {}
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
            try:
                self._sizes[shard] = os.path.getsize(p)
            except OSError:
                missing.append(p)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise CheckpointNotFoundError(f"data shard missing ({os.path.basename(missing[0])}{more})", path=missing[0],
                                          hint="copy every PREFIX.data-*-of-* file next to the .index")
        self.files = [Path(self.index_path)] + [Path(self._data_path(s)) for s in range(self.num_shards)]

    def _check_extent(self, label: str, entry: _Entry) -> None:
        if any(d < 0 for d in entry.shape):
            raise self._corrupt(f"variable {label} has a negative dimension {list(entry.shape)}")
        if not 0 <= entry.shard < self.num_shards:
            raise self._corrupt(f"variable {label} is in shard {entry.shard}, but there are {self.num_shards}")
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > self._sizes[entry.shard]:
            raise self._corrupt(
                f"variable {label} claims bytes [{entry.offset}, {entry.offset + entry.size}) of a "
                f"{self._sizes[entry.shard]}-byte data file (truncated?)", path=self._data_path(entry.shard))
        n = _prod(entry.shape)
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

    def _check_tiling(self, name: str, entry: _Entry) -> None:
        """The slices of a partitioned variable cover its shape exactly once (TF refuses to
        restore a variable its slices do not cover; overlaps would be ambiguous)."""
        boxes = [[(start, dim if length is None else start + length) for (start, length), dim in zip(x, entry.shape)]
                 for x in entry.slices]
        covered = sum(_prod(hi - lo for lo, hi in box) for box in boxes)
        if covered != _prod(entry.shape):
            raise self._corrupt(f"partitioned variable {name!r}: its slices cover {covered} of "
                                f"{_prod(entry.shape)} elements")
        # sweep along the axis with the most distinct starts (the partitioned axis)
        axis = max(range(len(entry.shape)), key=lambda d: len({box[d][0] for box in boxes}))
        boxes.sort(key=lambda box: box[axis])
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                if b[axis][0] >= a[axis][1]:
                    break
                if all(bl < ah and al < bh for (al, ah), (bl, bh) in zip(a, b)):
                    raise self._corrupt(f"partitioned variable {name!r} has overlapping slices")

    def _describe(self) -> Dict[str, VariableInfo]:
        from .objgraph import decode

        graph = {}
        og = self._entries.get(OBJECT_GRAPH_KEY)
        if og is not None and (og.dtype != 7 or og.shape != () or og.slices):
            self.notes.append(f"{OBJECT_GRAPH_KEY} is not a scalar string; readable names are not available")
        elif og is not None:
            try:  # read without numpy: the listing does not need it
                (data,) = self._string_list(repr(OBJECT_GRAPH_KEY), og, self._bytes(og), 1)
                graph = decode(data)
            except ProtoError as exc:
                raise self._corrupt(f"the object graph ({OBJECT_GRAPH_KEY}) is malformed ({exc})") from None
        out: Dict[str, VariableInfo] = {}
        for name in sorted(self._entries):
            e = self._entries[name]
            g = graph.get(name)
            role, reason = classify(name, slot_of=g.slot_of if g else None, owner=g.owner if g else None)
            if name == OBJECT_GRAPH_KEY:
                role, reason = "training", "object graph"
            size = sum(self._slices[slice_key(name, x)].size for x in e.slices) if e.slices else e.size
            out[name] = VariableInfo(
                name=name, dtype=dtypes.name(e.dtype), shape=tuple(e.shape), nbytes=size, role=role, role_reason=reason,
                readable_name=g.readable_name if g else None, slot_of=g.slot_of if g else None,
                slot_name=g.slot_name if g else None, partitions=len(e.slices), shard=e.shard,
            )
        return out

    # -- data -------------------------------------------------------------------------------------
    def _map(self, shard: int):
        if shard not in self._maps:
            path = self._data_path(shard)
            try:
                fh = open(path, "rb")
            except OSError as exc:
                raise CheckpointNotFoundError(f"cannot open data shard: {exc.strerror}", path=path) from None
            size = os.fstat(fh.fileno()).st_size
            if size != self._sizes[shard]:
                fh.close()
                raise self._corrupt("data file changed size while open", path=path)
            self._files[shard] = fh
            self._maps[shard] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        return self._maps[shard]

    def _bytes(self, entry: _Entry) -> memoryview:
        mm = self._map(entry.shard)
        if mm is None:
            return memoryview(b"")
        return memoryview(mm)[entry.offset: entry.offset + entry.size]

    def _verify(self, label: str, entry: _Entry, data) -> None:
        if entry.crc is None:
            return
        if mask(crc32c(data)) != entry.crc:
            raise self._corrupt(f"variable {label} fails its CRC32C check (data corrupted)",
                                path=self._data_path(entry.shard))

    def _entry_array(self, label: str, entry: _Entry, verify: bool) -> np.ndarray:
        np_dtype = dtypes.numpy_dtype(entry.dtype, self.big_endian)
        if np_dtype is None:
            raise UnsupportedError(f"variable {label} has dtype {dtypes.name(entry.dtype)}, which has no array form",
                                   path=self.index_path, hint="exclude it (it is not a model weight)")
        data = self._bytes(entry)
        n = _prod(entry.shape)
        if np_dtype == object:
            return self._strings(label, entry, data, n)  # checks its own CRCs
        if verify:
            self._verify(label, entry, data)
        array = np.frombuffer(data, dtype=np_dtype, count=n).reshape(entry.shape)
        if self.big_endian and np_dtype.itemsize > 1:
            array = array.astype(np_dtype.newbyteorder("="))
        return array

    def _strings(self, label: str, entry: _Entry, data, n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = self._string_list(label, entry, data, n)
        return out.reshape(entry.shape)

    def _string_list(self, label: str, entry: _Entry, data, n: int) -> List[bytes]:
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

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The tensor ``name`` as a numpy array: a read-only view of the memory-mapped file when
        the data needs no conversion, else a copy. ``verify`` checks its CRC32C first."""
        entry = self._entries.get(name)
        if entry is None:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.index_path)
        if not entry.slices:
            return self._entry_array(repr(name), entry, verify)
        np_dtype = dtypes.numpy_dtype(entry.dtype)
        if np_dtype is None:
            raise UnsupportedError(f"variable {name!r} has dtype {dtypes.name(entry.dtype)}, which has no array form",
                                   path=self.index_path)
        full = np.zeros(entry.shape, dtype=np_dtype if np_dtype != object else object)
        for extents in entry.slices:
            part = self._slices[slice_key(name, extents)]
            index = tuple(slice(None) if length is None else slice(start, start + length) for start, length in extents)
            full[index] = self._entry_array(f"{name!r} (slice)", part, verify)
        return full

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK) -> Iterator[memoryview]:
        """Raw little-endian bytes of ``name`` in chunks, straight from the memory map.

        The CRC32C is computed on the way; a mismatch raises before the last chunk is yielded,
        so a streaming writer never finishes a file with corrupt data.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise CheckpointNotFoundError(f"no variable named {name!r}", path=self.index_path)
        np_dtype = dtypes.numpy_dtype(entry.dtype)
        if entry.slices or self.big_endian or np_dtype is None or np_dtype == object:
            yield from super().iter_chunks(name, chunk_bytes)
            return
        data = self._bytes(entry)
        crc = 0
        total = len(data)
        for start in range(0, max(total, 1), chunk_bytes):
            chunk = data[start:start + chunk_bytes]
            crc = crc32c(chunk, crc) if len(chunk) else crc
            if start + chunk_bytes >= total and entry.crc is not None and mask(crc) != entry.crc:
                raise self._corrupt(f"variable {name!r} fails its CRC32C check (data corrupted)",
                                    path=self._data_path(entry.shard))
            if len(chunk):
                yield chunk
                self._release_range(entry.shard, entry.offset + start, len(chunk))  # written: drop its pages

    def copy_to(self, name: str, sink) -> None:
        """Write the raw bytes of ``name`` to ``sink`` (see :class:`tf2pt.writer.Sink`) straight
        from the memory map, after checking their CRC32C; then release their pages."""
        data = self.verified_bytes(name)
        if data is None:
            super().copy_to(name, sink)
            return
        sink.write(data)
        entry = self._entries[name]
        self._release_range(entry.shard, entry.offset, entry.size)

    def verified_bytes(self, name: str) -> Optional[memoryview]:
        """The raw little-endian bytes of ``name`` as a view of the memory map, CRC32C checked,
        when they are stored whole as they are to be written; ``None`` for partitioned,
        big-endian, string and unknown variables (use :meth:`copy_to`)."""
        entry = self._entries.get(name)
        np_dtype = dtypes.numpy_dtype(entry.dtype) if entry is not None else None
        if entry is None or entry.slices or self.big_endian or np_dtype is None or np_dtype == object:
            return None
        data = self._bytes(entry)
        self._verify(repr(name), entry, data)
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

    def release(self, name: str) -> None:
        """Done with ``name``: release its pages (a later read maps them again)."""
        entry = self._entries.get(name)
        if entry is None:
            return
        parts = [self._slices[slice_key(name, x)] for x in entry.slices] if entry.slices else [entry]
        for part in parts:
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


def open_checkpoint(path, backend: str = "native") -> Checkpoint:
    """Open a checkpoint: a prefix, its ``.index``/``.data-*``/``.meta`` path, a directory
    (with a ``checkpoint`` state file or exactly one bundle), a SavedModel directory, or a frozen
    GraphDef ``.pb``. ``backend="tf"`` reads through ``tf.train.load_checkpoint`` instead."""
    if backend == "tf":
        from ._tfbackend import TFCheckpoint

        return TFCheckpoint(path)
    if backend != "native":
        raise ValueError(f"unknown backend {backend!r}")
    spath = os.fspath(path)
    if spath.endswith((".pb", ".pbtxt")) and os.path.isfile(spath) and os.path.basename(spath) not in (
            "saved_model.pb", "saved_model.pbtxt"):
        from .graphdef import GraphDefCheckpoint

        return GraphDefCheckpoint(spath)
    if os.path.basename(spath) in ("saved_model.pb", "saved_model.pbtxt"):
        spath = os.path.dirname(spath) or "."
    prefix, kind, notes, savedmodel_dir = resolve(spath)
    return BundleCheckpoint(path, prefix, kind, notes, savedmodel_dir)
