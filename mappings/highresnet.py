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

import re
from typing import Any, Dict, List

from tf2pt.mapping import TRAINING_ONLY, Fill, Mapping, Rename, Source, Target, VerifySpec

# ---------------------------------------------------------------------------------------------
# 1. Source facts
# ---------------------------------------------------------------------------------------------

SCOPE = "HighRes3DNet/"
SOURCE = Source(
    origin="NiftyNet model zoo: highres3dnet_brain_parcellation (HighRes3DNet, 160-class brain parcellation)",
    framework="TensorFlow 1 (NiftyNet)",
    scope=SCOPE,
    variables=105,  # 21 conv kernels + 21 batch norms x 4 (ReLU model)
    license="NiftyNet: Apache-2.0; zoo weights as published by their authors",
    meta={"in_channels": 1, "num_classes": 160, "spatial_multiple": 8, "bn_eps": 1e-5},
)

#: (NiftyNet stage name, output channels, dilation) -- the table the model, the rename rules and
#: the TF reference forward are all generated from (the model takes it as its ``layout``).
STAGES = (("res_1", 16, 1), ("res_2", 32, 2), ("res_3", 64, 4))
BLOCKS_PER_STAGE = 3  # NiftyNet's 'repeat'
BN_EPS = 1e-5
FEATURES = 80  # conv_1's output channels (a 1x1x1 convolution before the classifier)

# ---------------------------------------------------------------------------------------------
# 2. Target models (torch is imported only when a model is built)
# ---------------------------------------------------------------------------------------------


def build_tf2pt(in_channels: int = 1, num_classes: int = 160, activation: str = "relu", dropout: float = 0.5,
                eps: float = BN_EPS):
    """tf2pt's HighRes3DNet (``tf2pt.models.highres3dnet``), built from this mapping's table."""
    from tf2pt.models.highres3dnet import HighRes3DNet, Layout

    layout = Layout(stem=STAGES[0][1], stages=STAGES, blocks_per_stage=BLOCKS_PER_STAGE, features=FEATURES)
    return HighRes3DNet(layout, in_channels, num_classes, activation, dropout, eps)


#: tf2pt target keys: (conv, bn, activation) modules of conv_0, conv_1 and conv_2, and of the
#: parts of a residual block's layer (shared by the rename rules and the spec below)
TF2PT_LAYERS = {
    "conv_0": ("block.0.convolutional_block.1", "block.0.convolutional_block.2", "block.0.convolutional_block.3"),
    "conv_1": ("block.4.convolutional_block.0", "block.4.convolutional_block.1", "block.4.convolutional_block.2"),
    "conv_2": ("block.6.convolutional_block.0", "block.6.convolutional_block.1", None),
}
_TF2PT_PART = {"bn": 0, "act": 1, "conv": 3}


def _tf2pt_res_key(stage: int, block: int, layer: int, part: str) -> str:
    return f"block.{stage}.dilation_block.{block}.residual_block.{layer}.convolutional_block.{_TF2PT_PART[part]}"


def spec_tf2pt(in_channels: int = 1, num_classes: int = 160, activation: str = "relu", dropout: float = 0.5,
               eps: float = BN_EPS):
    """``build_tf2pt(...).state_dict()`` as ``{key: (shape, dtype)}``, without torch, so that
    converting to safetensors need not import it (tests/test_highresnet.py checks that the two
    agree for both activations and several channel counts; every .pth conversion checks again)."""
    out = {}

    def conv(key, cin, cout, k):
        out[f"{key}.weight"] = ((cout, cin, k, k, k), "float32")

    def bn(key, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{key}.{p}"] = ((c,), "float32")
        out[f"{key}.num_batches_tracked"] = ((), "int64")

    def act(key, c):
        if key is not None and activation == "prelu":
            out[f"{key}.weight"] = ((c,), "float32")

    def conv_layer(name, cin, cout, k):
        conv_key, bn_key, act_key = TF2PT_LAYERS[name]
        conv(conv_key, cin, cout, k)
        bn(bn_key, cout)
        act(act_key, cout)

    cin = STAGES[0][1]
    conv_layer("conv_0", in_channels, cin, 3)
    for s, (_, cout, _) in enumerate(STAGES, start=1):
        for j in range(BLOCKS_PER_STAGE):
            for i, c in enumerate((cin, cout)):  # pre-activation: BN and activation on the input
                bn(_tf2pt_res_key(s, j, i, "bn"), c)
                act(_tf2pt_res_key(s, j, i, "act"), c)
                conv(_tf2pt_res_key(s, j, i, "conv"), c, cout, 3)
            cin = cout
    conv_layer("conv_1", cin, FEATURES, 1)
    conv_layer("conv_2", FEATURES, num_classes, 1)
    return out


def build_monai(in_channels: int = 1, num_classes: int = 160, activation: str = "relu", dropout: float = 0.0,
                eps: float = BN_EPS):
    """MONAI's ``HighResNet`` configured as NiftyNet's, with one change: MONAI applies its
    activation after the last block (``blocks.11.adn.A``); NiftyNet's ``conv_2_bn`` has none and
    outputs logits, so that activation is replaced by ``nn.Identity``."""
    from monai.networks.nets import HighResNet
    from torch import nn

    if activation != "relu":
        from tf2pt.errors import MappingError

        raise MappingError(
            f"target 'monai' supports ReLU checkpoints only, this one uses {activation}",
            hint="MONAI's PReLU has one alpha per layer, NiftyNet's one per channel; use the default target 'tf2pt'",
        )
    model = HighResNet(
        spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
        norm_type=("batch", {"affine": True, "eps": eps}), acti_type=("relu", {"inplace": False}),
        dropout_prob=dropout, bias=False, channel_matching="pad",
    )
    model.blocks[-1].adn.A = nn.Identity()
    return model


# ---------------------------------------------------------------------------------------------
# 3. Ignore rules: all training-only variables (Adam slots and beta powers,
#    ExponentialMovingAverage shadows, zero-debias 'biased'/'local_step', global_step).
# ---------------------------------------------------------------------------------------------

IGNORE = [TRAINING_ONLY]

# ---------------------------------------------------------------------------------------------
# 4. Rename rules, generated from one table per target.
# ---------------------------------------------------------------------------------------------

BN_PARAMS = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]
ACT = r"(?:relu|prelu)"


def _conv_layer_rows(tf_layer: str, conv_key: str, bn_key: str, act_key: str | None) -> List[Rename]:
    """A NiftyNet ConvolutionalLayer: ``<layer>/conv_/w``, ``<layer>/bn_/*``, ``<layer>/acti_/alpha``."""
    rows = [Rename(f"{SCOPE}{tf_layer}/conv_/w", f"{conv_key}.weight", "conv3d")]
    rows += [Rename(f"{SCOPE}{tf_layer}/bn_/{tf}", f"{bn_key}.{pt}") for tf, pt in BN_PARAMS]
    if act_key is not None:
        rows.append(Rename(f"{SCOPE}{tf_layer}/acti_/alpha", f"{act_key}.weight"))
    return rows


def _res_rows(key_for) -> List[Rename]:
    """HighResBlock variables ``res_S_J/{bn_I,acti_I,conv_I}``; ``key_for(stage, block, i, part)``."""
    rows = []
    for s, _ in enumerate(STAGES, start=1):
        for j in range(BLOCKS_PER_STAGE):
            for i in range(2):
                base = f"{SCOPE}res_{s}_{j}"
                rows.append(Rename(f"{base}/conv_{i}/w", key_for(s, j, i, "conv") + ".weight", "conv3d"))
                rows += [Rename(f"{base}/bn_{i}/{tf}", key_for(s, j, i, "bn") + f".{pt}") for tf, pt in BN_PARAMS]
                rows.append(Rename(f"{base}/acti_{i}/alpha", key_for(s, j, i, "act") + ".weight"))
    return rows


def _tf2pt_rules() -> List[Rename]:
    rows = _conv_layer_rows(f"conv_0_bn_{ACT}", *TF2PT_LAYERS["conv_0"])
    rows += _res_rows(_tf2pt_res_key)
    rows += _conv_layer_rows(f"conv_1_bn_{ACT}", *TF2PT_LAYERS["conv_1"])
    rows += _conv_layer_rows("conv_2_bn", *TF2PT_LAYERS["conv_2"])
    return rows


def _monai_rules() -> List[Rename]:
    part = {"bn": 0, "act": 0, "conv": 1}
    rows = _conv_layer_rows(f"conv_0_bn_{ACT}", "blocks.0.conv", "blocks.0.adn.N", None)

    def key(s, j, i, p):
        block = 1 + (s - 1) * BLOCKS_PER_STAGE + j
        index = 2 * i + part[p]
        return f"blocks.{block}.layers.{index}" + (".N" if p == "bn" else ".conv" if p == "conv" else ".A")

    rows += [r for r in _res_rows(key) if not r.pattern.endswith("alpha")]
    rows += _conv_layer_rows(f"conv_1_bn_{ACT}", "blocks.10.conv", "blocks.10.adn.N", None)
    rows += _conv_layer_rows("conv_2_bn", "blocks.11.conv", "blocks.11.adn.N", None)
    return rows


# ---------------------------------------------------------------------------------------------
# 5. Fill rules and model arguments read off the checkpoint
# ---------------------------------------------------------------------------------------------

FILL = [
    Fill(r".*num_batches_tracked", 1,
         "BatchNorm counter with no TF counterpart: 1, as in the published conversion (unused in eval mode)"),
]


def model_kwargs(checkpoint) -> Dict[str, Any]:
    """In/out channels and activation, read from the first and last kernels and the layer names."""
    names = checkpoint.variables
    kwargs: Dict[str, Any] = {}
    for name, info in names.items():
        if re.fullmatch(f"{re.escape(SCOPE)}conv_0_bn_{ACT}/conv_/w", name) and len(info.shape) == 5:
            kwargs["in_channels"] = int(info.shape[3])
            kwargs["activation"] = "prelu" if "_bn_prelu/" in name else "relu"
        elif name == f"{SCOPE}conv_2_bn/conv_/w" and len(info.shape) == 5:
            kwargs["num_classes"] = int(info.shape[4])
    return kwargs


# ---------------------------------------------------------------------------------------------
# 6. Verification: the TF tensors of the original graph, the preprocessing, and a reference
#    forward pass from tf.nn ops for checkpoints without a graph (TF imported only when run)
# ---------------------------------------------------------------------------------------------

LAYERS = ["conv_0"] + [f"{stage}_{j}" for stage, _, _ in STAGES for j in range(BLOCKS_PER_STAGE)] + ["conv_1", "conv_2"]


def tf_reference(variables, x):
    """HighRes3DNet in TF from ``tf.nn`` ops: dilated convolutions (``tf.nn.convolution``
    with ``dilations``), not NiftyNet's ``space_to_batch``, so it is an independent
    implementation. ``variables`` maps TF names to arrays (read by TF); ``x`` is NDHWC.
    Returns ``(logits, {layer: output})``."""
    import tensorflow as tf

    act = "prelu" if f"{SCOPE}conv_0_bn_prelu/conv_/w" in variables else "relu"
    get = lambda name: tf.constant(variables[SCOPE + name])

    def bn(h, scope):
        return tf.nn.batch_normalization(h, get(f"{scope}/moving_mean"), get(f"{scope}/moving_variance"),
                                         get(f"{scope}/beta"), get(f"{scope}/gamma"), BN_EPS)

    def activation(h, scope):
        if act == "relu":
            return tf.nn.relu(h)
        return tf.nn.relu(h) + get(f"{scope}/alpha") * tf.minimum(h, 0.0)

    def conv(h, scope, dilation=1):
        return tf.nn.convolution(h, get(f"{scope}/w"), padding="SAME", dilations=dilation)

    outputs = {}
    h = tf.constant(x)
    layer = f"conv_0_bn_{act}"
    h = outputs["conv_0"] = activation(bn(conv(h, f"{layer}/conv_"), f"{layer}/bn_"), f"{layer}/acti_")
    for s, (stage, cout, dilation) in enumerate(STAGES, start=1):
        for j in range(BLOCKS_PER_STAGE):
            name = f"{stage}_{j}"
            y = h
            for i in range(2):
                y = conv(activation(bn(y, f"{name}/bn_{i}"), f"{name}/acti_{i}"), f"{name}/conv_{i}", dilation)
            grow = cout - int(h.shape[-1])
            h = outputs[name] = y + tf.pad(h, [[0, 0]] * 4 + [[grow // 2, grow - grow // 2]])
    layer = f"conv_1_bn_{act}"
    h = outputs["conv_1"] = activation(bn(conv(h, f"{layer}/conv_"), f"{layer}/bn_"), f"{layer}/acti_")
    h = outputs["conv_2"] = bn(conv(h, "conv_2_bn/conv_"), "conv_2_bn/bn_")
    return h.numpy(), {k: v.numpy() for k, v in outputs.items()}


VERIFY = VerifySpec(
    # the graph tf2pt's NiftyNet writer exports (tf2pt.testing.niftynet); override with
    # --tf-input/--tf-output for graphs exported by NiftyNet itself
    tf_input="images:0",
    tf_output="logits:0",
    output_kind="logits",
    spatial_multiple=8,  # NiftyNet asserts it; space_to_batch needs sizes divisible by 1, 2, 4
    preprocess=("whiten",),
    cpu_crop=(96, 96, 96),
    label_table="GIFNiftyNet.ctbl",
    tf_reference=tf_reference,
    layers=LAYERS,
    notes="Input is z-scored over the foreground (NiftyNet's whitening); the zoo model also used "
          "histogram standardisation, whose landmarks are not part of the checkpoint. Both frameworks "
          "get the same preprocessed voxels, so parity does not depend on it.",
)


def _layer_modules(convs, residual):
    """``{NiftyNet layer: module path}`` for --per-layer: ``convs`` are the modules of conv_0,
    conv_1 and conv_2; ``residual(stage, block)`` names a residual block's module."""
    out = dict(zip(["conv_0", "conv_1", "conv_2"], convs))
    for s, (stage, _, _) in enumerate(STAGES, start=1):
        for j in range(BLOCKS_PER_STAGE):
            out[f"{stage}_{j}"] = residual(s, j)
    return out


# ---------------------------------------------------------------------------------------------
# 7. The mapping
# ---------------------------------------------------------------------------------------------

MAPPING = Mapping(
    name="highresnet",
    description="NiftyNet HighRes3DNet (brain parcellation) -> PyTorch HighRes3DNet or MONAI HighResNet",
    source=SOURCE,
    targets=[
        Target(
            "tf2pt",
            "tf2pt's HighRes3DNet; state dict as the published PyTorch weights (fepegar/highresnet)",
            build_tf2pt, _tf2pt_rules(), FILL, spec=spec_tf2pt,
            layers=_layer_modules(["block.0", "block.4", "block.6"], lambda s, j: f"block.{s}.dilation_block.{j}"),
        ),
        Target(
            "monai",
            "MONAI HighResNet, final activation replaced by Identity to output NiftyNet's logits",
            build_monai, _monai_rules(), FILL, requires=("monai",), extra="monai",
            notes="MONAI applies ReLU after its last block; NiftyNet does not. The target swaps it for Identity.",
            layers=_layer_modules(["blocks.0", "blocks.10", "blocks.11"],
                                  lambda s, j: f"blocks.{1 + (s - 1) * BLOCKS_PER_STAGE + j}"),
        ),
    ],
    ignore=IGNORE,
    model_kwargs=model_kwargs,
    verify=VERIFY,
)
