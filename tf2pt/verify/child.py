"""What a TF child process's failure means, decoded for the parent (torch-free, TF-free)."""

from __future__ import annotations

import json
import os
import sys

from ..errors import InputError


def child_failure(code: int, error_path: str, stderr: str, checkpoint_path) -> InputError:
    """The error to raise for a TF child that exited with ``code``: a tf2pt error as its one
    line, TensorFlow's own as its type and message (from ``error_path``, which the child writes;
    ``TF2PT_DEBUG=1`` also prints the child's traceback), anything else as stderr's last line."""
    if os.path.isfile(error_path):
        with open(error_path) as fh:
            error = json.load(fh)
        if os.environ.get("TF2PT_DEBUG"):
            sys.stderr.write(error.get("traceback", ""))
        message = " ".join(str(error.get("message", "")).split())[:800]
        return InputError(f"the TensorFlow side failed: {error.get('type', 'error')}: {message}",
                          path=checkpoint_path, hint="TF2PT_DEBUG=1 shows the TensorFlow side's traceback")
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else f"exit code {code}"
    if tail.startswith("tf2pt: error: "):
        return InputError(tail[len("tf2pt: error: "):])
    if os.environ.get("TF2PT_DEBUG"):
        sys.stderr.write(stderr)
    return InputError(f"the TensorFlow side failed: {tail}", path=checkpoint_path)


class ChildProcess:
    """A TF child process (``proc``) whose stderr goes to a file (``_stderr``); ``stop()`` kills
    it if it still runs and closes the file."""

    proc = None
    _stderr = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
