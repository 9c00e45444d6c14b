"""Keras' separable convolutions as two visible torch convolutions.

``SeparableConv{1,2}D`` is a depthwise convolution (``groups=in``, ``depth_multiplier``
filters per input channel, no bias; the layer's ``strides``, ``dilation_rate`` and ``padding``
apply here) followed by a 1x1 pointwise convolution that carries the layer's bias.
:class:`SeparableConv1d` / :class:`SeparableConv2d` hold them as ``depthwise`` and
``pointwise``, the names :func:`tf2pt.keras_rules.keras_layer_rules` fills.
"""

from __future__ import annotations

from torch import nn

from .same import Conv1dSame, Conv2dSame


class _Separable(nn.Module):
    _plain = nn.Conv2d
    _same = Conv2dSame

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding: str = "valid",
                 dilation=1, depth_multiplier: int = 1, bias: bool = True):
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same' (as in Keras), got {padding!r}")
        conv = self._same if padding == "same" else self._plain
        self.depthwise = conv(in_channels, in_channels * depth_multiplier, kernel_size, stride=stride, dilation=dilation,
                              groups=in_channels, bias=False)
        self.pointwise = self._plain(in_channels * depth_multiplier, out_channels, 1, bias=bias)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class SeparableConv1d(_Separable):
    """Keras ``SeparableConv1D`` (channels first): ``depthwise`` then ``pointwise``."""

    _plain = nn.Conv1d
    _same = Conv1dSame


class SeparableConv2d(_Separable):
    """Keras ``SeparableConv2D`` (channels first): ``depthwise`` then ``pointwise``."""
