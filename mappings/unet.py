"""NiftyNet UNet3D -> PyTorch (tf2pt's UNet3D).

Source: NiftyNet 0.6.0's ``niftynet/network/unet.py`` (``UNet3D``, ``UNetBlock``; Cicek et al.,
"3D U-Net", MICCAI 2016). Variable scope ``UNet/``.

From its ``layer_op``: blocks of ``ConvolutionalLayer`` s (conv without bias -> BN -> activation,
PReLU by default, one alpha per channel), each named by its channels (``32_bn_prelu``; a repeated
name gets ``_1``): ``L1``..``L3`` two 3x3x3 convolutions then a 2x2x2 max-pool, keeping the pre-pool
output; ``L4`` two convolutions then a 2x2x2 stride-2 transposed convolution with BN and no
activation (``up_2x2_bn``); ``R3``, ``R2`` the same on ``concat([skip, upsampled])`` (the skip
first); ``R1_FC`` two 3x3x3 convolutions and a **1x1x1 convolution to the classes, also followed by
BN and PReLU** (the output is activated), then a crop of 44 voxels on every side.

* Every convolution is ``SAME`` (stride 1: symmetric), the pooling and the transposed
  convolutions are 2x2x2 stride 2 on even sizes (no padding, nothing cropped): plain torch layers
  are exact. The output is the input minus 88 along each axis.
* Sizes: multiples of 8, at least 89 (NiftyNet asserts both): 96 is the smallest, giving 8.
* ``n_features`` (NiftyNet: 32, 64, 128, 256, 512), the channels in and out and the activation
  are read off the checkpoint's names and kernels; the model names its layers as NiftyNet does,
  so the state dict's keys follow the checkpoint's (``blocks.L1.layers.32_bn_prelu.conv.weight``).

Cost: with NiftyNet's channels a 96x96x104 forward takes about 90 s on 2 CPU cores and training
needs over 20 GB; the tests use a narrower ``n_features``.

No MONAI target: MONAI's ``BasicUNet``/``UNet`` differ in structure (no 88-voxel valid crop, BN
and activation ordering, residual units, PReLU with one alpha per layer), so these weights do not
fit them.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from tf2pt.mapping import TRAINING_ONLY, Fill, Mapping, Rename, Source, Target, VerifySpec

SCOPE = "UNet/"
BN_EPS = 1e-5
FEATURES = (32, 64, 128, 256, 512)
#: (block, kind, output channel levels of its convolutions (None: classes), kernels, skip block)
BLOCKS = (
    ("L1", "down", (0, 1), (3, 3), None),
    ("L2", "down", (1, 2), (3, 3), None),
    ("L3", "down", (2, 3), (3, 3), None),
    ("L4", "up", (3, 4), (3, 3), None),
    ("R3", "up", (3, 3), (3, 3), "L3"),
    ("R2", "up", (2, 2), (3, 3), "L2"),
    ("R1_FC", "none", (1, 1, None), (3, 3, 1), "L1"),
)
BORDER = 44
BN_PARAMS = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]
_BLOCK = "(" + "|".join(b[0] for b in BLOCKS) + ")"
_LAYER = r"(\d+_bn_(?:relu|prelu)(?:_\d+)?)"


def build_tf2pt(in_channels: int = 1, num_classes: int = 2, activation: str = "prelu", features=FEATURES,
                eps: float = BN_EPS):
    """tf2pt's UNet3D (``tf2pt.models.unet3d``), built from this mapping's block table."""
    from tf2pt.models.unet3d import UNet3D, UNetLayout

    return UNet3D(UNetLayout(tuple(features), BLOCKS, BORDER), in_channels, num_classes, activation, eps)


def _rules() -> List[Rename]:
    s = re.escape(SCOPE)
    base = f"{s}{_BLOCK}/{_LAYER}"
    rows = [Rename(f"{base}/conv_/w", r"blocks.\1.layers.\2.conv.weight", "conv3d")]
    rows += [Rename(f"{base}/bn_/{tf}", rf"blocks.\1.layers.\2.bn.{pt}") for tf, pt in BN_PARAMS]
    rows.append(Rename(f"{base}/(?:relu|prelu)_acti_/alpha", r"blocks.\1.layers.\2.act.weight"))
    rows.append(Rename(f"{s}{_BLOCK}/up_2x2_bn/deconv_/w", r"blocks.\1.up.conv.weight", "conv_transpose3d"))
    rows += [Rename(f"{s}{_BLOCK}/up_2x2_bn/bn_/{tf}", rf"blocks.\1.up.bn.{pt}") for tf, pt in BN_PARAMS]
    return rows


FILL = [Fill(r".*num_batches_tracked", 1, "BatchNorm counter with no TF counterpart (unused in eval mode)")]


def _read_table(shapes: Dict[str, Any]) -> Dict[str, Any]:
    """Channels in/out, n_features and activation from ``{TF name: shape}``."""
    kwargs: Dict[str, Any] = {}
    convs: Dict[str, List[tuple]] = {}
    for name, shape in shapes.items():
        m = re.fullmatch(f"{re.escape(SCOPE)}{_BLOCK}/{_LAYER}/conv_/w", name)
        if m and len(shape) == 5:
            convs.setdefault(m.group(1), []).append((m.group(2), [int(n) for n in shape]))
            kwargs["activation"] = "prelu" if "_bn_prelu" in m.group(2) else "relu"
    levels: Dict[int, int] = {}
    for block, _, conv_levels, kernels, _ in BLOCKS:
        found = convs.get(block, [])
        outs = sorted({shape[4] for _, shape in found})
        if block in ("L1", "L2", "L3", "L4") and len(outs) == 2:
            levels.setdefault(conv_levels[0], outs[0])
            levels.setdefault(conv_levels[1], outs[1])
        if block == "L1":
            first = [shape for _, shape in found if len(outs) == 2 and shape[4] == outs[0]]
            if first:
                kwargs["in_channels"] = first[0][3]
        if block == "R1_FC":
            last = [shape for _, shape in found if shape[0] == 1]
            if last:
                kwargs["num_classes"] = last[0][4]
    if sorted(levels) == list(range(len(FEATURES))):
        kwargs["features"] = [levels[i] for i in range(len(FEATURES))]
    return kwargs


def model_kwargs(checkpoint) -> Dict[str, Any]:
    return _read_table({name: info.shape for name, info in checkpoint.variables.items()})


LAYERS = [b[0] for b in BLOCKS]
MODULES = {name: (f"blocks.{name}.branch" if kind == "down" else f"blocks.{name}.out") for name, kind, *_ in BLOCKS}


def _names(channels, activation):
    """NiftyNet's layer names in a block (as ``tf2pt.models.unet3d.layer_names``; this module
    must not import torch)."""
    seen: Dict[str, int] = {}
    out = []
    for c in channels:
        b = f"{c}_bn_{activation}"
        k = seen.get(b, 0)
        seen[b] = k + 1
        out.append(b if k == 0 else f"{b}_{k}")
    return out


def tf_reference(variables, x):
    """UNet3D in TF from ``tf.nn`` ops (``x`` NDHWC). Per layer: down blocks' pre-pool outputs,
    the other blocks' outputs (R1_FC before the crop)."""
    import tensorflow as tf

    table = _read_table({k: variables[k].shape for k in variables.keys() if k.startswith(SCOPE)})
    f, act, classes = table["features"], table["activation"], table["num_classes"]
    get = lambda name: tf.constant(variables[SCOPE + name])

    def bn(h, s):
        return tf.nn.batch_normalization(h, get(f"{s}/moving_mean"), get(f"{s}/moving_variance"),
                                         get(f"{s}/beta"), get(f"{s}/gamma"), BN_EPS)

    def conv_layer(h, s):
        h = bn(tf.nn.convolution(h, get(f"{s}/conv_/w"), padding="SAME"), f"{s}/bn_")
        return tf.nn.relu(h) if act == "relu" else tf.nn.relu(h) + get(f"{s}/prelu_acti_/alpha") * tf.minimum(h, 0.0)

    out, branches = {}, {}
    h = tf.constant(x)
    for name, kind, levels, _, skip in BLOCKS:
        if skip:
            h = tf.concat([branches[skip], h], -1)
        channels = [classes if c is None else f[c] for c in levels]
        for layer in _names(channels, act):
            h = conv_layer(h, f"{name}/{layer}")
        branches[name] = h
        if kind == "down":
            out[name] = h
            h = tf.nn.max_pool3d(h, 2, 2, "SAME")
        elif kind == "up":
            w = get(f"{name}/up_2x2_bn/deconv_/w")
            shape = [int(h.shape[0])] + [2 * int(n) for n in h.shape[1:4]] + [int(w.shape[3])]
            h = out[name] = bn(tf.nn.conv3d_transpose(h, w, shape, [1, 2, 2, 2, 1], "SAME"), f"{name}/up_2x2_bn/bn_")
        else:
            out[name] = h
    b = BORDER
    h = h[:, b:-b, b:-b, b:-b, :]
    return h.numpy(), {k: v.numpy() for k, v in out.items()}


VERIFY = VerifySpec(
    tf_input="images:0",
    tf_output="logits:0",
    output_kind="logits",
    spatial_multiple=8,
    preprocess=("whiten",),
    tf_reference=tf_reference,
    layers=LAYERS,
    notes="The output is the input cropped by 44 voxels on every side, so volumes must be at least "
          "96 voxels along each axis. The graph is the one tf2pt.testing.niftynet_zoo exports from "
          "NiftyNet's own UNet3D (images:0 -> logits:0, fixed input size); its outputs are activated "
          "(BN and PReLU after the last 1x1x1 convolution).",
)

MAPPING = Mapping(
    name="unet",
    description="NiftyNet UNet3D (SAME convolutions, 44-voxel crop, activated output) -> PyTorch UNet3D",
    source=Source(
        origin="NiftyNet 0.6.0 niftynet/network/unet.py (UNet3D)",
        framework="TensorFlow 1 (NiftyNet)",
        scope=SCOPE,
        # 15 convolutions x (kernel + 4 BN + alpha) + 3 transposed convolutions x (kernel + 4 BN)
        variables=15 * 6 + 3 * 5,
        license="NiftyNet: Apache-2.0; weights as published by their authors",
        meta={"in_channels": 1, "spatial_multiple": 8, "min_size": 96, "border": BORDER, "n_features": FEATURES},
    ),
    targets=[
        Target("tf2pt", "tf2pt's UNet3D (NiftyNet's layer names, 44-voxel crop, activated output)",
               build_tf2pt, _rules(), FILL, layers=MODULES,
               notes="No MONAI target: MONAI's U-Nets have another structure and no valid-size crop."),
    ],
    ignore=[TRAINING_ONLY],
    model_kwargs=model_kwargs,
    verify=VERIFY,
)
