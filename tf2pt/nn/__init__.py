"""PyTorch layers that compute exactly what TensorFlow's and Keras' ops compute, for target models
to build on. Each submodule holds one family; every name is importable from ``tf2pt.nn``.

* :mod:`.same` -- TF ``padding="SAME"`` convolutions, transposed convolutions and pooling, whose
  padding can be asymmetric where torch's ``padding=`` is symmetric.
* :mod:`.recurrent` -- Keras/TF1 recurrent layers torch's cannot express: a reset-before GRU
  (Keras ``reset_after=False``, TF1 ``GRUCell``), any activation (Keras 2's ``hard_sigmoid``).
* :mod:`.separable` -- Keras' separable convolutions as a visible depthwise and pointwise pair.
* :mod:`.resize` -- TF1's legacy bilinear/trilinear resize (``align_corners=False``,
  ``half_pixel_centers=False``), as NiftyNet's ``LinearResizeLayer`` uses it.
* :mod:`.pool` -- TF ``SAME`` average pooling, padding left out of the mean.
* :mod:`.activation` -- NiftyNet's per-channel PReLU.
"""

from .activation import ChannelPReLU
from .pool import AvgPoolSame
from .recurrent import (ACTIVATIONS, GRU, LSTM, KerasHardSigmoid, SimpleRNN, TF1GRU, activation,
                        keras2_hard_sigmoid)
from .resize import ResizeLinearLegacy, resize_linear_legacy
from .same import (ConvTranspose1dSame, ConvTranspose2dSame, ConvTranspose3dSame, Conv1dSame, Conv2dSame, Conv3dSame,
                   MaxPoolSame, same_padding)
from .separable import SeparableConv1d, SeparableConv2d

__all__ = ["same_padding", "Conv1dSame", "Conv2dSame", "Conv3dSame", "ConvTranspose1dSame", "ConvTranspose2dSame",
           "ConvTranspose3dSame", "MaxPoolSame", "SeparableConv1d", "SeparableConv2d", "LSTM", "GRU", "SimpleRNN",
           "TF1GRU", "KerasHardSigmoid", "keras2_hard_sigmoid", "activation", "ACTIVATIONS", "resize_linear_legacy",
           "ResizeLinearLegacy", "AvgPoolSame", "ChannelPReLU"]
