"""Provenance: where converted weights came from, for the safetensors header's metadata."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from .._version import __version__
from ..errors import CheckpointNotFoundError


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks into one reused buffer (small enough to stay in cache
    between the read and the hash; a memory map would instead count the whole file in RSS)."""
    import hashlib

    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                return h.hexdigest()
            h.update(view[:n])


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
            raise CheckpointNotFoundError(f"cannot read for hashing: {self._error}", path=self.files[0])
        return {f: self._hashes[f] for f in self.files}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # hashing it reports the problem


def provenance(checkpoint, report, hashes: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Safetensors metadata: where the weights came from and how (all values are strings).
    ``hashes`` maps each source file to its sha256 (see :class:`BackgroundHashes`); ``None``
    leaves ``source_sha256`` out."""
    meta = {
        "format": "pt",
        "tf2pt_version": __version__,
        "source": str(checkpoint.path),
        "mapping": report.mapping,
        "target": report.target,
        "model_kwargs": json.dumps(report.model_kwargs, sort_keys=True, default=str),
    }
    if hashes is not None:
        meta["source_sha256"] = json.dumps({os.path.basename(p): h for p, h in hashes.items()}, sort_keys=True)
        report.files = [{"path": p, "sha256": h} for p, h in hashes.items()]
    return meta
