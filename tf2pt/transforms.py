"""Named tensor layout transforms: TensorFlow layout in, PyTorch layout out.

Each transform is a pure numpy function with a name, so a mapping can say *which* layout change
it applies and a report can show it. Each one also maps shapes without data, so a conversion can
be checked against the target model before a byte is read.

=====================  ===================================  =================================
name                   TensorFlow layout                    PyTorch layout
=====================  ===================================  =================================
``identity``           any                                  the same
``conv``               ``[k..., in, out]`` (1-3 spatial)    ``[out, in, k...]``
``conv1d``             ``[w, in, out]``                     ``[out, in, w]``
``conv2d``             ``[h, w, in, out]``                  ``[out, in, h, w]``
``conv3d``             ``[d, h, w, in, out]``               ``[out, in, d, h, w]``
``conv_transpose*``    ``[k..., out, in]``                  ``[in, out, k...]``
``dense``              ``[in, out]``                        ``[out, in]``
``depthwise2d``        ``[h, w, in, multiplier]``           ``[in * multiplier, 1, h, w]``
``scalar``             ``[]`` or ``[1]``                    ``[]`` (e.g. a PReLU alpha)
``depthwise1d``        ``[w, in, multiplier]``              ``[in * multiplier, 1, w]``
=====================  ===================================  =================================

Recurrent layers (Keras ``LSTM``/``GRU``/``SimpleRNN`` and TF1 cells into ``nn.LSTM``/``nn.GRU``/
``nn.RNN`` or the modules of :mod:`tf2pt.nn.recurrent`; Keras' LSTM and SimpleRNN kernels need
only ``dense``):

* ``gru_kernel``: a Keras GRU (recurrent) kernel ``[in, 3u]``, gates z,r,h -> ``[3u, in]``, r,z,n;
* ``gru_bias``: ``[3u]`` z,r,h -> r,z,n (``reset_after=False``);
* ``gru_bias_ih`` / ``gru_bias_hh``: row 0 / row 1 of a ``reset_after`` bias ``[2, 3u]``, r,z,n
  (one part each);
* ``tf1_lstm_kernel_ih`` / ``_hh``: a TF1 ``LSTMCell`` kernel ``[in + u, 4u]``, gates i,j,f,o ->
  ``[4u, in]`` / ``[4u, u]``, i,f,g,o (parts);
* ``tf1_lstm_bias[:F]``: ``[4u]`` i,j,f,o -> i,f,g,o with ``F``, the cell's run-time
  ``forget_bias`` (default 1.0, never stored), added to f;
* ``tf1_gru_gates_kernel_ih`` / ``_hh`` (``gates/kernel [in + u, 2u]``, r,u) and
  ``tf1_gru_candidate_kernel_ih`` / ``_hh`` (``candidate/kernel [in + u, u]``): the input and
  recurrent rows, transposed (parts).

**Parts.** A transform with a ``part`` takes one part of its variable (``ih``: the input
rows, ``hh``: the recurrent rows). Several rename rules may then match one variable, one per
part, and :func:`tf2pt.plan.plan` checks that together they take every part (``parts``) of it
once, so no slice of a variable is dropped unnoticed.

**Parametrised transforms** are named ``base:argument``, e.g. ``dense_after_flatten:7x7x64``
or ``tf1_lstm_bias:0.5``; :func:`get_transform` builds them on demand, and the factories
(:func:`dense_after_flatten`, :func:`tf1_lstm_bias`, ...) return the same transforms from Python:

``dense_after_flatten:HxWxC`` (or ``DxHxWxC``, ``LxC``): the kernel ``[H*W*C, out]`` of a Dense
layer after a channels-last ``Flatten`` -> a ``Linear`` weight ``[out, C*H*W]`` whose columns
follow a channels-first flatten, so a plain ``nn.Flatten`` of the NCHW feature map works.

Transposed convolutions need the same axis permutation as convolutions: TF keeps the kernel of
``conv3d_transpose`` as ``[k..., out, in]`` and torch's ``ConvTranspose3d`` as ``[in, out, k...]``;
no spatial flip is needed because both frameworks define the transposed convolution as the
gradient of the same correlation. ``tests/test_transforms.py`` checks every transform numerically
against the TF op, and ``tests/test_keras_layers.py`` the recurrent and Keras ones against
Keras 3, Keras 2 (``tf_keras``) and TF1's cells.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import MappingError

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    name: str
    description: str
    array: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[Shape], Shape]
    ranks: Tuple[int, ...] = ()  # accepted input ranks; empty = any
    #: for pure axis permutations: rank -> axes, so converters can permute with torch's faster
    #: (multi-threaded, cache-blocked) copy instead of numpy's; same result, bit for bit
    perm: Optional[Callable[[int], Tuple[int, ...]]] = None
    #: for transforms that take one part of a variable (``"ih"``), and ``parts``: all the parts
    #: that together cover it (``("ih", "hh")``); see the module docstring
    part: Optional[str] = None
    parts: Tuple[str, ...] = ()

    def __call__(self, value: np.ndarray) -> np.ndarray:
        self.check_rank(tuple(value.shape))
        return self.array(value)

    def check_rank(self, shape: Shape) -> None:
        if self.ranks and len(shape) not in self.ranks:
            raise ValueError(
                f"transform {self.name!r} expects a tensor of rank {' or '.join(map(str, self.ranks))}, got shape {list(shape)}"
            )

    def out_shape(self, shape: Sequence[int]) -> Shape:
        shape = tuple(int(s) for s in shape)
        self.check_rank(shape)
        return tuple(self.shape(shape))


def _kernel_perm(rank: int) -> Tuple[int, ...]:
    """``[k_1..k_n, a, b]`` -> ``[b, a, k_1..k_n]``."""
    n = rank - 2
    return (n + 1, n) + tuple(range(n))


def _permute(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(value, _kernel_perm(value.ndim)))


def _permute_shape(shape: Shape) -> Shape:
    return tuple(shape[i] for i in _kernel_perm(len(shape)))


def _depthwise(value: np.ndarray) -> np.ndarray:
    h, w, cin, mult = value.shape
    # TF output channel c * multiplier + m uses filter[:, :, c, m]; torch groups=cin wants [cin*mult, 1, h, w].
    return np.ascontiguousarray(value.reshape(h, w, cin * mult).transpose(2, 0, 1)[:, None, :, :])


def _scalar(value: np.ndarray) -> np.ndarray:
    if value.size != 1:
        raise ValueError(f"transform 'scalar' expects one element, got shape {list(value.shape)}")
    return value.reshape(()).copy()  # ascontiguousarray would give shape (1,)


def _scalar_shape(shape: Shape) -> Shape:
    if int(np.prod(shape, dtype=np.int64)) != 1:
        raise ValueError(f"transform 'scalar' expects one element, got shape {list(shape)}")
    return ()


def _depthwise1d(value: np.ndarray) -> np.ndarray:
    w, cin, mult = value.shape
    return np.ascontiguousarray(value.reshape(w, cin * mult).transpose(1, 0)[:, None, :])


# -- recurrent layers ---------------------------------------------------------------------------

def _gates(value: np.ndarray, n: int, order: Sequence[int], axis: int = -1) -> np.ndarray:
    """``value``'s ``n`` equal gate blocks along ``axis``, in ``order``."""
    size = value.shape[axis]
    if size % n:
        raise ValueError(f"a {n}-gate tensor needs a size divisible by {n} on axis {axis}, got shape {list(value.shape)}")
    blocks = np.split(value, n, axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def _gate_shape(shape: Shape, n: int, axis: int = -1) -> None:
    if shape[axis] % n:
        raise ValueError(f"a {n}-gate tensor needs a size divisible by {n} on axis {axis}, got shape {list(shape)}")


_GRU_ORDER = (1, 0, 2)  # Keras z, r, h -> torch r, z, n
_TF1_LSTM_ORDER = (0, 2, 1, 3)  # TF1 i, j, f, o -> torch i, f, g(=j), o


def _gru_kernel(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_gates(value, 3, _GRU_ORDER).T)


def _gru_kernel_shape(shape: Shape) -> Shape:
    _gate_shape(shape, 3)
    return shape[::-1]


def _gru_bias(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_gates(value, 3, _GRU_ORDER))


def _gru_bias_shape(shape: Shape) -> Shape:
    _gate_shape(shape, 3)
    return shape


def _gru_bias_row(row: int):
    def array(value: np.ndarray) -> np.ndarray:
        _gru_bias2_shape(value.shape)
        return np.ascontiguousarray(_gates(value[row], 3, _GRU_ORDER))
    return array


def _gru_bias2_shape(shape: Shape) -> Shape:
    if len(shape) != 2 or shape[0] != 2:
        raise ValueError(f"a reset_after GRU bias is [2, 3 * units], got shape {list(shape)} (a [3 * units] bias is a "
                         "reset_after=False GRU's: transform 'gru_bias')")
    _gate_shape(shape, 3)
    return (shape[1],)


def _split_rows(shape: Shape, gates: int, recurrent: Optional[int]) -> Tuple[int, int]:
    """``(input rows, recurrent rows)`` of a TF1 cell kernel ``[in + h, gates * u]``: the
    recurrent rows are ``u`` (the cell's units) unless a projection makes them ``recurrent``."""
    rows, cols = shape
    _gate_shape(shape, gates)
    h = cols // gates if recurrent is None else recurrent
    if not 0 < h < rows:
        raise ValueError(f"a cell kernel [input + {h}, {cols}] needs more than {h} rows, got shape {list(shape)}")
    return rows - h, h


def _cell_kernel(gates: int, order: Sequence[int], part: str, recurrent: Optional[int] = None):
    def array(value: np.ndarray) -> np.ndarray:
        n_in, _ = _split_rows(value.shape, gates, recurrent)
        rows = value[:n_in] if part == "ih" else value[n_in:]
        return np.ascontiguousarray(_gates(rows, gates, order).T)

    def shape(s: Shape) -> Shape:
        n_in, h = _split_rows(s, gates, recurrent)
        return (s[1], n_in if part == "ih" else h)

    return array, shape


def _cell_kernel_pair(name: str, what: str, gates: int, order: Sequence[int], recurrent: Optional[int] = None):
    suffix = "" if recurrent is None else f":{recurrent}"
    out = []
    for part, rows in (("ih", "input"), ("hh", "recurrent")):
        array, shape = _cell_kernel(gates, order, part, recurrent)
        out.append(Transform(f"{name}_{part}{suffix}", f"{what}: the {rows} rows, transposed", array, shape, (2,),
                             part=part, parts=("ih", "hh")))
    return out


def _tf1_lstm_bias_fn(forget_bias: float):
    def array(value: np.ndarray) -> np.ndarray:
        out = _gates(value, 4, _TF1_LSTM_ORDER)  # a new array
        u = out.shape[0] // 4
        # TF adds forget_bias in the variable's dtype at run time; so do we, once
        out[u:2 * u] = out[u:2 * u] + np.asarray(forget_bias).astype(out.dtype)
        return np.ascontiguousarray(out)
    return array


def _tf1_lstm_bias_shape(shape: Shape) -> Shape:
    _gate_shape(shape, 4)
    return shape


_ident = Transform("identity", "no change", lambda v: v, lambda s: s)

TRANSFORMS: Dict[str, Transform] = {
    t.name: t
    for t in [
        _ident,
        Transform("conv", "convolution kernel [k..., in, out] -> [out, in, k...]", _permute, _permute_shape, (3, 4, 5), _kernel_perm),
        Transform("conv1d", "conv1d kernel [w, in, out] -> [out, in, w]", _permute, _permute_shape, (3,), _kernel_perm),
        Transform("conv2d", "conv2d kernel HWIO -> OIHW", _permute, _permute_shape, (4,), _kernel_perm),
        Transform("conv3d", "conv3d kernel DHWIO -> OIDHW", _permute, _permute_shape, (5,), _kernel_perm),
        Transform("conv_transpose", "transposed-conv kernel [k..., out, in] -> [in, out, k...]", _permute, _permute_shape, (3, 4, 5), _kernel_perm),
        Transform("conv_transpose1d", "conv1d_transpose kernel [w, out, in] -> [in, out, w]", _permute, _permute_shape, (3,), _kernel_perm),
        Transform("conv_transpose2d", "conv2d_transpose kernel [h, w, out, in] -> [in, out, h, w]", _permute, _permute_shape, (4,), _kernel_perm),
        Transform("conv_transpose3d", "conv3d_transpose kernel [d, h, w, out, in] -> [in, out, d, h, w]", _permute, _permute_shape, (5,), _kernel_perm),
        Transform("dense", "dense kernel [in, out] -> Linear weight [out, in]", lambda v: np.ascontiguousarray(v.T), lambda s: s[::-1], (2,),
                  lambda rank: (1, 0)),
        Transform(
            "depthwise2d", "depthwise kernel [h, w, in, mult] -> grouped conv weight [in*mult, 1, h, w]",
            _depthwise, lambda s: (s[2] * s[3], 1, s[0], s[1]), (4,),
        ),
        Transform("scalar", "one-element tensor -> 0-d tensor", _scalar, _scalar_shape),
        Transform(
            "depthwise1d", "depthwise kernel [w, in, mult] -> grouped conv weight [in*mult, 1, w]",
            _depthwise1d, lambda s: (s[1] * s[2], 1, s[0]), (3,),
        ),
        Transform("gru_kernel", "Keras GRU (recurrent) kernel [in, 3u] z,r,h -> [3u, in] r,z,n", _gru_kernel,
                  _gru_kernel_shape, (2,)),
        Transform("gru_bias", "Keras GRU bias [3u] z,r,h -> [3u] r,z,n (reset_after=False)", _gru_bias, _gru_bias_shape, (1,)),
        Transform("gru_bias_ih", "Keras GRU bias [2, 3u]: the input row, z,r,h -> r,z,n", _gru_bias_row(0),
                  _gru_bias2_shape, part="ih", parts=("ih", "hh")),
        Transform("gru_bias_hh", "Keras GRU bias [2, 3u]: the recurrent row, z,r,h -> r,z,n", _gru_bias_row(1),
                  _gru_bias2_shape, part="hh", parts=("ih", "hh")),
        *_cell_kernel_pair("tf1_lstm_kernel", "TF1 LSTMCell kernel [in + u, 4u] i,j,f,o -> i,f,g,o", 4, _TF1_LSTM_ORDER),
        Transform("tf1_lstm_bias", "TF1 LSTMCell bias [4u] i,j,f,o -> i,f,g,o, forget_bias 1.0 added to f",
                  _tf1_lstm_bias_fn(1.0), _tf1_lstm_bias_shape, (1,)),
        *_cell_kernel_pair("tf1_gru_gates_kernel", "TF1 GRUCell gates/kernel [in + u, 2u] r,u", 2, (0, 1)),
        *_cell_kernel_pair("tf1_gru_candidate_kernel", "TF1 GRUCell candidate/kernel [in + u, u]", 1, (0,)),
    ]
}


# -- parametrised transforms: "base:argument" ----------------------------------------------------

def _parse_sizes(arg: str, what: str) -> Tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in arg.lower().split("x"))
    except ValueError:
        sizes = ()
    if not 2 <= len(sizes) <= 4 or min(sizes) < 1:
        raise MappingError(f"transform {what!r} needs a feature-map shape like 7x7x64 (HxWxC; LxC or DxHxWxC), got {arg!r}")
    return sizes


@functools.lru_cache(maxsize=None)
def dense_after_flatten(*feature_map: int) -> Transform:
    """The transform for a Dense kernel after a channels-last ``Flatten`` of a feature map of
    shape ``feature_map`` (``H, W, C``; or ``L, C``; or ``D, H, W, C``; no batch axis): its
    rows, in NHWC-flatten order, are permuted into NCHW-flatten order and the kernel is
    transposed, so ``nn.Flatten()`` of the channels-first map feeds ``nn.Linear`` directly.
    Named ``dense_after_flatten:HxWxC``."""
    sizes = tuple(int(s) for s in feature_map)
    name = "dense_after_flatten:" + "x".join(map(str, sizes))
    if not 2 <= len(sizes) <= 4 or min(sizes) < 1:
        raise MappingError(f"transform {name!r}: the feature map needs 2 to 4 positive sizes (e.g. H, W, C)")
    n = int(np.prod(sizes))
    spatial = len(sizes) - 1
    # [*spatial, C, out] -> [out, C, *spatial]
    axes = (spatial + 1, spatial) + tuple(range(spatial))

    def check(shape: Shape) -> None:
        if shape[0] != n:
            raise ValueError(f"transform {name!r} expects a kernel with {n} rows (the flattened feature map), "
                             f"got shape {list(shape)}")

    def array(value: np.ndarray) -> np.ndarray:
        check(value.shape)
        out = value.shape[1]
        return np.ascontiguousarray(value.reshape(*sizes, out).transpose(axes).reshape(out, n))

    def shape(s: Shape) -> Shape:
        check(s)
        return (s[1], s[0])

    return Transform(name, f"Dense kernel after a channels-last Flatten of {list(sizes)} -> Linear weight after a "
                     "channels-first Flatten", array, shape, (2,))


@functools.lru_cache(maxsize=None)
def tf1_lstm_bias(forget_bias: float = 1.0) -> Transform:
    """The TF1 ``LSTMCell``/``BasicLSTMCell`` bias with the cell's run-time ``forget_bias``
    (never stored in the checkpoint) folded into the forget gate. Named ``tf1_lstm_bias:F``;
    plain ``tf1_lstm_bias`` is TF's default, 1.0."""
    forget_bias = float(forget_bias)
    if forget_bias == 1.0:
        return TRANSFORMS["tf1_lstm_bias"]
    return Transform(f"tf1_lstm_bias:{forget_bias!r}",
                     f"TF1 LSTMCell bias [4u] i,j,f,o -> i,f,g,o, forget_bias {forget_bias!r} added to f",
                     _tf1_lstm_bias_fn(forget_bias), _tf1_lstm_bias_shape, (1,))


@functools.lru_cache(maxsize=None)
def tf1_lstm_kernel(part: str, recurrent: Optional[int] = None) -> Transform:
    """``tf1_lstm_kernel_ih`` / ``_hh`` for an ``LSTMCell`` whose recurrent input is
    ``recurrent`` wide (its ``num_proj``) rather than its units: ``tf1_lstm_kernel_hh:P``."""
    if part not in ("ih", "hh"):
        raise MappingError(f"tf1_lstm_kernel part must be 'ih' or 'hh', got {part!r}")
    if recurrent is None:
        return TRANSFORMS[f"tf1_lstm_kernel_{part}"]
    ih, hh = _cell_kernel_pair("tf1_lstm_kernel", "TF1 LSTMCell kernel [in + p, 4u] i,j,f,o -> i,f,g,o", 4,
                               _TF1_LSTM_ORDER, int(recurrent))
    return ih if part == "ih" else hh


def _float_arg(arg: str, what: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise MappingError(f"transform {what!r} needs a number, got {arg!r}") from None


def _int_arg(arg: str, what: str) -> int:
    try:
        value = int(arg)
    except ValueError:
        value = 0
    if value < 1:
        raise MappingError(f"transform {what!r} needs a positive integer, got {arg!r}")
    return value


#: ``base name -> f(argument string) -> Transform``, for names ``base:argument``
FACTORIES: Dict[str, Callable[[str], Transform]] = {
    "dense_after_flatten": lambda a: dense_after_flatten(*_parse_sizes(a, "dense_after_flatten")),
    "tf1_lstm_bias": lambda a: tf1_lstm_bias(_float_arg(a, "tf1_lstm_bias")),
    "tf1_lstm_kernel_ih": lambda a: tf1_lstm_kernel("ih", _int_arg(a, "tf1_lstm_kernel_ih")),
    "tf1_lstm_kernel_hh": lambda a: tf1_lstm_kernel("hh", _int_arg(a, "tf1_lstm_kernel_hh")),
}


def invert(name: str, value: np.ndarray) -> np.ndarray:
    """PyTorch layout back to TF layout, for the transforms that are pure axis permutations
    (used to build TF checkpoints from PyTorch weights, e.g. the bundled example)."""
    t = get_transform(name)
    if t.array is _permute:
        return np.ascontiguousarray(np.transpose(value, np.argsort(_kernel_perm(value.ndim))))
    if t.name == "dense":
        return np.ascontiguousarray(value.T)
    if t.name == "identity":
        return value
    raise ValueError(f"transform {name!r} has no inverse here")


def get_transform(name_or_transform) -> Transform:
    """A transform by name: one of :data:`TRANSFORMS`, or a parametrised one ``base:argument``
    built by :data:`FACTORIES` (``dense_after_flatten:7x7x64``)."""
    if isinstance(name_or_transform, Transform):
        return name_or_transform
    if name_or_transform in TRANSFORMS:
        return TRANSFORMS[name_or_transform]
    base, sep, arg = str(name_or_transform).partition(":")
    if sep and base in FACTORIES:
        return FACTORIES[base](arg.strip())
    known = ", ".join(sorted(TRANSFORMS)) + "; parametrised: " + ", ".join(f"{b}:ARG" for b in sorted(FACTORIES))
    raise MappingError(f"unknown transform {name_or_transform!r}", hint=f"known transforms: {known}")
