"""Read the sorted string table (LevelDB table format) that a TF checkpoint's ``.index`` is.

Layout, from the end of the file:

* footer (48 bytes): metaindex ``BlockHandle``, index ``BlockHandle`` (each two varints:
  offset, size), zero padding to 40 bytes, then the magic ``0xdb4775248b80fb57`` (fixed64 LE);
* every block is followed by a 5-byte trailer: a compression byte (0 = none, 1 = snappy) and the
  masked CRC32C of the block contents plus that byte;
* a block is a run of entries ``shared, unshared, value_length`` (varints), key suffix, value,
  then ``uint32`` restart offsets and their count. Keys are prefix-compressed.
* the index block maps a separator key to the ``BlockHandle`` of each data block.

Every inconsistency raises :class:`TableError` (the reader names the file).
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

from ._crc import masked_crc32c
from ._proto import ProtoError, read_varint

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5


class TableError(ValueError):
    pass


#: a key longer than this is refused (TF's keys are variable names: tens of bytes)
MAX_KEY_BYTES = 1 << 16


def decoded_budget(file_size: int) -> int:
    """The most key and value bytes a table of ``file_size`` bytes may decode to. Prefix
    compression lets each key repeat most of the one before it, so a small crafted file could
    otherwise claim gigabytes of keys (and the time to build and classify them); TF's own
    indexes decode to a few times their size."""
    return 64 * file_size + (64 << 20)


def _handle(buf, pos: int, end: int) -> Tuple[int, int, int]:
    try:
        offset, pos = read_varint(buf, pos, end)
        size, pos = read_varint(buf, pos, end)
    except ProtoError as exc:
        raise TableError(f"bad block handle ({exc})") from None
    return offset, size, pos


def _snappy_decompress(data: bytes) -> bytes:
    """Snappy raw-format decompression (tables TF writes are uncompressed; this is for others)."""
    try:
        length, pos = read_varint(data, 0, len(data))
    except ProtoError:
        raise TableError("bad snappy block header") from None
    if length > 64 * len(data) + 1024:
        raise TableError("snappy block claims an implausible size")
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if pos + extra > n:
                    raise TableError("truncated snappy literal")
                size = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > n:
                raise TableError("truncated snappy literal")
            out += data[pos:pos + size]
            pos += size
            continue
        if kind == 1:
            if pos >= n:
                raise TableError("truncated snappy copy")
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            if pos + 2 > n:
                raise TableError("truncated snappy copy")
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            if pos + 4 > n:
                raise TableError("truncated snappy copy")
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise TableError("bad snappy copy offset")
        for _ in range(size):  # byte by byte: copies may overlap
            out.append(out[-offset])
    if len(out) != length:
        raise TableError("snappy block has the wrong size")
    return bytes(out)


def _read_block(buf, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if offset < 0 or end + TRAILER_SIZE > len(buf):
        raise TableError(f"{what} block [{offset}, {end}) runs past the end of the file ({len(buf)} bytes)")
    contents = bytes(buf[offset:end])
    kind = buf[end]
    stored = int.from_bytes(buf[end + 1:end + 5], "little")
    if masked_crc32c(contents + bytes([kind])) != stored:
        raise TableError(f"{what} block at offset {offset} fails its CRC32C check (corrupted)")
    if kind == 0:
        return contents
    if kind == 1:
        return _snappy_decompress(contents)
    raise TableError(f"{what} block at offset {offset} has unknown compression type {kind}")


def _block_entries(block: bytes, what: str) -> Iterator[Tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TableError(f"{what} block too short")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if num_restarts < 1 or limit < 0:
        raise TableError(f"{what} block has a bad restart array")
    pos = 0
    key = b""
    try:
        while pos < limit:
            shared, pos = read_varint(block, pos, limit)
            unshared, pos = read_varint(block, pos, limit)
            vlen, pos = read_varint(block, pos, limit)
            if shared > len(key) or pos + unshared + vlen > limit:
                raise TableError(f"{what} block has an entry that runs past its end")
            if shared + unshared > MAX_KEY_BYTES:
                raise TableError(f"{what} block has a key of {shared + unshared} bytes (at most {MAX_KEY_BYTES})")
            key = key[:shared] + block[pos:pos + unshared]
            pos += unshared
            yield key, block[pos:pos + vlen]
            pos += vlen
    except ProtoError as exc:
        raise TableError(f"{what} block has a malformed entry ({exc})") from None


def read_table(buf) -> List[Tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of the table in ``buf`` (bytes or a memory map), in order."""
    n = len(buf)
    if n < FOOTER_SIZE:
        raise TableError(f"too short to be a checkpoint index ({n} bytes)")
    footer = bytes(buf[n - FOOTER_SIZE:])
    if int.from_bytes(footer[-8:], "little") != MAGIC:
        raise TableError("not a TensorFlow checkpoint index (bad table magic)")
    _, _, pos = _handle(footer, 0, 40)
    index_offset, index_size, _ = _handle(footer, pos, 40)
    index = _read_block(buf, index_offset, index_size, "index")
    out: List[Tuple[bytes, bytes]] = []
    previous = None
    budget = decoded_budget(n)
    for _, handle in _block_entries(index, "index"):
        offset, size, _ = _handle(handle, 0, len(handle))
        block = _read_block(buf, offset, size, "data")
        budget -= len(block)
        for key, value in _block_entries(block, "data"):
            if previous is not None and key <= previous:
                kind = "duplicate key" if key == previous else "keys out of order"
                raise TableError(f"{kind} {key[:80]!r}")
            previous = key
            budget -= len(key)
            if budget < 0:
                raise TableError(f"its keys decode to more than {decoded_budget(n)} bytes from a {n}-byte file "
                                 "(crafted prefix compression?)")
            out.append((key, value))
    return out
