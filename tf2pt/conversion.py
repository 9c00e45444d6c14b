"""Apply a mapping to a checkpoint: plan every key, check every shape, then produce tensors.

:func:`plan` reads no tensor data. It puts each TF variable under exactly one rule (ignored,
refused or renamed), gives each target key exactly one source (a TF variable or a fill rule),
and compares each post-transform shape with the target model's ``state_dict()`` -- built on the
``meta`` device, so checking a large model costs no memory -- or with the target's declared
torch-free ``spec`` (see :class:`tf2pt.mapping.Target`), itself checked against the model
wherever torch is loaded anyway. All problems are collected and reported at once.
:func:`convert` then materialises the tensors; the writers in :mod:`tf2pt.writer` stream them to
disk one at a time instead.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ._version import __version__
from .errors import ConversionError
from .mapping import Fill, Mapping, Target
from .registry import get_mapping
from .transforms import Transform, get_transform
from .writer import DTYPES, dtype_name


@dataclass
class Entry:
    """One target key and where its value comes from."""

    key: str
    shape: Tuple[int, ...]
    dtype: str  # the target's dtype, by name ("float32")
    source: Optional[str] = None  # TF variable name
    transform: Optional[Transform] = None
    fill: Optional[Fill] = None

    def tensor(self, checkpoint):
        """The value as a CPU torch tensor in the target's dtype (reads the checkpoint)."""
        import torch

        dtype = getattr(torch, self.dtype)
        if self.fill is not None:
            value = self.fill.value
            if callable(value):
                return value(self.shape, dtype)
            return torch.full(self.shape, value, dtype=dtype)
        source = checkpoint.read(self.source)
        if self.transform.perm is not None and source.dtype.kind in "fiubc" and source.dtype.name in _TORCH_NATIVE:
            self.transform.check_rank(tuple(source.shape))
            view = _torch_view(source).permute(self.transform.perm(source.ndim))  # no copy yet
            return view.contiguous().to(dtype)
        return numpy_to_torch(self.transform(source), copy=False).to(dtype)

    def array(self, checkpoint, scratch=None) -> Optional[np.ndarray]:
        """The value as a numpy array when numpy alone gives exactly what :meth:`tensor` gives
        (no dtype change, a plain numeric dtype, a constant fill), else ``None``. Lets a
        conversion that never needed torch finish without importing it. With ``scratch``, the
        result is only valid until the next call."""
        value = self._numpy_value(checkpoint)
        return _copied(value.view, scratch) if isinstance(value, _Permuted) else value

    def pieces(self, checkpoint, scratch=None, piece_bytes: int = 32 << 20) -> Optional[Iterator[np.ndarray]]:
        """:meth:`array` in C-ordered slabs along the first axis, each made when asked for, of
        about ``piece_bytes`` (see :data:`SLAB_MIN_ROWS`): converting
        a large tensor then needs a slab of memory besides the source, not a second copy of the
        tensor. ``None`` where :meth:`array` is; a tensor that needs no permutation is one piece."""
        value = self._numpy_value(checkpoint)
        if value is None:
            return None
        if not isinstance(value, _Permuted):
            return iter([value])
        return _slabs(value.view, scratch, piece_bytes)

    def _numpy_value(self, checkpoint):
        """The finished numpy value, a :class:`_Permuted` source view still to be copied, or
        ``None`` (numpy would not give exactly what torch gives)."""
        if self.dtype not in _TORCH_NATIVE:
            return None
        if self.fill is not None:
            value = self.fill.value
            if callable(value) or not isinstance(value, (bool, int, float)):
                return None
            out = np.full(self.shape, value, dtype=self.dtype)
            return out if out.size == 0 or out.flat[0] == value else None  # inexact: torch decides
        info = checkpoint.variables[self.source]
        if info.dtype != self.dtype:
            return None
        source = checkpoint.read(self.source)
        if self.transform.perm is None:
            value = self.transform(source)
            return value if value.flags.c_contiguous else np.ascontiguousarray(value)  # (keeps 0-d arrays 0-d)
        self.transform.check_rank(tuple(source.shape))
        return _Permuted(source.transpose(self.transform.perm(source.ndim)))


@dataclass(frozen=True)
class _Permuted:
    view: np.ndarray  # a permuted view of the source, not yet copied


#: the rows a slab of :meth:`Entry.pieces` has at least, if that keeps it within 4 pieces'
#: size: a slab's rows are the source's contiguous run in a transposed copy, and shorter runs
#: than this lose the tiling's speed
SLAB_MIN_ROWS = 128


def _slabs(view: np.ndarray, scratch, piece_bytes: int) -> Iterator[np.ndarray]:
    row = max(1, view[:1].nbytes)
    step = max(1, piece_bytes // row, min(SLAB_MIN_ROWS, 4 * piece_bytes // row))
    for start in range(0, view.shape[0], step):
        yield _copied(view[start:start + step], scratch)


def _copied(view: np.ndarray, scratch) -> np.ndarray:
    """A C-ordered copy of ``view``, in ``scratch`` if given."""
    out = scratch.array(view.shape, view.dtype) if scratch is not None else np.empty(view.shape, view.dtype)
    _blocked_copy(out, view)
    return out


def _blocked_copy(out: np.ndarray, view: np.ndarray, lines: int = 16, min_run: int = 128,
                  min_bytes: int = 1 << 20) -> None:
    """``out[...] = view`` for a C-contiguous ``out`` and a permuted ``view``, in tiles.

    numpy copies in the destination's order, so a transposed source is read one element per
    cache line (about 1 GiB/s here, and worst for power-of-two row strides, whose lines compete
    for the same cache sets). Each tile here spans the whole of the source's contiguous axis
    and about ``lines`` source rows (the destination's innermost axes are taken whole while
    they fit in ``2 * lines``, as a 3x3x3 kernel's 27 do), so the rows stay in cache until every
    element of each line is used. Measured here with sources out of cache, in GiB/s: a
    1024x1024 float32 transpose 5.1 instead of 0.9 (torch's two-thread copy: 6.2), a
    3x3x3x256x256 conv kernel 2.9 instead of 1.5 (torch: 2.7), 3x3x3x512x512 4.1 instead of 1.1.
    One thread: splitting the tiles across threads lost more to the GIL than it gained.
    Tensors under ``min_bytes`` (in cache anyway) and short contiguous runs keep numpy's copy.
    """
    if out.ndim < 2 or out.nbytes < min_bytes:
        np.copyto(out, view)
        return
    # the source's contiguous axis: its smallest stride (axes of length 1 have no stride to speak of)
    s = min(range(view.ndim), key=lambda a: abs(view.strides[a]) if view.shape[a] > 1 else 1 << 62)
    if s == view.ndim - 1 or view.shape[s] < min_run:
        np.copyto(out, view)  # already read in order, or too short a run to repay the tiling
        return
    others = [a for a in range(view.ndim) if a != s]
    step = {}
    rows = 1  # source rows per tile so far
    for a in reversed(others):  # the destination's innermost axes first
        size = out.shape[a]
        step[a] = size if rows * size <= 2 * lines else max(1, min(size, lines // rows))
        rows *= step[a]
    index = [slice(None)] * out.ndim
    for starts in itertools.product(*(range(0, out.shape[a], step[a]) for a in others)):
        for a, start in zip(others, starts):
            index[a] = slice(start, start + step[a])
        tile = tuple(index)
        np.copyto(out[tile], view[tile])


#: dtypes numpy and torch share: torch.from_numpy takes them directly, and either framework
#: produces the same bytes for a converted tensor
_TORCH_NATIVE = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                 "uint64", "bool", "complex64", "complex128"}


def _torch_view(array: np.ndarray):
    """A torch tensor sharing ``array``'s memory, read-only memory maps included (tf2pt never
    writes through it)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def numpy_to_torch(array: np.ndarray, copy: bool = True):
    """A torch tensor owning a copy of ``array`` (with ``copy=False``: sharing it when it is
    already a writable, C-ordered array of its own): handles read-only memory maps and
    ml_dtypes' bfloat16/float8 (numpy cannot hand those to torch directly: the bytes are
    reinterpreted)."""
    import torch

    if array.dtype == object:
        raise TypeError("string tensors have no torch equivalent")
    name = array.dtype.name
    if name == "bfloat16" or name.startswith("float8"):
        target = getattr(torch, name, None)
        if target is None:
            raise TypeError(f"this torch has no {name}")
        raw = np.array(array, order="C").view(np.int16 if array.dtype.itemsize == 2 else np.uint8)
        return torch.from_numpy(raw).view(target)
    if not copy and array.flags.writeable and array.flags.c_contiguous and array.flags.owndata:
        return torch.from_numpy(array)
    return torch.from_numpy(np.array(array, copy=True, order="C"))


@dataclass
class Report:
    """What a conversion did, for people (:meth:`summary`) and machines (:meth:`to_dict`)."""

    checkpoint: str
    mapping: str
    target: str
    tf2pt_version: str = __version__
    files: List[Dict[str, Any]] = field(default_factory=list)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    mapped: List[Dict[str, Any]] = field(default_factory=list)
    ignored: List[Dict[str, Any]] = field(default_factory=list)
    filled: List[Dict[str, Any]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    output: Optional[str] = None
    seconds: Optional[float] = None
    #: what the shapes and dtypes were checked against: "model" (its state_dict on the meta
    #: device), "spec" (the target's declared spec; torch not loaded), or "spec and model"
    checked_against: str = "model"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["counts"] = self.counts()
        return d

    def counts(self) -> Dict[str, int]:
        return {
            "mapped": len(self.mapped),
            "ignored": len(self.ignored),
            "filled": len(self.filled),
            "problems": len(self.problems),
        }

    def summary(self) -> str:
        c = self.counts()
        reasons: Dict[str, int] = {}
        for row in self.ignored:
            reasons[row["rule"]] = reasons.get(row["rule"], 0) + 1
        fills: Dict[str, int] = {}
        for row in self.filled:
            fills[row["reason"]] = fills.get(row["reason"], 0) + 1
        lines = [f"mapping {self.mapping!r} -> target {self.target!r}",
                 f"  mapped:   {c['mapped']} TF variables -> PyTorch keys",
                 f"  ignored:  {c['ignored']} TF variables by rule" + (":" if reasons else "")]
        lines += [f"    {n:>6}  {r}" for r, n in sorted(reasons.items())]
        lines.append(f"  filled:   {c['filled']} PyTorch keys by rule" + (":" if fills else ""))
        lines += [f"    {n:>6}  {r}" for r, n in sorted(fills.items())]
        lines.append(f"  problems: {c['problems']}")
        if self.checked_against == "spec":
            lines.append("  checked against: the target's declared spec (torch not loaded)")
        elif self.checked_against == "spec and model":
            lines.append("  checked against: the target's declared spec and the model")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


State = Dict[str, Tuple[Tuple[int, ...], str]]


def model_state(target: Target, kwargs: Dict[str, Any]) -> State:
    """``{key: (shape, dtype name)}`` of the target model, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = target.build(**kwargs)
    return {k: (tuple(v.shape), dtype_name(v.dtype)) for k, v in model.state_dict().items()}


def spec_state(target: Target, kwargs: Dict[str, Any]) -> State:
    """The target's declared spec (see :class:`tf2pt.mapping.Target`), normalised; raises
    :class:`~tf2pt.errors.MappingError` for a malformed one."""
    from .errors import MappingError

    state: State = {}
    for key, value in target.spec(**kwargs).items():
        try:
            shape, dtype = value
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise MappingError(f"target {target.name!r}: spec entry {key!r} is {value!r}, not (shape, dtype)") from None
        name = dtype_name(dtype)
        if name not in DTYPES:  # the dtypes tf2pt's writers know
            raise MappingError(f"target {target.name!r}: spec entry {key!r} has unknown dtype {name!r}",
                               hint="use torch's dtype names, e.g. 'float32'")
        state[str(key)] = (shape, name)
    return state


def state_differences(spec: State, model: State) -> List[str]:
    """How a declared spec differs from the model's state dict (empty when they agree)."""
    out = [f"{k!r} is in the spec but not in the model" for k in spec if k not in model]
    out += [f"{k!r} {_shape(model[k][0])} {model[k][1]} is in the model but not in the spec" for k in model if k not in spec]
    out += [f"{k!r}: spec {_shape(spec[k][0])} {spec[k][1]}, model {_shape(model[k][0])} {model[k][1]}"
            for k in spec if k in model and spec[k] != model[k]]
    return out


def _target_state(target: Target, kwargs: Dict[str, Any], report: "Report") -> State:
    """What to check against: the declared spec when there is one (checked against the model
    too when torch is loaded anyway), else the model."""
    if target.spec is None:
        return model_state(target, kwargs)
    spec = spec_state(target, kwargs)
    report.checked_against = "spec"
    if "torch" in sys.modules:
        report.checked_against = "spec and model"
        report.problems.extend(f"target {target.name!r}: the mapping's declared spec disagrees with the model: {d}"
                               for d in state_differences(spec, model_state(target, kwargs)))
    return spec


def _shape(shape) -> List[int]:
    return [int(s) for s in shape]


def plan(checkpoint, mapping: Mapping, target: Target, model_kwargs: Optional[Dict[str, Any]] = None):
    """Decide, without reading tensor data, where every target key comes from.

    Returns ``(entries, report)``. ``report.problems`` lists every problem found.
    """
    kwargs = dict(mapping.model_kwargs(checkpoint)) if mapping.model_kwargs else {}
    kwargs.update(model_kwargs or {})
    report = Report(checkpoint=str(checkpoint.path), mapping=mapping.name, target=target.name, model_kwargs=kwargs)
    report.notes.extend(getattr(checkpoint, "notes", []))
    expected = _target_state(target, kwargs, report)
    problems = report.problems

    sources: Dict[str, Tuple[str, Transform]] = {}  # key -> (tf name, transform)
    claimed = set()  # keys some variable maps to, even when that failed a check
    inference = 0
    for name, info in checkpoint.variables.items():
        inference += info.role == "inference"
        refused = [r for r in mapping.refuse if r.matches(name)]
        if refused:
            problems.append(f"refused variable {name!r}: {refused[0].message}")
            continue
        ignore = next((r for r in mapping.ignore if r.matches(name, info.role)), None)
        if ignore is not None:
            rule = f"{ignore.reason}: {info.role_reason}" if ignore.role and info.role_reason != ignore.reason else ignore.reason
            report.ignored.append({"tf": name, "rule": rule})
            continue
        hits = [(r, m) for r in target.rename for m in [r.match(name)] if m]
        if not hits:
            problems.append(
                f"unmapped variable {name!r} {_shape(info.shape)} {info.dtype}: no rename or ignore rule matches it"
            )
            continue
        if len(hits) > 1:
            problems.append(f"variable {name!r} matches {len(hits)} rename rules: " + ", ".join(repr(r.pattern) for r, _ in hits))
            continue
        rule, match = hits[0]
        key = rule.key_for(match)
        transform = get_transform(rule.transform)
        claimed.add(key)
        if key in sources:
            problems.append(f"target key {key!r} would be filled twice: from {sources[key][0]!r} and from {name!r}")
            continue
        if key not in expected:
            problems.append(f"variable {name!r} maps to {key!r}, which the {target.name!r} model does not have")
            continue
        want_shape, want_dtype = expected[key]
        try:
            got_shape = transform.out_shape(info.shape)
        except ValueError as exc:
            problems.append(f"variable {name!r} -> {key!r}: {exc}")
            continue
        if got_shape != want_shape:
            problems.append(
                f"shape mismatch for {key!r}: TF {name!r} {_shape(info.shape)} -> {transform.name} -> "
                f"{_shape(got_shape)}, model expects {_shape(want_shape)}"
            )
            continue
        if info.dtype == "string" or not _castable(info.dtype, want_dtype):
            problems.append(f"dtype mismatch for {key!r}: TF {name!r} is {info.dtype}, model expects {want_dtype}")
            continue
        sources[key] = (name, transform)
        report.mapped.append(
            {"tf": name, "key": key, "transform": transform.name, "tf_shape": _shape(info.shape),
             "shape": _shape(want_shape), "tf_dtype": info.dtype, "dtype": want_dtype}
        )

    entries: List[Entry] = []
    for key, (shape, dtype) in expected.items():
        if key in sources:
            name, transform = sources[key]
            entries.append(Entry(key, shape, dtype, source=name, transform=transform))
            continue
        fill = next((f for f in target.fill if f.matches(key)), None)
        if fill is not None:
            entries.append(Entry(key, shape, dtype, fill=fill))
            report.filled.append({"key": key, "reason": fill.reason, "value": None if callable(fill.value) else fill.value})
            continue
        if key not in claimed:
            problems.append(f"target key {key!r} {_shape(shape)} is not filled: no TF variable maps to it and no fill rule matches")

    if mapping.source.variables is not None and inference != mapping.source.variables:
        report.notes.append(
            f"the mapping's source model has {mapping.source.variables} inference variables; this checkpoint has {inference}"
        )
    return entries, report


def _castable(tf_dtype: str, target: str) -> bool:
    """Whether a TF dtype may fill a target dtype (both by name): floats from floats, and so on."""
    if target.startswith(("float", "bfloat")):
        return tf_dtype in ("float16", "bfloat16", "float32", "float64")
    if target == "bool":
        return tf_dtype == "bool"
    if target.startswith("complex"):
        return tf_dtype.startswith("complex")
    return tf_dtype.startswith(("int", "uint"))


def prepare(path, mapping="highresnet", target: Optional[str] = None, strict: bool = True, **model_kwargs):
    """Open ``path`` (or take an open :class:`~tf2pt.reader.Checkpoint`) and plan the
    conversion. Returns ``(checkpoint, entries, report)``.

    With ``strict`` (the default) any problem raises :class:`~tf2pt.errors.ConversionError`
    listing all of them; otherwise problems stay in ``report.problems`` and the entries that
    could be planned are returned. The caller closes the checkpoint.
    """
    from .reader import Checkpoint, open_checkpoint

    m = get_mapping(mapping)
    t = m.target(target)
    t.check_available()
    checkpoint = path if isinstance(path, Checkpoint) else open_checkpoint(path)
    try:
        entries, report = plan(checkpoint, m, t, model_kwargs)
        report.files = [{"path": str(p)} for p in checkpoint.files]
        if strict and report.problems:
            raise ConversionError(report.problems, path=checkpoint.path, report=report,
                                  hint="fix the mapping or the checkpoint; --no-strict converts what it can")
    except BaseException:
        checkpoint.close()
        raise
    return checkpoint, entries, report


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
    files are hashed in parallel, largest first, on the cores the conversion leaves: on 2 cores one
    thread (measured here: a second one gained 13% at 2 GiB and lost 10% at 4 GiB, where the copy
    itself needs the core)."""

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
            from .errors import CheckpointNotFoundError

            raise CheckpointNotFoundError(f"cannot read for hashing: {self._error}", path=self.files[0])
        return {f: self._hashes[f] for f in self.files}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # hashing it reports the problem


def provenance(checkpoint, report: Report, hashes: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Safetensors metadata: where the weights came from and how (all values are strings).
    ``hashes`` maps each source file to its sha256 (see :class:`BackgroundHashes`); ``None``
    leaves ``source_sha256`` out."""
    import json
    import os

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


def iter_tensors(checkpoint, entries: List[Entry]) -> Iterator[Tuple[str, Any]]:
    for entry in entries:
        yield entry.key, entry.tensor(checkpoint)


def convert(path, mapping="highresnet", target: Optional[str] = None, strict: bool = True, **model_kwargs):
    """Convert the checkpoint at ``path`` (or an open :class:`~tf2pt.reader.Checkpoint`, which
    is closed afterwards) with ``mapping``. Returns ``(state_dict, report)``.

    >>> state_dict, report = tf2pt.convert("examples/highres3dnet", mapping="highresnet")
    >>> model = tf2pt.build_model("highresnet"); model.load_state_dict(state_dict)
    """
    import torch  # noqa: F401  (loaded first, so a declared target spec is checked against the model too)

    start = time.perf_counter()
    checkpoint, entries, report = prepare(path, mapping, target, strict, **model_kwargs)
    with checkpoint:
        state_dict = dict(iter_tensors(checkpoint, entries))
    report.seconds = time.perf_counter() - start
    return state_dict, report
