"""Provenance: where converted weights came from, for the safetensors header's metadata.

The default fingerprint costs no second pass over the data. A bundle's ``.index`` records the
CRC32C of every tensor and tf2pt checks each one as it reads, so the sha256 of the index (small)
plus those checks identify the weights that were converted. A frozen ``.pb`` has no checksums:
its fingerprint is the sha256 of the graph file itself. ``--hash-sources`` adds the sha256 of
every source file (``source_sha256``), computed in background threads alongside the conversion.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from .._version import __version__
from ..errors import CheckpointNotFoundError

#: ``source_fingerprint["method"]`` values
INDEX_AND_CRC = "sha256 of the index; CRC32C of every converted tensor checked against it"
WHOLE_FILES = "sha256 of every source file"


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks into one reused buffer (small enough to stay in cache
    between the read and the hash; a memory map would instead count the whole file in RSS)."""
    import hashlib

    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    return h.hexdigest()
                h.update(view[:n])
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read for hashing: {exc.strerror or exc}", path=path) from None


def fingerprint(checkpoint) -> Dict[str, Any]:
    """The default ``source_fingerprint``: the method, and the sha256 of the files it hashes."""
    files = checkpoint.fingerprint_files
    method = INDEX_AND_CRC if checkpoint.crc_checked else WHOLE_FILES
    return {"method": method, "sha256": {os.path.basename(str(p)): file_sha256(p) for p in files}}


class BackgroundHashes:
    """sha256 of files computed in threads (hashlib and file reads release the GIL), so the
    hashing overlaps the conversion instead of adding a second pass to it. A sharded checkpoint's
    files are hashed in parallel, largest first, on the cores the conversion leaves (on 2 cores one
    thread: docs/performance.md)."""

    def __init__(self, files):
        import queue
        import threading

        self.files = [str(f) for f in files]
        self._hashes: Dict[str, str] = {}
        self._error: Optional[BaseException] = None
        self._todo: "queue.Queue[str]" = queue.Queue()
        sizes = {f: _size(f) for f in self.files}
        for f in sorted(self.files, key=sizes.__getitem__, reverse=True):
            self._todo.put(f)
        self.workers = max(1, min(len(self.files), (os.cpu_count() or 1) - 1, 4))
        #: the cores the hashing keeps busy for long: one per file over 1 MiB, at least one
        self.busy = min(self.workers, max(1, sum(size > 1 << 20 for size in sizes.values())))
        self._threads = [threading.Thread(target=self._run, name=f"tf2pt-sha256-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def _run(self):
        import queue

        try:
            while True:
                try:
                    f = self._todo.get_nowait()
                except queue.Empty:
                    return
                self._hashes[f] = file_sha256(f)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def placeholder(self) -> Dict[str, str]:
        """Same keys and lengths as :meth:`result` (for sizing a header written before it)."""
        return {f: "0" * 64 for f in self.files}

    def result(self) -> Dict[str, str]:
        for t in self._threads:
            t.join()
        if self._error is not None:
            if isinstance(self._error, CheckpointNotFoundError):
                raise self._error
            raise CheckpointNotFoundError(f"cannot read for hashing: {self._error}", path=self.files[0])
        return {f: self._hashes[f] for f in self.files}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # hashing it reports the problem


def provenance(checkpoint, report, hashes: Optional[Dict[str, str]] = None,
               fingerprint_: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Safetensors metadata: where the weights came from and how (all values are strings).

    ``source_fingerprint`` is ``fingerprint_`` (see :func:`fingerprint`), or with ``hashes``
    (each source file's sha256, see :class:`BackgroundHashes`; ``--hash-sources``) the whole
    files' hashes, which also appear as ``source_sha256``."""
    meta = {
        "format": "pt",
        "tf2pt_version": __version__,
        "source": str(checkpoint.path),
        "mapping": report.mapping,
        "target": report.target,
        "model_kwargs": json.dumps(report.model_kwargs, sort_keys=True, default=str),
    }
    files: List[Dict[str, str]] = [{"path": str(p)} for p in checkpoint.files]
    if hashes is not None:
        by_name = {os.path.basename(p): h for p, h in hashes.items()}
        meta["source_sha256"] = json.dumps(by_name, sort_keys=True)
        fingerprint_ = {"method": WHOLE_FILES, "sha256": by_name}
        files = [{"path": p, "sha256": h} for p, h in hashes.items()]
    if fingerprint_ is not None:
        meta["source_fingerprint"] = json.dumps(fingerprint_, sort_keys=True)
        for row in files:
            digest = fingerprint_["sha256"].get(os.path.basename(row["path"]))
            if digest:
                row["sha256"] = digest
    report.files = files
    return meta
