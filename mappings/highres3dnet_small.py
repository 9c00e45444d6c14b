"""NiftyNet HighRes3DNetSmall -> PyTorch (tf2pt's HighRes3DNet family model).

Source: NiftyNet 0.6.0's ``niftynet/network/highres3dnet_small.py`` (``HighRes3DNetSmall``,
variable scope ``HighRes3DNetSmall/``): HighRes3DNet with a stride-2 stem and a learned
upsampling before the classifier. From its ``self.layers`` and ``layer_op``:

* ``conv_0``: 3x3x3 conv, **stride 2** (16) -> BN -> activation. TF ``SAME`` with stride 2 pads
  one-sidedly (0 before, 1 after on even sizes): ``tf2pt.nn.Conv3dSame``.
* ``res_1``..``res_3``: as HighRes3DNet (16/32/64 channels, dilations 1/2/4, 3 blocks each), on
  the half-resolution volume.
* ``conv_1``: **3x3x3** conv (80) -> BN -> activation.
* ``deconv``: 3x3x3 transposed conv, stride 2 (80 -> 80, output twice the input) -> BN ->
  activation (``DeconvolutionalLayer``; its kernel is ``deconv_bn_relu/deconv_/w``, laid out
  ``[k, k, k, out, in]``): ``tf2pt.nn.ConvTranspose3dSame``, which crops the full transposed
  output to TF's ``[0:2n]``.
* ``conv_2``: 1x1x1 conv (classes) -> BN, no activation: logits.

Sizes: NiftyNet asserts multiples of 8; the stem halves them and ``res_3`` dilates by 4, so 8.

No MONAI target: MONAI's ``HighResNet`` has a stride-1 stem and exactly two 1x1x1 convolutions
after the stages; it has no strided stem and no transposed convolution, so these weights have no
place in it.
"""

from __future__ import annotations

from tf2pt.mappings._highres3dnet_family import Head, Table, highres3dnet_mapping

TABLE = Table(
    scope="HighRes3DNetSmall/", stem=16, stem_kernel=3, stem_stride=2,
    stages=(("res_1", 16, 1), ("res_2", 32, 2), ("res_3", 64, 4)), blocks_per_stage=3,
    head=(Head("conv_1", "conv", 80, 3), Head("deconv", "deconv", 80, 3, 2), Head("conv_2", "conv", None, 1, activation=False)),
)

MAPPING = highres3dnet_mapping(
    "highres3dnet_small", TABLE,
    description="NiftyNet HighRes3DNetSmall (stride-2 stem, transposed-conv upsampling) -> PyTorch",
    origin="NiftyNet 0.6.0 niftynet/network/highres3dnet_small.py (HighRes3DNetSmall)",
    default_classes=2,
    why_no_monai="MONAI's HighResNet has no stride-2 stem and no transposed convolution",
)
