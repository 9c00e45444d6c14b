"""Typed errors. Library code raises these; only ``tf2pt.cli`` turns them into exit codes.

Every error renders as one line: ``<file>: <problem> (<what to do>)``. Anything else that
escapes the library is a bug.

Exit codes (documented in ``docs/reliability.md``):

====  =============================================================================
0     success (``verify``: parity holds)
1     ``verify`` ran both frameworks and parity failed
2     usage or input error: bad or unsupported checkpoint, unknown mapping, a
      conversion that does not cover the checkpoint, existing output, missing extra
3     internal error: a bug in tf2pt (one line; ``TF2PT_DEBUG=1`` shows the traceback)
130   interrupted (Ctrl-C); no output file is left behind
====  =============================================================================
"""

from __future__ import annotations

import os
from typing import Sequence

EXIT_OK = 0
EXIT_PARITY = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class Tf2ptError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is a single line."""

    exit_code = EXIT_USAGE

    def __init__(self, problem: str, *, path: str | os.PathLike | None = None, hint: str | None = None):
        self.problem = " ".join(str(problem).split())
        self.path = os.fspath(path) if path is not None else None
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        if self.hint:
            text += f" ({self.hint})"
        return text


class CheckpointError(Tf2ptError):
    """The checkpoint (or graph) cannot be found, parsed or trusted."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint at the path, or a file it needs is missing."""


class CorruptCheckpointError(CheckpointError):
    """Bytes on disk disagree with the format: truncation, CRC mismatch, bad magic, bad sizes."""


class UnsupportedError(CheckpointError):
    """Valid input that tf2pt does not handle (e.g. a ``variant`` or ``resource`` tensor)."""


class UnsafeGraphError(CheckpointError):
    """A checkpoint's graph would run something other than pure computation (file I/O, Python,
    an op tf2pt does not know); verify refuses to run it."""


class InputError(Tf2ptError):
    """A non-checkpoint input is wrong: a volume file, a reference file, an option value."""


class MappingError(Tf2ptError):
    """A mapping cannot be found, loaded or is itself inconsistent."""


class NoCorrespondenceError(MappingError):
    """``tf2pt map``: the checkpoint and the model do not correspond; the message names the first
    point where they part (a TF layer with no counterpart, and the model's next unmatched module)."""


class ConversionError(Tf2ptError):
    """A strict conversion found problems. ``problems`` lists every one of them.

    ``str()`` stays one line (a count and the first problems); :meth:`details` gives all.
    """

    def __init__(self, problems: Sequence[str], *, path=None, hint: str | None = None, report=None):
        self.problems = list(problems)
        self.report = report
        n = len(self.problems)
        head = "; ".join(self.problems[:3]) + ("; ..." if n > 3 else "")
        super().__init__(f"conversion failed with {n} problem{'s' if n != 1 else ''}: {head}", path=path, hint=hint)

    #: problems listed in full by :meth:`details`; the rest are counted
    SHOWN = 20

    def details(self) -> str:
        lines = [f"  - {p}" for p in self.problems[:self.SHOWN]]
        if len(self.problems) > self.SHOWN:
            lines.append(f"  ... and {len(self.problems) - self.SHOWN} more (--report FILE lists them all)")
        return "\n".join(lines)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised where the signal arrives so that outputs are cleaned up as for
    Ctrl-C. Not an :class:`Exception`: nothing but the command's top level catches it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class OutputExistsError(Tf2ptError):
    """Refusing to overwrite an existing file."""

    def __init__(self, path):
        super().__init__("output file already exists", path=path, hint="pass --force to overwrite it")


class DependencyError(Tf2ptError):
    """An optional dependency (TensorFlow, MONAI, nibabel, ...) is needed but not installed."""

    def __init__(self, package: str, purpose: str, extra: str | None = None):
        pip = f"pip install 'tf2pt[{extra}]'" if extra else f"pip install {package}"
        which = "which are not installed" if ", " in package else "which is not installed"
        super().__init__(f"{purpose} needs {package}, {which}", hint=pip)


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A hint for an unknown name: the closest known ones, then all of them."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    known = ", ".join(sorted(choices)) or "none"
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? known: {known}"
    return f"known: {known}"
