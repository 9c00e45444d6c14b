"""Windowed parity: a volume too large for memory, compared window by window.

Both frameworks run the same windows (NiftyNet's grid sampler does the same at inference): each
window is its core plus a border of ``border`` voxels on every side that meets another window;
at the volume's own faces a window stops there, so the graph pads exactly where a whole-volume
run pads. Only the cores are compared, and they tile the volume. With a border at least the
network's receptive-field radius, every core voxel sees exactly what it sees in a whole-volume
run, so the assembled labels are the whole-volume labels; a smaller border is faster, and TF and
PyTorch still run identical windows (parity is unaffected), but voxels near a seam may differ from
a whole-volume inference.

Memory is measured, not assumed: after TF's graph and the PyTorch model are loaded, one small
probe window runs on each side, sampling each process's resident memory, and the window is the
largest whose measured cost, scaled by its voxels, keeps both processes' peaks together within
``--max-memory``. The TF side runs in one child process for all windows (TF's import and the
graph's restore happen once), in lock-step with the parent, so at most one window's output of
each side is alive at a time. The metrics accumulate (:class:`.compare.StreamingComparison`), the
labels are assembled in int16, and the report gives both processes' measured peaks.

Torch-free and TF-free at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .child import ChildProcess, child_failure

#: the share of --max-memory the windows may plan for (the rest absorbs allocator slack)
PLAN_FRACTION = 0.85

Interval = Tuple[int, int]


def rss_bytes(pid: Optional[int] = None) -> int:
    """A process's resident set size now (``/proc/PID/statm``; this process by default; 0 where
    there is none, or the process is gone)."""
    try:
        with open(f"/proc/{'self' if pid is None else int(pid)}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakRSS:
    """Peaks of :func:`rss_bytes` while the ``with`` block runs, sampled every ``interval``
    seconds by a thread: ``peak`` (this process), and with ``other`` (a pid) also ``other_peak``
    and ``together`` (the peak of the two sampled at the same moments); ``start``: this
    process's RSS on entry."""

    def __init__(self, interval: float = 0.005, other: Optional[int] = None):
        self.interval, self.other = interval, other
        self.start = self.peak = self.other_peak = self.together = 0
        self._stop = threading.Event()

    def _take(self) -> None:
        mine = rss_bytes()
        self.peak = max(self.peak, mine)
        if self.other is not None:
            theirs = rss_bytes(self.other)
            self.other_peak = max(self.other_peak, theirs)
            self.together = max(self.together, mine + theirs)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def __enter__(self) -> "PeakRSS":
        self.start = rss_bytes()
        self._take()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


# ------------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------------


def axis_windows(dim: int, window: int, border: int) -> List[Tuple[Interval, Interval]]:
    """``[(window interval, core interval), ...]`` along one axis of ``dim`` voxels: windows of
    ``window`` voxels (one of ``dim`` when that is smaller), cores tiling ``[0, dim)``, each core
    at least ``border`` voxels from its window's edge wherever that edge is not the volume's."""
    if window >= dim:
        return [((0, dim), (0, dim))]
    if window - 2 * border < 1:
        raise InputError(f"windows of {window} voxels leave no core inside a border of {border} on both sides",
                         hint="give more --max-memory, a larger --window or a smaller --window-border")
    out, core_start, start = [], 0, 0
    while True:
        if start + window >= dim:  # the last window ends at the volume's face
            start = dim - window
            out.append(((start, dim), (core_start, dim)))
            return out
        core_end = start + window - border
        out.append(((start, start + window), (core_start, core_end)))
        core_start, start = core_end, core_end - border


@dataclass
class Window:
    """One window: ``box`` (the input it reads) and ``core`` (the output it contributes), as
    ``(start, stop)`` per spatial axis, in the volume's coordinates."""

    box: Tuple[Interval, ...]
    core: Tuple[Interval, ...]

    @property
    def voxels(self) -> int:
        return int(np.prod([b - a for a, b in self.box]))

    def input_slices(self) -> Tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.box)

    def core_slices(self) -> Tuple[slice, ...]:
        """The core, in the volume."""
        return tuple(slice(a, b) for a, b in self.core)

    def core_in_window(self) -> Tuple[slice, ...]:
        """The core, in the window's output."""
        return tuple(slice(c0 - b0, c1 - b0) for (b0, _), (c0, c1) in zip(self.box, self.core))

    def to_json(self):
        return {"box": [list(i) for i in self.box], "core": [list(i) for i in self.core]}


def plan_grid(shape: Sequence[int], window: Sequence[int], border: int) -> List[Window]:
    """Every window of the grid over ``shape`` (spatial), in C order."""
    axes = [axis_windows(d, w, border) for d, w in zip(shape, window)]
    out: List[Window] = []
    for idx in np.ndindex(*[len(a) for a in axes]):
        picks = [axes[k][i] for k, i in enumerate(idx)]
        out.append(Window(tuple(p[0] for p in picks), tuple(p[1] for p in picks)))
    return out


def round_down(n: int, multiple: int) -> int:
    return max(multiple, n // multiple * multiple)


def choose_window(shape: Sequence[int], budget: int, phases: Sequence[Tuple[float, float]], multiple: int,
                  border: int) -> List[int]:
    """The cube side (a multiple of ``multiple``, each axis clipped to ``shape``) whose cost --
    the largest of the ``phases``' ``fixed + per_voxel x voxels`` -- fits ``budget`` and whose
    grid runs the fewest voxels (the largest such window on a tie: the fewest windows). The
    largest window is not always the cheapest grid: one slightly smaller may tile an axis with
    one window fewer. An error when no window fits, or none leaves a core inside ``border``."""

    def cost(voxels: int) -> float:
        return max(fixed + per_voxel * voxels for fixed, per_voxel in phases)

    smallest = int(np.prod([min(multiple, d) for d in shape]))
    if cost(smallest) > budget:
        loaded = max(fixed for fixed, _ in phases)
        raise InputError(f"--max-memory {budget / PLAN_FRACTION / 2**30:.2f} GiB is too small: TF and PyTorch "
                         f"need {loaded / 2**30:.2f} GiB loaded, and a {multiple}-voxel window "
                         f"{(cost(smallest) - loaded) / 2**20:.0f} MiB more (planning within {PLAN_FRACTION:.0%})",
                         hint="give a larger --max-memory")
    best, best_work, error = None, None, None
    side = multiple
    while side <= max(shape) + multiple - 1:
        window = [min(side, d) for d in shape]
        if cost(int(np.prod(window))) > budget:
            break
        try:
            work = sum(w.voxels for w in plan_grid(shape, window, border))
        except InputError as exc:
            error = exc
        else:
            if best_work is None or work <= best_work:
                best, best_work = window, work
        side += multiple
    if best is None:
        raise InputError(f"--max-memory {budget / PLAN_FRACTION / 2**30:.2f} GiB allows windows of at most "
                         f"{side - multiple} voxels, which leave no core inside a border of {border}",
                         hint="give more --max-memory or a smaller --window-border") from error
    return best


# ------------------------------------------------------------------------------------------------
# the TF side: one child for every window
# ------------------------------------------------------------------------------------------------


class TFWindowChild(ChildProcess):
    """TF in a child process (``python -m tf2pt.verify.tfside REQUEST.json``, windowed mode)
    that loads the graph once, then runs one window per request line on its stdin and answers on
    its stdout with one JSON line: its window's output core is in ``out``. Errors come back as
    :class:`.run.TFChild`'s do."""

    def __init__(self, checkpoint_path, mapping, x_path: str, *, tf_input, tf_output, workdir: str,
                 trust_graph: bool = False):
        from ..registry import describe

        self.checkpoint_path = checkpoint_path
        self.error_path = os.path.join(workdir, "error.json")
        self.workdir = workdir
        request = {"checkpoint": os.fspath(checkpoint_path), "mapping": describe(mapping), "input": x_path,
                   "error": self.error_path, "tf_input": tf_input, "tf_output": tf_output,
                   "trust_graph": trust_graph, "windowed": True}
        req_path = os.path.join(workdir, "request.json")
        with open(req_path, "w") as fh:
            json.dump(request, fh)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
                   CUDA_VISIBLE_DEVICES="")
        self._stderr = open(os.path.join(workdir, "stderr.txt"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tf2pt.verify.tfside", req_path], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.count = 0

    def _answer(self) -> Dict:
        line = self.proc.stdout.readline()
        if line:
            return json.loads(line)
        self.proc.wait()
        self._fail()

    def _fail(self):
        self._stderr.seek(0)
        raise child_failure(self.proc.returncode, self.error_path, self._stderr.read(), self.checkpoint_path)

    def ready(self) -> Dict:
        """Wait for the graph to load: ``{"rss", "tf_version", "timings", ...}`` from the child."""
        return self._answer()

    def run(self, box: Sequence[Interval], core: Sequence[Interval]) -> Tuple[np.ndarray, Dict]:
        """TF's output core ``(C, ...)`` for the window ``box`` (its ``core``, both in the
        volume's coordinates), and the child's answer (its sampled peak RSS, the forward time)."""
        out = os.path.join(self.workdir, f"tf-window-{self.count}.npy")
        self.count += 1
        try:
            self.proc.stdin.write(json.dumps({"box": [list(b) for b in box], "core": [list(c) for c in core],
                                              "out": out}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait()
            self._fail()
        answer = self._answer()
        from .arrays import load_npy

        try:
            return load_npy(out, "the TF side's window"), answer
        finally:
            os.unlink(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.stop()


def serve_windows(run_window, x: np.ndarray, ready: Dict, stdin=None, stdout=None) -> None:
    """The child's loop: announce ``ready`` (with the RSS now), then for each request line run
    ``run_window(x[box])`` (``C, ...`` channels-first), write its core to the request's ``out``
    and answer with the forward's time and the peak RSS sampled during it."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stdout.write(json.dumps({**ready, "rss": rss_bytes()}) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        w = Window(tuple(map(tuple, request["box"])), tuple(map(tuple, request["core"])))
        start = time.perf_counter()
        with PeakRSS() as mem:
            y = run_window(np.ascontiguousarray(x[(slice(None),) + w.input_slices()]))
            core = np.ascontiguousarray(y[(slice(None),) + w.core_in_window()])
            del y
            np.save(request["out"], core)
            del core
        stdout.write(json.dumps({"seconds": time.perf_counter() - start, "peak_rss": mem.peak,
                                 "rss_before": mem.start, "rss_after": rss_bytes()}) + "\n")
        stdout.flush()


# ------------------------------------------------------------------------------------------------
# the parent: probe, plan, run, accumulate
# ------------------------------------------------------------------------------------------------


#: the probe windows' sides (rounded to the model's spatial multiple): two sizes, so that the
#: cost per voxel is the slope between them, without the fixed cost a single small run includes
PROBE_SIDES = (32, 48)


def probe_boxes(shape: Sequence[int], multiple: int) -> List[Tuple[Interval, ...]]:
    """The probe windows, at the volume's corner (one, where the volume is no larger)."""
    boxes = []
    for side in PROBE_SIDES:
        side = max(multiple, round_down(side, multiple))
        box = tuple((0, min(side, d)) for d in shape)
        if box not in boxes:
            boxes.append(box)
    return boxes


def box_voxels(box) -> int:
    return int(np.prod([b - a for a, b in box]))


def cost_line(points: Sequence[Tuple[int, int]], base: int) -> Tuple[float, float]:
    """``(fixed, per_voxel)`` of a process's peak RSS against a window's voxels, from its probe
    ``points`` (``(voxels, peak RSS)``): the line through the two, or, from one (or a slope the
    noise made negative), the line from the loaded RSS ``base`` through the largest (which
    overstates the cost per voxel: it includes the fixed cost)."""
    points = sorted(points)
    if len(points) >= 2 and points[-1][0] > points[0][0]:
        (v1, p1), (v2, p2) = points[0], points[-1]
        slope = (p2 - p1) / (v2 - v1)
        if slope > 0:
            return max(float(base), p2 - slope * v2), slope
    v, p = points[-1]
    return float(base), max(0.0, (p - base) / v)


def plan_memory(shape, multiple: int, budget: int, border: int, tf_base: int, tf_points, tf_idle: int, pt_base: int,
                pt_points, out_channels: int, in_channels: int, gpu_points=None):
    """``(window, estimate)``: the window side per axis and the figures it was chosen from.

    The two sides run in turn, so both processes together peak at the larger of: TF running a
    window while the parent is loaded (``pt_base``), and PyTorch running one while TF's child
    sits at ``tf_idle`` (its RSS after a window) and the parent holds TF's output core and the
    input (4 bytes a channel each). Each side's running peak is a line in the window's voxels
    (:func:`cost_line`, from its probes). The planned peak stays within :data:`PLAN_FRACTION` of
    ``budget``. On a GPU (``gpu_points``: torch's peak GPU memory allocated per probe), the GPU
    memory of torch's forward is held to the same budget as well."""
    tf_fixed, tf_per_voxel = cost_line(tf_points, tf_base)
    pt_fixed, pt_per_voxel = cost_line(pt_points, pt_base)
    held = 4.0 * (out_channels + in_channels)
    # the larger phase, as a line: fixed + per_voxel x voxels, bounded by the two lines' maximum
    # at each size (choose_window checks the bound size by size)
    phases = [(tf_fixed + pt_base, tf_per_voxel), (tf_idle + pt_fixed, pt_per_voxel + held)]
    gpu = cost_line(gpu_points, 0) if gpu_points else None
    if gpu is not None:
        phases.append(gpu)
    window = choose_window(shape, int(budget * PLAN_FRACTION), phases, multiple, border)
    voxels = int(np.prod(window))
    estimate = {"budget_bytes": budget, "planned_fraction": PLAN_FRACTION,
                "loaded_bytes": {"tf": tf_base, "torch": pt_base, "tf_after_a_window": tf_idle},
                "tf_bytes_per_voxel": tf_per_voxel, "torch_bytes_per_voxel": pt_per_voxel,
                "held_bytes_per_voxel": held, "probes": [v for v, _ in sorted(tf_points)],
                "gpu": None if gpu is None else {"fixed_bytes": gpu[0], "bytes_per_voxel": gpu[1]},
                "estimated_peak_bytes": max(f + v * voxels for f, v in phases)}
    return window, estimate


def grid_summary(windows: List[Window], shape, window, border: int, exact: Optional[bool]) -> Dict:
    total = int(np.prod(shape))
    run = sum(w.voxels for w in windows)
    return {"windows": len(windows), "window": list(window), "border": border, "volume": list(shape),
            "voxels_run": run, "work_vs_whole_volume": run / total if total else 0.0,
            "exact_tiling": exact}


def check_border(border: Optional[int], receptive_radius: Optional[int]) -> Tuple[int, Optional[bool]]:
    """``(border, exact)``: ``--window-border``, else the mapping's receptive-field radius;
    ``exact`` says whether the border covers the receptive field (``None``: not declared)."""
    if border is None:
        if receptive_radius is None:
            raise InputError("windowed verify needs a border: the mapping declares no receptive field",
                             hint="give --window-border N (N at least the network's receptive-field radius "
                                  "for labels identical to a whole-volume run)")
        border = int(receptive_radius)
    if border < 0:
        raise InputError(f"--window-border {border} is negative")
    exact = None if receptive_radius is None else border >= int(receptive_radius)
    return border, exact
