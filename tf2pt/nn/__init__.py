"""PyTorch layers that compute exactly what TensorFlow's and Keras' ops compute, for target models
to build on. Each submodule holds one family; every name is importable from ``tf2pt.nn``.

* :mod:`.same` -- TF ``padding="SAME"`` convolutions, transposed convolutions and pooling, whose
  padding can be asymmetric where torch's ``padding=`` is symmetric.
* :mod:`.resize` -- TF1's legacy bilinear/trilinear resize (``align_corners=False``,
  ``half_pixel_centers=False``), as NiftyNet's ``LinearResizeLayer`` uses it.
* :mod:`.pool` -- TF ``SAME`` average pooling, padding left out of the mean.
* :mod:`.activation` -- NiftyNet's per-channel PReLU.
"""

from .same import (ConvTranspose1dSame, ConvTranspose2dSame, ConvTranspose3dSame, Conv1dSame, Conv2dSame, Conv3dSame,
                   MaxPoolSame, same_padding)

from .activation import ChannelPReLU
from .pool import AvgPoolSame
from .resize import ResizeLinearLegacy, resize_linear_legacy

__all__ = ["resize_linear_legacy", "ResizeLinearLegacy", "AvgPoolSame", "ChannelPReLU", "same_padding", "Conv1dSame", "Conv2dSame", "Conv3dSame", "ConvTranspose1dSame", "ConvTranspose2dSame",
           "ConvTranspose3dSame", "MaxPoolSame"]
