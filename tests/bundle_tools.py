"""Test-only tools to forge and damage TF checkpoint bundles byte by byte.

Real TensorFlow writes every well-formed fixture; these tools write what TensorFlow would never
write (variant tensors, inconsistent sizes, absurd shapes, non-UTF-8 names) and damage copies of
real checkpoints, so error paths can be tested.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from tf2pt.read._crc import crc32c, mask

MAGIC = 0xDB4775248B80FB57


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def f_bytes(num: int, value: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(value)) + value


def f_fixed32(num: int, value: int) -> bytes:
    return varint(num << 3 | 5) + value.to_bytes(4, "little")


def shape_proto(shape: Sequence[int]) -> bytes:
    return b"".join(f_bytes(2, f_varint(1, d)) for d in shape)


def entry_proto(dtype: int, shape: Sequence[int], shard: int = 0, offset: int = 0, size: int = 0,
                crc: Optional[int] = None) -> bytes:
    out = f_varint(1, dtype) + f_bytes(2, shape_proto(shape))
    if shard:
        out += f_varint(3, shard)
    if offset:
        out += f_varint(4, offset)
    if size:
        out += f_varint(5, size)
    if crc is not None:
        out += f_fixed32(6, crc)
    return out


def header_proto(num_shards: int = 1) -> bytes:
    return f_varint(1, num_shards) + f_bytes(3, f_varint(1, 1))


def _block(entries: Iterable[Tuple[bytes, bytes]]) -> bytes:
    body = bytearray()
    restarts: List[int] = []
    for key, value in entries:
        restarts.append(len(body))
        body += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    if not restarts:
        restarts = [0]
    for r in restarts:
        body += r.to_bytes(4, "little")
    body += len(restarts).to_bytes(4, "little")
    return bytes(body)


def snappy_literals(data: bytes) -> bytes:
    """``data`` as a valid Snappy stream of literals only (no compression, but any Snappy
    decoder must accept it): the varint length, then <= 60-byte literal runs."""
    out = bytearray(varint(len(data)))
    for i in range(0, len(data), 60):
        run = data[i:i + 60]
        out.append((len(run) - 1) << 2)
        out += run
    return bytes(out)


def _with_trailer(block: bytes, compress: bool = False) -> bytes:
    kind = b"\x01" if compress else b"\x00"
    if compress:
        block = snappy_literals(block)
    return block + kind + mask(crc32c(block + kind)).to_bytes(4, "little")


def write_table(path, items: List[Tuple[bytes, bytes]], per_block: int = 16, compress: bool = False) -> None:
    """An SSTable with ``items`` (sorted by the caller; order is not checked here); ``compress``
    stores every block as Snappy (type 1), as LevelDB does and TF bundles never do."""
    out = bytearray()
    index = []

    def add(block: bytes) -> bytes:
        stored = _with_trailer(block, compress)
        handle = varint(len(out)) + varint(len(stored) - 5)
        out.extend(stored)
        return handle

    for i in range(0, len(items), per_block):
        chunk = items[i:i + per_block]
        index.append((chunk[-1][0], add(_block(chunk))))
    meta_handle = add(_block([]))
    idx_handle = add(_block(index))
    footer = (meta_handle + idx_handle).ljust(40, b"\x00") + MAGIC.to_bytes(8, "little")
    out += footer
    Path(path).write_bytes(bytes(out))


def write_bundle(prefix, tensors: List[Tuple[bytes, int, Sequence[int], bytes]], num_shards: int = 1,
                 entry_overrides=None) -> str:
    """A one-shard bundle from ``(key, dtype, shape, raw bytes)``; ``entry_overrides`` maps a
    key to entry fields to force (e.g. ``{"size": 999}``)."""
    entry_overrides = entry_overrides or {}
    data = bytearray()
    items = [(b"", header_proto(num_shards))]
    for key, dtype, shape, raw in sorted(tensors, key=lambda t: t[0]):
        fields = dict(dtype=dtype, shape=shape, offset=len(data), size=len(raw), crc=mask(crc32c(raw)))
        fields.update(entry_overrides.get(key, {}))
        items.append((key, entry_proto(**fields)))
        data += raw
    write_table(f"{prefix}.index", items)
    for shard in range(num_shards):
        Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").write_bytes(bytes(data) if shard == 0 else b"")
    return str(prefix)


def copy_bundle(prefix: str, dest_dir: Path) -> str:
    """Copy a bundle's files (``.index``, ``.data-*``, ``.meta``) to ``dest_dir``; returns the new prefix."""
    src = Path(prefix)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for f in src.parent.glob(src.name + ".*"):
        shutil.copy2(f, dest_dir / f.name)
    return str(dest_dir / src.name)


def flip_byte(path, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def truncate(path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def f_extent(start: int, length: Optional[int]) -> bytes:
    out = f_varint(1, start) if start else b""
    return out + (f_varint(2, length) if length is not None else b"")


def slices_proto(slices: Sequence[Sequence[Tuple[int, Optional[int]]]]) -> bytes:
    """``BundleEntryProto.slices`` (field 7): one ``TensorSliceProto`` of extents per slice."""
    return b"".join(f_bytes(7, b"".join(f_bytes(1, f_extent(s, l)) for s, l in extents)) for extents in slices)


def to_big_endian(prefix: str, dest_prefix: str) -> str:
    """Re-write a one-shard little-endian bundle as the big-endian machine TF supports would have
    written it: header ``endianness: BIG``, numeric data byte-swapped per element, string length
    checksums taken over big-endian integers, every CRC32C recomputed over the new bytes."""
    import numpy as np

    from tf2pt import dtypes
    from tf2pt.read._proto import read_varint
    from tf2pt.read._sstable import read_table
    from tf2pt.read.bundle import _parse_entry

    items = read_table(Path(prefix + ".index").read_bytes())
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    out = bytearray()
    new_items = [(b"", f_varint(1, 1) + f_varint(2, 1) + f_bytes(3, f_varint(1, 1)))]
    for key, value in items[1:]:
        e = _parse_entry(value)
        assert not e.slices and e.shard == 0, "whole tensors in one shard only"
        raw = data[e.offset:e.offset + e.size]
        dt = dtypes.numpy_dtype(e.dtype)
        if dt == np.dtype(object):
            n, pos, lens = int(np.prod(e.shape, dtype=np.int64)), 0, []
            for _ in range(n):
                length, pos = read_varint(raw, pos, len(raw))
                lens.append(length)
            crc = 0
            for length in lens:
                crc = crc32c(length.to_bytes(4 if length < 2**32 else 8, "big"), crc)
            check = mask(crc).to_bytes(4, "big")
            new = raw[:pos] + check + raw[pos + 4:]
            entry_crc = mask(crc32c(new[pos:], crc))
        else:
            arr = np.frombuffer(raw, dtype=dt)
            if dt.kind == "c":  # swap the real and imaginary parts each
                arr = arr.view(np.dtype(f"f{dt.itemsize // 2}"))
            new = arr.byteswap().tobytes() if arr.dtype.itemsize > 1 else raw
            entry_crc = mask(crc32c(new))
        new_items.append((key, entry_proto(e.dtype, e.shape, offset=len(out), size=len(new), crc=entry_crc)))
        out += new
    write_table(dest_prefix + ".index", new_items)
    Path(dest_prefix + ".data-00000-of-00001").write_bytes(bytes(out))
    return dest_prefix
