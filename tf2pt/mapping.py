"""The mapping spec: everything tf2pt needs to know to convert one architecture.

A mapping module (one file per architecture; the built-ins are the top-level ``mappings/``,
installed as ``tf2pt.mappings``) reads top to bottom:

1. :class:`Source` -- facts about the TF checkpoint: origin, licence, scope, variable count.
2. target factories -- functions that build the PyTorch model(s).
3. :class:`Ignore` rules -- which TF variables are deliberately dropped, and why.
4. :class:`Rename` rules -- TF name (regex) -> PyTorch key, with a named layout transform.
5. :class:`Fill` rules -- PyTorch keys with no TF counterpart (e.g. ``num_batches_tracked``).
6. ``MAPPING = Mapping(...)`` -- ties it together; the registry finds it by that name.

Nothing is skipped silently: :func:`tf2pt.plan.plan` puts every TF variable under exactly one
rule and fills every target key, or reports the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping as TMapping, Optional, Sequence, Tuple, Union

from .errors import DependencyError, MappingError, did_you_mean

KeySpec = Union[str, Callable[["re.Match[str]"], str]]

_META = set(".^$*+?{}[]|()")


def _literal_prefix(pattern: str) -> Tuple[str, bool]:
    """``(prefix, whole)``: the text every full match of ``pattern`` starts with, and whether
    that is all of it (a literal pattern). Found by a scan, not by compiling: a mapping of
    hundreds of literal rules then compiles only the few that are used."""
    if _top_level_alternation(pattern):
        return "", False
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < len(pattern) else ""
            if not nxt or nxt.isalnum() or nxt == "_":  # \d, \1, ...: a class or a reference
                return "".join(out), False
            out.append(nxt)
            i += 2
            continue
        if c in _META:
            # a quantifier makes the character before it optional
            if c in "*?{" and out:
                out.pop()
            return "".join(out), False
        out.append(c)
        i += 1
    return "".join(out), True


def _top_level_alternation(pattern: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":  # "[]...]": a literal ] first
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


class _Pattern:
    """A full-match regex, compiled when first needed (a bad one is a MappingError then)."""

    pattern: Optional[str]

    @property
    def regex(self) -> "re.Pattern[str]":
        rx = self.__dict__.get("_rx")
        if rx is None:
            try:
                rx = re.compile(self.pattern)
            except re.error as exc:
                raise MappingError(f"bad regular expression {self.pattern!r} in a mapping rule ({exc})") from None
            object.__setattr__(self, "_rx", rx)
        return rx

    def could_match(self, text: str) -> bool:
        """A cheap necessary condition for a full match (no regex compiled)."""
        info = self.__dict__.get("_prefix")
        if info is None:
            info = _literal_prefix(self.pattern)
            object.__setattr__(self, "_prefix", info)
        prefix, whole = info
        return text == prefix if whole else text.startswith(prefix)

    def fullmatch(self, text: str) -> Optional["re.Match[str]"]:
        return self.regex.fullmatch(text) if self.could_match(text) else None


@dataclass(frozen=True)
class Source:
    """What the TF side is. ``variables`` counts the inference variables a checkpoint should have."""

    origin: str
    scope: str = ""
    variables: Optional[int] = None
    license: Optional[str] = None
    framework: str = "TensorFlow"
    meta: TMapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ignore(_Pattern):
    """Drop the TF variables whose name fully matches ``pattern``, for ``reason``.

    With ``role`` set (and no pattern) the rule instead matches every variable of that role:
    ``"training"`` for what :mod:`tf2pt.roles` classifies as training-only (optimizer slots,
    moving-average shadows, step counters, ...), ``"constant"`` for a frozen graph's plumbing
    constants. The report then names the role's own reason too.
    """

    pattern: Optional[str]
    reason: str
    role: Optional[str] = None

    def __post_init__(self):
        if (self.pattern is None) == (self.role is None):
            raise MappingError(f"ignore rule {self.reason!r} needs exactly one of a pattern or a role")

    def matches(self, name: str, role: str) -> bool:
        if self.role is not None:
            return role == self.role
        return self.fullmatch(name) is not None


#: The usual first ignore rule: drop everything tf2pt classifies as training-only.
TRAINING_ONLY = Ignore(None, "training-only", role="training")
#: For frozen graphs: drop the graph's plumbing constants (shapes, axes, keep probabilities).
GRAPH_CONSTANTS = Ignore(None, "graph constant", role="constant")


@dataclass(frozen=True)
class Rename(_Pattern):
    """A TF name fully matching ``pattern`` becomes ``key`` after ``transform``.

    ``key`` is a template expanded with the match (``\\1``, ``\\g<name>``), or a function of the
    match for names a template cannot express. ``transform`` is a name (``"conv2d"``, or a
    parametrised ``"dense_after_flatten:7x7x64"``) or a :class:`~tf2pt.transforms.Transform`.

    One variable may feed several keys: when every rule matching it has a transform that takes
    one *part* of it (``gru_bias_ih`` and ``gru_bias_hh``, ``tf1_lstm_kernel_ih`` and ``_hh``),
    each part goes to its own key, and the plan checks the parts are all taken, once each.
    """

    pattern: str
    key: KeySpec
    transform: str = "identity"

    def match(self, name: str) -> Optional["re.Match[str]"]:
        return self.fullmatch(name)

    def key_for(self, match: "re.Match[str]") -> str:
        return self.key(match) if callable(self.key) else match.expand(self.key)


@dataclass(frozen=True)
class Fill(_Pattern):
    """Target keys fully matching ``pattern`` that have no TF counterpart get ``value``."""

    pattern: str
    value: Any
    reason: str

    def matches(self, key: str) -> bool:
        return self.fullmatch(key) is not None


@dataclass(frozen=True)
class Refuse(_Pattern):
    """Variables fully matching ``pattern`` make the conversion fail with ``message``.

    For checkpoints a mapping knowingly does not support (rather than mis-converting them).
    """

    pattern: str
    message: str

    def matches(self, name: str) -> bool:
        return self.fullmatch(name) is not None


@dataclass(frozen=True)
class Target:
    """One PyTorch model a mapping can fill, with the rules that name its keys."""

    name: str
    description: str
    build: Callable[..., Any]
    rename: Sequence[Rename]
    fill: Sequence[Fill] = ()
    requires: Sequence[str] = ()  # importable modules the target needs, e.g. ("monai",)
    extra: Optional[str] = None  # the pip extra that installs them
    notes: str = ""
    #: ``{layer name: module path}`` for ``verify --per-layer``; layer names are the ones the
    #: mapping's TF reference forward reports (see :class:`VerifySpec`).
    layers: TMapping[str, str] = field(default_factory=dict)
    #: Optional: ``spec(**model_kwargs) -> {key: (shape, dtype name)}``, the model's
    #: ``state_dict()`` described without torch. With it, ``tf2pt convert`` to ``.safetensors``
    #: plans and checks against the spec and never imports torch unless a tensor
    #: needs it; wherever torch is loaded anyway (``.pth`` output, the Python API) the spec is
    #: also checked against the model, and :func:`tf2pt.testing.check_target_spec` checks it in
    #: a mapping's tests. ``build`` must then import torch lazily (inside the function).
    spec: Optional[Callable[..., TMapping[str, Tuple[Sequence[int], str]]]] = None

    def check_available(self) -> None:
        import importlib.util

        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, f"target {self.name!r}", extra=self.extra)


@dataclass(frozen=True)
class VerifySpec:
    """What ``tf2pt verify`` needs to run the TF model and compare it with the target.

    The TF side runs the original graph when there is one (a ``.meta`` next to the checkpoint, a
    frozen ``.pb``, a SavedModel): it feeds ``tf_input`` (channels-last, with a batch axis) and
    ``feeds``, and fetches ``tf_output``. Otherwise it runs ``tf_reference(variables, x)``, a
    forward pass built from ``tf.nn`` ops and the checkpoint's variables as TF reads them, which
    returns ``(output, {layer: output})`` for the layers in ``layers``.

    A TF2 SavedModel runs through ``tf.saved_model.load`` and a signature (``signature``, by
    default ``serving_default``): its inputs' shapes and dtypes come from the signature,
    ``inputs`` orders them as the target model's ``forward`` takes them (default: sorted by
    name), ``outputs`` names the outputs compared, in the order ``forward`` returns them
    (default: every output of the signature, sorted). ``layout`` is the bridge between TF's
    and torch's layouts: ``"channels_last"`` (TF ``N, *spatial, C``, torch ``N, C, *spatial``:
    inputs of rank >= 3 are moved channels-first for torch, torch outputs of rank >= 3 back) or
    ``"none"`` (the arrays are passed as they are: vectors, token ids); ``None``: channels_last
    for rank >= 3, none below. ``tf_reference(variables, *inputs)`` then gets the inputs in TF's
    layout and returns ``(output or tuple of outputs, {})``.

    A Keras ``.keras`` or full-model ``.h5`` file runs through Keras itself (Keras 3's
    ``load_model(safe_mode=True)``, or ``tf_keras`` for a file Keras 2 wrote), with the Keras
    model's inputs and outputs in place of a signature's (``inputs``/``outputs`` default to the
    model's order). A weights-only Keras file has no architecture: it runs through
    ``keras_model`` (a Keras model the mapping builds; Keras loads the weights into it), else
    through ``tf_reference`` with the inputs ``input_specs`` declares. For Keras files,
    ``tf_reference``'s ``variables`` are the file's HDF5 datasets as h5py reads them, by their
    stored names (``layers/conv2d/vars/0``, ``model_weights/conv/conv/kernel:0``: what
    ``tf2pt inspect`` lists).
    """

    tf_input: str = ""
    tf_output: str = ""
    feeds: TMapping[str, Any] = field(default_factory=dict)
    #: "logits", "probabilities", "regression", "embedding" or "segmentation" (for the metrics
    #: that fit it); ``None``: inferred from the output's shape. "probability" (a single
    #: probability channel, with ``threshold``) is the 3-D volume path's name for probabilities.
    output_kind: Optional[str] = None
    #: labels are ``output > threshold`` on a single channel when set, else the channel argmax
    threshold: Optional[float] = None
    spatial_multiple: int = 1
    #: resample every input to this size first (models with a fixed input size), with
    #: ``resize``: "linear", or "antialias" (skimage.transform.resize's Gaussian pre-filter)
    size: Optional[Tuple[int, int, int]] = None
    resize: str = "linear"
    #: absolute max-error threshold; ``None``: 1e-4 x the range of TF's output
    atol: Optional[float] = None
    #: names from ``tf2pt.volume.PREPROCESSORS``, applied in order (after ``size``)
    preprocess: Sequence[str] = ()
    #: centre crop applied on CPU when the user gives no ``--crop`` (keeps CPU runs to minutes)
    cpu_crop: Optional[Tuple[int, int, int]] = None
    #: a colour table (``index name R G B A`` lines) inside tf2pt/data, for ``--figure``
    label_table: Optional[str] = None
    tf_reference: Optional[Callable[..., Any]] = None
    layers: Sequence[str] = ()
    #: ``{layer: tensor name}``: where the original graph holds a layer's output (``conv/BiasAdd:0``),
    #: so that ``verify --per-layer`` fetches it from the graph itself (``tf2pt map`` writes them);
    #: layers without one come from ``tf_reference``
    layer_tensors: TMapping[str, str] = field(default_factory=dict)
    notes: str = ""
    layout: Optional[str] = None
    signature: Optional[str] = None
    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()
    #: synthetic integer inputs (token ids) are drawn from ``[0, int_high)``; ``None``: from the
    #: smallest ``input_dim`` of a Keras model's Embedding layers, else 2
    int_high: Optional[int] = None
    #: for a Keras weights-only file (``save_weights``: no architecture): ``keras_model()`` builds
    #: the Keras model (importing Keras inside), into which Keras' ``load_weights`` loads the file
    keras_model: Optional[Callable[[], Any]] = None
    #: the inputs of a model that declares none itself (a weights-only file run through
    #: ``tf_reference`` alone, a Sequential built without an Input): ``{name: (shape, dtype)}``,
    #: in ``forward``'s order, ``None`` for unknown sizes (``{"images": ((None, 8, 8, 3), "float32")}``)
    input_specs: TMapping[str, Tuple[Sequence[Optional[int]], str]] = field(default_factory=dict)
    #: how far (input voxels, per side) an output voxel sees: a windowed verify's default border,
    #: with which the windows' labels are the whole volume's (``None``: not declared)
    receptive_radius: Optional[int] = None

    def __post_init__(self):
        if self.layout not in (None, "channels_last", "none"):
            raise MappingError(f"VerifySpec.layout {self.layout!r} is not 'channels_last' or 'none'")
        kinds = (None, "logits", "probability", "probabilities", "regression", "embedding", "segmentation")
        if self.output_kind not in kinds:
            raise MappingError(f"VerifySpec.output_kind {self.output_kind!r} is not one of "
                               f"{', '.join(k for k in kinds if k)}")


@dataclass(frozen=True)
class Mapping:
    """A complete mapping. ``targets[0]`` is the default target."""

    name: str
    description: str
    source: Source
    targets: Sequence[Target]
    ignore: Sequence[Ignore] = (TRAINING_ONLY,)
    refuse: Sequence[Refuse] = ()
    #: ``f(checkpoint) -> dict`` of model keyword arguments read off the checkpoint (e.g. the
    #: number of classes), so a variant of the architecture converts without flags.
    model_kwargs: Optional[Callable[[Any], Dict[str, Any]]] = None
    #: Facts for ``tf2pt verify`` (input/output tensor names, preprocessing, ...); see tf2pt.verify.
    verify: Any = None
    #: Where the mapping was loaded from (set by the registry).
    origin: str = ""

    def __post_init__(self):
        if not self.targets:
            raise MappingError(f"mapping {self.name!r} declares no targets")
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise MappingError(f"mapping {self.name!r} declares target(s) {', '.join(dupes)} twice")

    @property
    def default_target(self) -> Target:
        return self.targets[0]

    def target(self, name: Optional[str] = None) -> Target:
        if name is None:
            return self.default_target
        for t in self.targets:
            if t.name == name:
                return t
        raise MappingError(
            f"mapping {self.name!r} has no target {name!r}",
            hint=did_you_mean(name, [t.name for t in self.targets]),
        )


def rename_table(rows: Sequence[Tuple[str, str, str]], scope: str = "") -> List[Rename]:
    """Rename rules from a table of ``(tf_suffix_regex, key_template, transform)`` rows.

    ``scope`` (escaped) is prefixed to every pattern, so tables stay readable.
    """
    prefix = re.escape(scope)
    return [Rename(prefix + pattern, key, transform) for pattern, key, transform in rows]
