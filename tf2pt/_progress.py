"""A minimal progress bar for long dumps and conversions: stderr, TTY only, silent when asked."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


@contextlib.contextmanager
def progress_bar(total: int, label: str, disable: bool = False, stream=None,
                 min_interval: float = 0.1) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(nbytes)``. Draws only when ``stream`` (stderr) is a TTY and not disabled."""
    stream = stream or sys.stderr
    active = not disable and total > 0 and getattr(stream, "isatty", lambda: False)()
    done = 0
    last = 0.0
    start = time.perf_counter()

    def draw(final=False):
        frac = min(done / total, 1.0) if total else 1.0
        width = 30
        bar = "#" * int(frac * width)
        rate = done / max(time.perf_counter() - start, 1e-9)
        stream.write(f"\r{label} [{bar:<{width}}] {frac:6.1%} {_human(done)}/{_human(total)} {_human(rate)}/s")
        if final:
            stream.write("\n")
        stream.flush()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        if active:
            now = time.perf_counter()
            if now - last >= min_interval:
                last = now
                draw()

    try:
        yield advance
    finally:
        if active:
            draw(final=True)
