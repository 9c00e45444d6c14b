"""PyTorch layers that compute exactly what TensorFlow's and Keras' ops compute, for target models
to build on. Each submodule holds one family; every name is importable from ``tf2pt.nn``.

* :mod:`.same` -- TF ``padding="SAME"`` convolutions, transposed convolutions and pooling, whose
  padding can be asymmetric where torch's ``padding=`` is symmetric.
"""

from .same import (ConvTranspose1dSame, ConvTranspose2dSame, ConvTranspose3dSame, Conv1dSame, Conv2dSame, Conv3dSame,
                   MaxPoolSame, same_padding)

__all__ = ["same_padding", "Conv1dSame", "Conv2dSame", "Conv3dSame", "ConvTranspose1dSame", "ConvTranspose2dSame",
           "ConvTranspose3dSame", "MaxPoolSame"]
