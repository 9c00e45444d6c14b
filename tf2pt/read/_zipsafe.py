"""Reading members of a zip archive from a stranger (a Keras ``.keras`` file) safely.

* every member name is checked: no absolute paths, no ``..`` components, no drive letters or
  backslashes, no duplicates;
* a member's declared size is bounded before anything is inflated: stored members must declare
  their compressed size, deflated ones at most :data:`MAX_RATIO` times it, and no member may
  declare more than :data:`MAX_MEMBER`;
* inflation is counted: at most the declared size is ever produced (``zipfile`` stops there and
  checks the CRC-32), copied in bounded chunks to a temporary file or a bounded buffer.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import zipfile
from typing import Dict

from ..errors import CorruptCheckpointError, UnsupportedError

ZIP_MAGIC = b"PK\x03\x04"
#: a deflated member may inflate at most this many times its packed size once it declares more
#: than :data:`RATIO_FLOOR` bytes (Keras stores its members uncompressed; trained weights are
#: noise and deflate barely shrinks them, while a bomb of zeros reaches deflate's ~1032:1)
MAX_RATIO = 100
RATIO_FLOOR = 16 << 20
#: no single member of a Keras archive may declare more than this
MAX_MEMBER = 1 << 40
#: JSON members (config, metadata) are read into memory; they may not exceed this
MAX_JSON = 64 << 20
MAX_MEMBERS = 100_000
CHUNK = 1 << 20


def is_zip(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ZIP_MAGIC
    except OSError:
        return False


class SafeZip:
    """A read-only zip archive whose members are checked before any is read."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path, "r")
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise CorruptCheckpointError(f"not a readable zip archive ({exc})", path=path,
                                         hint="the file is damaged or truncated; re-copy or re-save it") from None
        infos = self.zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CorruptCheckpointError(f"the archive has {len(infos)} members", path=path)
        self.members: Dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or posixpath.isabs(name) or ".." in parts or (len(name) > 1 and name[1] == ":") \
                    or "\\" in name or "\x00" in name:
                raise UnsupportedError(f"archive member {name!r} points outside the archive", path=path,
                                       hint="the archive is crafted; tf2pt reads no such file")
            if name in self.members:
                raise CorruptCheckpointError(f"archive member {name!r} appears twice", path=path,
                                             hint="the archive is crafted or damaged")
            if info.flag_bits & 0x1:
                raise UnsupportedError(f"archive member {name!r} is encrypted", path=path)
            self._check_sizes(info)
            self.members[name] = info

    def _check_sizes(self, info: zipfile.ZipInfo) -> None:
        declared, packed = info.file_size, info.compress_size
        if declared > MAX_MEMBER:
            raise UnsupportedError(f"archive member {info.filename!r} declares {declared} bytes", path=self.path,
                                   hint="the archive is crafted (a decompression bomb)")
        if info.compress_type == zipfile.ZIP_STORED:
            if declared != packed:
                raise CorruptCheckpointError(f"stored archive member {info.filename!r} declares {declared} bytes "
                                             f"but holds {packed}", path=self.path)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if declared > RATIO_FLOOR and declared > MAX_RATIO * max(packed, 1):
                raise UnsupportedError(f"archive member {info.filename!r} would inflate {packed} bytes to {declared} "
                                       f"(more than {MAX_RATIO}:1, a decompression bomb)", path=self.path,
                                       hint="tf2pt does not inflate it")
        else:
            raise UnsupportedError(f"archive member {info.filename!r} uses zip compression method "
                                   f"{info.compress_type}", path=self.path, hint="Keras writes stored or deflated members")
        if packed > os.path.getsize(self.path):
            raise CorruptCheckpointError(f"archive member {info.filename!r} claims {packed} bytes, more than the file",
                                         path=self.path)

    def has(self, name: str) -> bool:
        return name in self.members

    def _copy(self, name: str, out, limit: int) -> int:
        info = self.members[name]
        total = 0
        try:
            with self.zf.open(info, "r") as src:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > min(info.file_size, limit):
                        raise UnsupportedError(f"archive member {name!r} inflates past its declared size", path=self.path,
                                               hint="the archive is crafted (a decompression bomb)")
                    out.write(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise CorruptCheckpointError(f"archive member {name!r} is damaged ({exc})", path=self.path,
                                         hint="re-copy or re-save the file") from None
        return total

    def read_small(self, name: str, limit: int = MAX_JSON) -> bytes:
        info = self.members[name]
        if info.file_size > limit:
            raise UnsupportedError(f"archive member {name!r} declares {info.file_size} bytes, more than {limit}",
                                   path=self.path)
        import io

        buf = io.BytesIO()
        self._copy(name, buf, limit)
        return buf.getvalue()

    def extract_temp(self, name: str):
        """The member inflated into an anonymous temporary file (removed when closed)."""
        tmp = tempfile.TemporaryFile(prefix="tf2pt-")
        try:
            self._copy(name, tmp, MAX_MEMBER)
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp

    def close(self) -> None:
        self.zf.close()
