"""NiftyNet's PReLU: one learned slope per channel, ``relu(x) + alpha * (x - |x|) / 2``
(``niftynet/layer/activation.py``). For finite inputs that is ``max(0, x) + alpha * min(0, x)``
exactly (``x - |x|`` is ``2x`` or ``0``, and halving is exact), i.e. ``nn.PReLU`` with
``num_parameters=channels``; the weight is NiftyNet's ``acti_/alpha`` (shape ``[channels]``)."""

from __future__ import annotations

from torch import nn


class ChannelPReLU(nn.PReLU):
    """``nn.PReLU(num_parameters=channels)``: NiftyNet's per-channel PReLU (key ``weight``)."""

    def __init__(self, channels: int, init: float = 0.25):
        super().__init__(num_parameters=channels, init=init)
