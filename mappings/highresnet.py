"""NiftyNet HighRes3DNet -> PyTorch (tf2pt's own model, or MONAI's ``HighResNet``).

Source: NiftyNet's ``niftynet/network/highres3dnet.py`` (Li et al., IPMI 2017), as trained for
the model zoo's 160-class brain parcellation (``highres3dnet_brain_parcellation``).

Architecture, from NiftyNet's source (``HighRes3DNet``, ``HighResBlock``, ``ConvolutionalLayer``,
``BNLayer``, ``ElementwiseLayer``, ``DilatedTensor``):

* ``conv_0``: 3x3x3 conv (16 channels) -> BN -> activation.
* ``res_1``, ``res_2``, ``res_3``: three residual blocks each, 16, 32 and 64 channels, dilations
  1, 2 and 4. A block is pre-activation: (BN -> activation -> 3x3x3 conv) twice, plus the
  identity. When channels grow (16 -> 32, 32 -> 64) the identity is zero-padded along channels:
  ``(out - in) // 2`` channels before, the rest after.
* ``conv_1``: 1x1x1 conv (80) -> BN -> activation.
* ``conv_2``: 1x1x1 conv (classes) -> BN; no activation: the network outputs logits.
* Convolutions have no bias, use ``SAME`` zero padding; BN uses ``eps = 1e-5``.

Dilation: NiftyNet dilates by ``space_to_batch_nd`` (block ``d``, no padding), runs ordinary 3x3x3
``SAME`` convolutions on the ``d**3`` interleaved sub-volumes, and ``batch_to_space_nd`` back.
A ``SAME`` convolution of a sub-volume zero-pads it by one sub-voxel, i.e. by ``d`` voxels of the
full volume, so the result equals a dilated convolution with zero padding ``d`` -- exactly, but
only when every spatial size is divisible by ``d``. BN (with moving statistics), the activation
and the residual sum act voxel-wise and commute with the interleaving. NiftyNet asserts sizes
divisible by 8 (and ``DilatedTensor`` by the dilation); tf2pt's model computes the dilated form,
which accepts any size, but only multiples of 8 reproduce NiftyNet, so ``verify`` pads or crops
volumes to multiples of 8.
"""

from __future__ import annotations

from tf2pt.mappings._highres3dnet_family import BN_EPS, Head, Table, highres3dnet_mapping

#: NiftyNet's ``HighRes3DNet.layers``: the table the model, the rename rules, the spec, the TF
#: reference forward and the per-layer names are all generated from (see _highres3dnet_family).
STAGES = (("res_1", 16, 1), ("res_2", 32, 2), ("res_3", 64, 4))  # (name, output channels, dilation)
BLOCKS_PER_STAGE = 3  # NiftyNet's 'repeat'
FEATURES = 80  # conv_1's output channels (a 1x1x1 convolution before the classifier)
TABLE = Table(
    scope="HighRes3DNet/", stem=16, stem_kernel=3, stem_stride=1, stages=STAGES, blocks_per_stage=BLOCKS_PER_STAGE,
    head=(Head("conv_1", "conv", FEATURES, 1), Head("dropout", "dropout"), Head("conv_2", "conv", None, 1, activation=False)),
)

MAPPING = highres3dnet_mapping(
    "highresnet", TABLE,
    description="NiftyNet HighRes3DNet (brain parcellation) -> PyTorch HighRes3DNet or MONAI HighResNet",
    origin="NiftyNet model zoo: highres3dnet_brain_parcellation (HighRes3DNet, 160-class brain parcellation)",
    license="NiftyNet: Apache-2.0; zoo weights as published by their authors",
    default_classes=160,
    monai=True,
    tf2pt_description="tf2pt's HighRes3DNet; state dict as the published PyTorch weights (fepegar/highresnet)",
    verify_overrides=dict(
        # the graph tf2pt's NiftyNet writer exports (tf2pt.testing.niftynet); override with
        # --tf-input/--tf-output for graphs exported by NiftyNet itself
        cpu_crop=(96, 96, 96),
        label_table="GIFNiftyNet.ctbl",
        notes="Input is z-scored over the foreground (NiftyNet's whitening); the zoo model also used "
              "histogram standardisation, whose landmarks are not part of the checkpoint. Both frameworks "
              "get the same preprocessed voxels, so parity does not depend on it.",
    ),
)

tf_reference = MAPPING.verify.tf_reference
build_tf2pt = MAPPING.target("tf2pt").build
spec_tf2pt = MAPPING.target("tf2pt").spec
build_monai = MAPPING.target("monai").build
