"""TF1's legacy linear resize: ``tf.compat.v1.image.resize_bilinear`` with its defaults
(``align_corners=False``, ``half_pixel_centers=False``), and the trilinear form NiftyNet's
``LinearResizeLayer`` builds from it (DenseVNet).

Along each axis, output index ``o`` reads source position ``s = o * (in / out)`` (no half-pixel
centres: the grids are aligned at index 0, not at the centres), ``lo = floor(s)``,
``hi = min(lo + 1, in - 1)`` and returns ``x[lo] + (x[hi] - x[lo]) * (s - lo)``, in float32 as TF
computes it. torch's ``interpolate(mode="linear", align_corners=False)`` uses half-pixel centres
(``s = (o + 0.5) * in / out - 0.5``) and differs by whole voxel fractions.

The 2D op interpolates along the width, then the height; NiftyNet's 3D form resizes (H, W) and
then D, so an N-d resize here interpolates the last spatial axis first and the first last.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def _legacy_axis(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale  # float32 products, as TF's
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float32)
    shape = [1] * x.ndim
    shape[dim] = out_size
    lo_t = torch.as_tensor(lo, device=x.device)
    hi_t = torch.as_tensor(hi, device=x.device)
    w = torch.as_tensor(frac, device=x.device, dtype=x.dtype).view(shape)
    a = x.index_select(dim, lo_t)
    b = x.index_select(dim, hi_t)
    return a + (b - a) * w


def resize_linear_legacy(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """TF1 legacy (bi/tri)linear resize of ``x`` (N, C, *spatial) to ``size`` (one entry per
    spatial axis), as ``tf.compat.v1.image.resize_bilinear`` and NiftyNet's
    ``LinearResizeLayer`` compute it."""
    size = list(size)
    nd = len(size)
    if x.ndim != nd + 2:
        raise ValueError(f"expected a tensor with {nd} spatial axes (N, C, ...), got shape {list(x.shape)}")
    for i in reversed(range(nd)):  # last spatial axis first, as TF's bilinear (width, then height)
        x = _legacy_axis(x, 2 + i, int(size[i]))
    return x


class ResizeLinearLegacy(nn.Module):
    """:func:`resize_linear_legacy` to a fixed ``size`` (NiftyNet's ``LinearResizeLayer(new_size)``),
    or to the spatial size of a second ``like`` tensor given to ``forward``."""

    def __init__(self, size: Sequence[int] | None = None):
        super().__init__()
        self.size = None if size is None else tuple(int(n) for n in size)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        size = like.shape[2:] if like is not None else self.size
        if size is None:
            raise ValueError("ResizeLinearLegacy needs a size, or a tensor to take it from")
        return resize_linear_legacy(x, size)

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners=False, half_pixel_centers=False (TF1 legacy)"
