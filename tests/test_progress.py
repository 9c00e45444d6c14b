"""The progress bar: on stderr, only when stderr is a terminal, silent with --quiet."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from conftest import EXAMPLE
from tf2pt._progress import progress_bar


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_draws_only_on_a_tty_and_not_when_disabled():
    tty = FakeTTY()
    with progress_bar(1000, "converting", stream=tty, min_interval=0) as advance:
        for _ in range(10):
            advance(100)
    out = tty.getvalue()
    assert "\rconverting [" in out and "100.0%" in out and out.endswith("\n")
    pipe = io.StringIO()
    with progress_bar(1000, "converting", stream=pipe, min_interval=0) as advance:
        advance(1000)
    assert pipe.getvalue() == ""
    quiet = FakeTTY()
    with progress_bar(1000, "converting", stream=quiet, disable=True, min_interval=0) as advance:
        advance(1000)
    assert quiet.getvalue() == ""


def _run_in_terminal(args, tmp_path):
    """Run tf2pt with stderr on a pseudo-terminal; return what the terminal showed."""
    master, slave = pty.openpty()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "tf2pt", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=slave, cwd=tmp_path, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


def test_cli_progress_on_a_terminal_and_quiet(tmp_path):
    shown = _run_in_terminal(["dump", EXAMPLE, "--state-dict", tmp_path / "a.safetensors"], tmp_path)
    assert "dumping [" in shown and "100.0%" in shown
    shown = _run_in_terminal(["dump", EXAMPLE, "--state-dict", tmp_path / "b.safetensors", "--quiet"], tmp_path)
    assert "dumping [" not in shown and shown.strip() == ""
    # not a terminal: no bar, only the summary line
    r = subprocess.run([sys.executable, "-m", "tf2pt", "dump", EXAMPLE, "--state-dict", tmp_path / "c.safetensors"],
                       capture_output=True, text=True)
    assert "dumping [" not in r.stderr and "wrote 105 tensors" in r.stderr
