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
=====================  ===================================  =================================

Transposed convolutions need the same axis permutation as convolutions: TF keeps the kernel of
``conv3d_transpose`` as ``[k..., out, in]`` and torch's ``ConvTranspose3d`` as ``[in, out, k...]``;
no spatial flip is needed because both frameworks define the transposed convolution as the
gradient of the same correlation. ``tests/test_transforms.py`` checks every transform numerically
against the TF op.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    ]
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
    if isinstance(name_or_transform, Transform):
        return name_or_transform
    try:
        return TRANSFORMS[name_or_transform]
    except KeyError:
        known = ", ".join(sorted(TRANSFORMS))
        raise MappingError(f"unknown transform {name_or_transform!r}", hint=f"known transforms: {known}") from None
