"""NiftyNet HighRes3DNetLarge -> PyTorch (tf2pt's HighRes3DNet family model).

Source: NiftyNet 0.6.0's ``niftynet/network/highres3dnet_large.py`` (``HighRes3DNetLarge``).
Its default variable scope is ``HighRes3DNet/``, the same as HighRes3DNet's, so a checkpoint
does not say which of the two it is: choose this mapping with ``--mapping highres3dnet_large``
(the ``highresnet`` mapping refuses it: ``conv_3`` matches none of its rules). From its
``self.layers`` and ``layer_op``:

* ``conv_0``: 3x3x3 conv (16) -> BN -> activation.
* ``res_1``..``res_3``: as HighRes3DNet (16/32/64 channels, dilations 1/2/4, 3 blocks each).
* ``conv_1``: **3x3x3** conv (64) -> BN -> activation.
* ``conv_2``: 1x1x1 conv (64) -> BN -> activation -> dropout (``keep_prob``; the application
  passes 1.0 at inference, so it is the identity there and the model has no dropout module).
* ``conv_3``: 1x1x1 conv (classes) -> BN, no activation: logits.

No MONAI target: MONAI's ``HighResNet`` takes exactly two convolutions after the stages
(``layer_params[-2:]``), this network has three (a 3x3x3 and two 1x1x1).
"""

from __future__ import annotations

from tf2pt.mappings._highres3dnet_family import Head, Table, highres3dnet_mapping

TABLE = Table(
    scope="HighRes3DNet/", stem=16, stem_kernel=3, stem_stride=1,
    stages=(("res_1", 16, 1), ("res_2", 32, 2), ("res_3", 64, 4)), blocks_per_stage=3,
    head=(Head("conv_1", "conv", 64, 3), Head("conv_2", "conv", 64, 1), Head("conv_3", "conv", None, 1, activation=False)),
)

MAPPING = highres3dnet_mapping(
    "highres3dnet_large", TABLE,
    description="NiftyNet HighRes3DNetLarge (3x3x3 + two 1x1x1 head convolutions) -> PyTorch",
    origin="NiftyNet 0.6.0 niftynet/network/highres3dnet_large.py (HighRes3DNetLarge)",
    default_classes=2,
    why_no_monai="MONAI's HighResNet takes exactly two convolutions after the stages; this network has three",
)
