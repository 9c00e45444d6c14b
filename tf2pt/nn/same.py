"""PyTorch layers that compute what TensorFlow's ops compute, for target models to build on.

TF's ``padding="SAME"`` pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``
elements along each spatial axis, ``total // 2`` before and the rest after. When ``total`` is odd
(e.g. a stride-2, 3-wide kernel on an even size) the padding is asymmetric, which torch's
symmetric ``padding=`` cannot express. These layers pad explicitly instead, and keep torch's
parameter names (``weight``, ``bias``) so state-dict keys stay the usual ones.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
    """``(before, after)`` padding of TF ``SAME`` along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pad_arg(sizes: Sequence[int], kernel, stride, dilation) -> List[int]:
    """Arguments for ``F.pad``: last axis first, ``(before, after)`` each."""
    pads: List[int] = []
    for i in reversed(range(len(sizes))):
        pads.extend(same_padding(sizes[i], kernel[i], stride[i], dilation[i]))
    return pads


class _SameConv:
    """Mixin for ``nn.ConvNd``: TF ``SAME`` padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        pads = _pad_arg(x.shape[-nd:], self.kernel_size, self.stride, self.dilation)
        if any(pads):
            x = F.pad(x, pads)
        return self._conv_forward(x, self.weight, self.bias)


class Conv1dSame(_SameConv, nn.Conv1d):
    """``nn.Conv1d`` with TF ``SAME`` padding (``padding`` must stay 0)."""


class Conv2dSame(_SameConv, nn.Conv2d):
    """``nn.Conv2d`` with TF ``SAME`` padding (``padding`` must stay 0)."""


class Conv3dSame(_SameConv, nn.Conv3d):
    """``nn.Conv3d`` with TF ``SAME`` padding (``padding`` must stay 0)."""


class _SameConvTranspose:
    """Mixin for ``nn.ConvTransposeNd``: TF ``conv*_transpose(..., padding="SAME")``.

    TF's transposed convolution is the gradient of a ``SAME`` convolution from ``output_size``
    (default ``input * stride``) down to the input size. Its result is the full transposed
    correlation cropped by that convolution's ``before`` padding and cut (or zero-extended) to
    ``output_size``. The bias, when present, is added after cropping, as ``tf.nn.bias_add`` does.
    """

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        nd = len(self.kernel_size)
        in_sizes = x.shape[-nd:]
        if output_size is None:
            output_size = [n * s for n, s in zip(in_sizes, self.stride)]
        output_size = list(output_size)[-nd:]
        conv = getattr(F, f"conv_transpose{nd}d")
        y = conv(x, self.weight, None, self.stride, 0, 0, self.groups, self.dilation)
        slices = [slice(None)] * (y.ndim - nd)
        pads: List[int] = []
        for i in range(nd):
            before, _ = same_padding(output_size[i], self.kernel_size[i], self.stride[i], self.dilation[i])
            full = y.shape[y.ndim - nd + i]
            if math.ceil(output_size[i] / self.stride[i]) != in_sizes[i]:
                raise ValueError(
                    f"output size {output_size[i]} is not reachable from input size {in_sizes[i]} with stride {self.stride[i]}"
                )
            slices.append(slice(before, before + output_size[i]))
            pads = [0, max(before + output_size[i] - full, 0)] + pads
        y = y[tuple(slices)]
        if any(pads):
            y = F.pad(y, pads)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * nd))
        return y


class ConvTranspose1dSame(_SameConvTranspose, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` computing TF ``conv1d_transpose(padding="SAME")``."""


class ConvTranspose2dSame(_SameConvTranspose, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computing TF ``conv2d_transpose(padding="SAME")``."""


class ConvTranspose3dSame(_SameConvTranspose, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` computing TF ``conv3d_transpose(padding="SAME")``."""


class SamePool(nn.Module):
    """A TF ``padding="SAME"`` pooling window (1, 2 or 3 spatial axes, channels-first)."""

    repr_note = ""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def same_pads(self, x: torch.Tensor) -> List[int]:
        """``F.pad`` arguments of TF ``SAME`` for ``x``'s spatial axes."""
        nd = len(self.kernel_size)
        return _pad_arg(x.shape[-nd:], self.kernel_size, self.stride, (1,) * nd)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME{self.repr_note}"


class MaxPoolSame(SamePool):
    """TF ``max_pool(padding="SAME")``: padded positions never win (they are -inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = len(self.kernel_size)
        pads = self.same_pads(x)
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        pool = getattr(F, f"max_pool{nd}d")
        return pool(x, self.kernel_size, self.stride)

