"""Planning a conversion: every TF variable under exactly one rule (a variable split into parts:
each part under exactly one), every target key from exactly one source, every shape compared
exactly. Reads no tensor data.

:func:`plan` puts each TF variable under exactly one rule (ignored, refused or renamed), gives
each target key exactly one source (a TF variable or a fill rule), and compares each
post-transform shape with the target model's ``state_dict()`` -- built on the ``meta`` device,
so checking a large model costs no memory -- or with the target's declared torch-free ``spec``
(see :class:`tf2pt.mapping.Target`). All problems are collected and reported at once.
:mod:`tf2pt.write` then produces the tensors of the resulting :class:`Entry` list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ._version import __version__
from .dtypes import TORCH, dtype_name
from .errors import MappingError
from .mapping import Fill, Mapping, Target
from .transforms import Transform, get_transform


@dataclass
class Entry:
    """One target key and where its value comes from: a TF variable through a transform, or a
    fill rule. :mod:`tf2pt.write.tensors` makes its bytes."""

    key: str
    shape: Tuple[int, ...]
    dtype: str  # the target's dtype, by name ("float32")
    source: Optional[str] = None  # TF variable name
    transform: Optional[Transform] = None
    fill: Optional[Fill] = None


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
        variables = len({row["tf"] for row in self.mapped})  # fewer than keys where one is split into parts
        into = "PyTorch keys" if variables == c["mapped"] else f"{c['mapped']} PyTorch keys"
        lines = [f"mapping {self.mapping!r} -> target {self.target!r}",
                 f"  mapped:   {variables} TF variables -> {into}",
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
    state: State = {}
    for key, value in target.spec(**kwargs).items():
        try:
            shape, dtype = value
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise MappingError(f"target {target.name!r}: spec entry {key!r} is {value!r}, not (shape, dtype)") from None
        name = dtype_name(dtype)
        if name not in TORCH:  # the dtypes tf2pt's writers know
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



def target_state(target: Target, kwargs: Dict[str, Any], report: Report, check_model: bool = False) -> State:
    """What to check against: the declared spec when there is one, else the model. With
    ``check_model`` (callers that load torch anyway) a declared spec is itself checked against
    the model, and every difference becomes a problem."""
    if target.spec is None:
        return model_state(target, kwargs)
    spec = spec_state(target, kwargs)
    report.checked_against = "spec"
    if check_model:
        report.checked_against = "spec and model"
        report.problems.extend(f"target {target.name!r}: the mapping's declared spec disagrees with the model: {d}"
                               for d in state_differences(spec, model_state(target, kwargs)))
    return spec


def model_kwargs_for(mapping: Mapping, checkpoint, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The model's keyword arguments: those the mapping reads off the checkpoint, plus
    ``overrides``. An override that contradicts what the checkpoint holds (``num_classes=4`` on
    a 160-class checkpoint) is one :class:`~tf2pt.errors.MappingError`, not a list of shape
    mismatches; overrides the checkpoint says nothing about are taken as given."""
    read = dict(mapping.model_kwargs(checkpoint)) if mapping.model_kwargs else {}
    overrides = dict(overrides or {})
    clashes = [k for k in overrides if k in read and overrides[k] != read[k]]
    if clashes:
        said = ", ".join(f"{k}={overrides[k]!r}" for k in clashes)
        holds = ", ".join(f"{k}={read[k]!r}" for k in clashes)
        raise MappingError(f"{said} contradicts the checkpoint, which holds {holds} (read by mapping {mapping.name!r})",
                           path=getattr(checkpoint, "path", None),
                           hint="leave it out: tf2pt reads it from the checkpoint")
    read.update(overrides)
    return read


def _label(name: str, readable: Optional[str]) -> str:
    """A variable as problems name it: the stored key, and the readable name where it differs."""
    if readable and readable != name:
        return f"{name!r} (readable name {readable!r})"
    return repr(name)


def _shape(shape) -> List[int]:
    return [int(s) for s in shape]


def plan(checkpoint, mapping: Mapping, target: Target, model_kwargs: Optional[Dict[str, Any]] = None,
         check_model: bool = False):
    """Decide, without reading tensor data, where every target key comes from.

    Returns ``(entries, report)``. ``report.problems`` lists every problem found. With
    ``check_model`` a target's declared spec is checked against its model (needs torch).
    """
    kwargs = model_kwargs_for(mapping, checkpoint, model_kwargs)
    report = Report(checkpoint=str(checkpoint.path), mapping=mapping.name, target=target.name, model_kwargs=kwargs)
    report.notes.extend(getattr(checkpoint, "notes", []))
    expected = target_state(target, kwargs, report, check_model)
    problems = report.problems

    sources: Dict[str, Tuple[str, Transform]] = {}  # key -> (tf name, transform)
    claimed = set()  # keys some variable maps to, even when that failed a check
    inference = 0
    for name, info in checkpoint.variables.items():
        inference += info.role == "inference"
        readable = getattr(info, "readable_name", None)
        readable = readable if readable and readable != name else None
        label = _label(name, readable)
        refused = [r for r in mapping.refuse if r.matches(name) or (readable is not None and r.matches(readable))]
        if refused:
            problems.append(f"refused variable {label}: {refused[0].message}")
            continue
        ignore = next((r for r in mapping.ignore
                       if r.matches(name, info.role) or (readable is not None and r.matches(readable, info.role))), None)
        if ignore is not None:
            rule = f"{ignore.reason}: {info.role_reason}" if ignore.role and info.role_reason != ignore.reason else ignore.reason
            report.ignored.append({"tf": name, **({"readable": readable} if readable else {}), "rule": rule})
            continue
        # rules match the stored name first, then the readable one (Keras, TF2 object graphs)
        by_name = [(r, m) for r in target.rename for m in [r.match(name)] if m]
        by_readable = [(r, m) for r in target.rename for m in [r.match(readable)] if m] if readable is not None else []
        if by_name and by_readable and {id(r) for r, _ in by_name} != {id(r) for r, _ in by_readable}:
            problems.append(
                f"variable {label} matches rename rule(s) " + ", ".join(repr(r.pattern) for r, _ in by_name)
                + " by its stored name and " + ", ".join(repr(r.pattern) for r, _ in by_readable)
                + " by its readable name: make the rules tell them apart")
            continue
        hits = by_name or by_readable
        if not hits:
            problems.append(
                f"unmapped variable {label} {_shape(info.shape)} {info.dtype}: no rename or ignore rule matches it"
            )
            continue
        transforms = [get_transform(r.transform) for r, _ in hits]
        problem = _parts_problem(label, hits, transforms)
        if problem:
            problems.append(problem)
            continue
        for (rule, match), transform in zip(hits, transforms):
            _rename(name, readable, info, rule.key_for(match), transform, target, expected, sources, claimed, problems,
                    report, checkpoint)

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

    matched = len(report.mapped)
    if inference >= 5 and matched < 0.2 * inference:  # nearly nothing matches: say first what that means
        kind = mapping.description.split(" -> ")[0].strip() or f"model of mapping {mapping.name!r}"
        problems.insert(0, f"{matched} of {inference} inference variables match mapping {mapping.name!r}: this "
                           f"checkpoint is probably not a {kind} (run `tf2pt inspect` to see what it holds)")
    if mapping.source.variables is not None and inference != mapping.source.variables:
        report.notes.append(
            f"the mapping's source model has {mapping.source.variables} inference variables; this checkpoint has {inference}"
        )
    return entries, report


def _parts_problem(label: str, hits, transforms) -> Optional[str]:
    """Why the rename rules ``hits`` cannot all take the variable ``label`` names (``None``: they can).
    One rule may; several only when each takes a different part of the variable (see
    :mod:`tf2pt.transforms`) and together they take all of its parts."""
    if len(hits) == 1 and transforms[0].part is None:
        return None
    parts = [t.part for t in transforms]
    if None in parts:
        return f"variable {label} matches {len(hits)} rename rules: " + ", ".join(repr(r.pattern) for r, _ in hits)
    rules = ", ".join(f"{r.pattern!r} ({t.name})" for (r, _), t in zip(hits, transforms))
    groups = {t.parts for t in transforms}
    whole = transforms[0].parts
    if len(groups) > 1 or len(set(parts)) != len(parts):
        return f"variable {label}: its rename rules take overlapping or unrelated parts of it: {rules}"
    missing = [p for p in whole if p not in parts]
    if missing:
        return (f"variable {label}: its rename rules take only part(s) {', '.join(parts)} of it; no rule takes part(s) "
                f"{', '.join(missing)}: {rules}")
    return None


def _rename(name, readable, info, key, transform, target, expected, sources, claimed, problems, report,
            checkpoint) -> None:
    """One variable (or one part of it) -> ``key``: checked, and recorded in ``sources``."""
    label = _label(name, readable)
    claimed.add(key)
    if key in sources:
        first = sources[key][0]
        problems.append(f"target key {key!r} would be filled twice: from "
                        f"{_label(first, getattr(checkpoint.variables[first], 'readable_name', None))} and from {label}")
        return
    if key not in expected:
        problems.append(f"variable {label} maps to {key!r}, which the {target.name!r} model does not have")
        return
    want_shape, want_dtype = expected[key]
    try:
        got_shape = transform.out_shape(info.shape)
    except ValueError as exc:
        problems.append(f"variable {label} -> {key!r}: {exc}")
        return
    if got_shape != want_shape:
        problems.append(
            f"shape mismatch for {key!r}: TF {label} {_shape(info.shape)} -> {transform.name} -> "
            f"{_shape(got_shape)}, model expects {_shape(want_shape)}"
        )
        return
    if info.dtype == "string" or not _castable(info.dtype, want_dtype):
        problems.append(f"dtype mismatch for {key!r}: TF {label} is {info.dtype}, model expects {want_dtype}")
        return
    sources[key] = (name, transform)
    report.mapped.append(
        {"tf": name, **({"readable": readable} if readable else {}), "key": key, "transform": transform.name,
         "tf_shape": _shape(info.shape), "shape": _shape(want_shape), "tf_dtype": info.dtype, "dtype": want_dtype}
    )


def _castable(tf_dtype: str, target: str) -> bool:
    """Whether a TF dtype may fill a target dtype (both by name): floats from floats, and so on."""
    if target.startswith(("float", "bfloat")):
        return tf_dtype in ("float16", "bfloat16", "float32", "float64")
    if target == "bool":
        return tf_dtype == "bool"
    if target.startswith("complex"):
        return tf_dtype.startswith("complex")
    return tf_dtype.startswith(("int", "uint"))
