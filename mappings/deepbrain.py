"""deepbrain's brain-extraction 3D U-Net (frozen TF1 graph) -> PyTorch.

Source: the ``deepbrain`` 0.1 wheel on PyPI (MIT, Ivan Itzcovich) ships ``deepbrain/models/graph.pb``,
a frozen GraphDef: inputs ``img`` (1 x 128^3 x 1, float) and ``training`` (bool, default False);
outputs ``prob`` (sigmoid) and ``pred``. Get it with ``pip download --no-deps deepbrain==0.1``;
deepbrain itself is not a dependency of tf2pt (its runtime needs TF1's ``tf.Session``).

The graph, node by node (every conv: 3x3x3, stride 1, ``SAME``, bias, unless noted)::

    img -> conv3d(1->8) relu -> conv3d_1(8->8) relu ----------------------------- skip1
        -> max_pooling3d (2x2x2, stride 2, VALID) -> dropout
        -> conv3d_2(8->16) relu -> conv3d_3(16->16) relu ------------------------ skip2
        -> max_pooling3d_1 -> dropout_1
        -> conv3d_4(16->32) relu -> conv3d_5(32->32) relu ----------------------- skip3
        -> max_pooling3d_2 -> dropout_2
        -> conv3d_transpose (Conv3DBackpropInputV2, 32->32, stride 2, SAME, output 2x, no bias)
        -> concat([up, skip3]) -> conv3d_6(64->32) relu -> dropout_3
        -> conv3d_transpose_1 (32->16) -> concat([up, skip2]) -> conv3d_7(32->16) relu -> dropout_4
        -> conv3d_transpose_2 (16->8)  -> concat([up, skip1]) -> conv3d_8(16->8) relu -> dropout_5
        -> conv3d_9 (1x1x1, 8->1) -> sigmoid = prob;   pred = prob > 0.5

Dropout (keep probability 0.7) is a ``tf.cond`` on ``training``, the identity branch at
inference; ``training`` *defaults to True*, so verify feeds ``False``. ``img`` must be fed (its
default reads the training data pipeline). ``pred`` also reads the dataset iterator's labels, so
only ``prob`` can be fetched; tf2pt thresholds it at 0.5. deepbrain trained with every axis
permutation and flip, so the input's orientation does not matter to it.
Transposed convolutions: TF ``SAME`` with output ``2n`` from ``n`` pads the implied forward
convolution by 0 before and 1 after; ``tf2pt.nn.ConvTranspose3dSame`` crops accordingly.
"""

from __future__ import annotations

from typing import Any, Dict

from tf2pt.mapping import GRAPH_CONSTANTS, Mapping, Rename, Source, Target, VerifySpec

# ---------------------------------------------------------------------------------------------
# 1. Source facts
# ---------------------------------------------------------------------------------------------

SOURCE = Source(
    origin="deepbrain 0.1 (PyPI wheel, deepbrain/models/graph.pb): brain extraction 3D U-Net",
    framework="TensorFlow 1 frozen GraphDef",
    variables=23,  # 10 conv kernels + 10 biases + 3 transposed-conv kernels
    license="MIT (deepbrain, Ivan Itzcovich)",
    meta={"in_channels": 1, "input_size": (128, 128, 128)},
)

# ---------------------------------------------------------------------------------------------
# 2. Target model
# ---------------------------------------------------------------------------------------------


def build_tf2pt(in_channels: int = 1, base: int = 8, dropout: float = 0.3):
    """tf2pt's port (``tf2pt.models.deepbrain.DeepBrainUNet``)."""
    from tf2pt.models.deepbrain import DeepBrainUNet

    return DeepBrainUNet(in_channels, base, dropout)


# ---------------------------------------------------------------------------------------------
# 3. Ignore rules: the graph's plumbing constants (shapes, axes, dropout keep probabilities)
# ---------------------------------------------------------------------------------------------

IGNORE = [GRAPH_CONSTANTS]

# ---------------------------------------------------------------------------------------------
# 4. Rename rules: (TF layer, PyTorch module, kind)
# ---------------------------------------------------------------------------------------------

LAYERS = [
    ("conv3d", "encoder1.0", "conv"), ("conv3d_1", "encoder1.2", "conv"),
    ("conv3d_2", "encoder2.0", "conv"), ("conv3d_3", "encoder2.2", "conv"),
    ("conv3d_4", "encoder3.0", "conv"), ("conv3d_5", "encoder3.2", "conv"),
    ("conv3d_transpose", "up3", "up"), ("conv3d_6", "decoder3.0", "conv"),
    ("conv3d_transpose_1", "up2", "up"), ("conv3d_7", "decoder2.0", "conv"),
    ("conv3d_transpose_2", "up1", "up"), ("conv3d_8", "decoder1.0", "conv"),
    ("conv3d_9", "head", "conv"),
]


def _rules():
    rules = []
    for tf_layer, module, kind in LAYERS:
        if kind == "up":
            rules.append(Rename(f"{tf_layer}/kernel", f"{module}.weight", "conv_transpose3d"))
        else:
            rules.append(Rename(f"{tf_layer}/kernel", f"{module}.weight", "conv3d"))
            rules.append(Rename(f"{tf_layer}/bias", f"{module}.bias"))
    return rules


def model_kwargs(checkpoint) -> Dict[str, Any]:
    info = checkpoint.variables.get("conv3d/kernel")
    if info is None or len(info.shape) != 5:
        return {}
    return {"in_channels": int(info.shape[3]), "base": int(info.shape[4])}


# ---------------------------------------------------------------------------------------------
# 5. Verification: the original graph; the input prepared as deepbrain's Extractor.run does
# ---------------------------------------------------------------------------------------------


def tf_reference(variables, x):
    """The U-Net from ``tf.nn`` ops and the graph's constants (``x`` is NDHWC)."""
    import tensorflow as tf

    get = lambda name: tf.constant(variables[name])

    def conv(h, layer, relu=True):
        h = tf.nn.bias_add(tf.nn.conv3d(h, get(f"{layer}/kernel"), [1] * 5, "SAME"), get(f"{layer}/bias"))
        return tf.nn.relu(h) if relu else h

    def up(h, layer):
        k = get(f"{layer}/kernel")
        shape = tf.concat([tf.shape(h)[:1], tf.shape(h)[1:4] * 2, tf.shape(k)[3:4]], 0)
        return tf.nn.conv3d_transpose(h, k, shape, [1, 2, 2, 2, 1], "SAME")

    pool = lambda h: tf.nn.max_pool3d(h, 2, 2, "VALID")
    outputs = {}
    h = tf.constant(x)
    s1 = outputs["encoder1"] = conv(conv(h, "conv3d"), "conv3d_1")
    s2 = outputs["encoder2"] = conv(conv(pool(s1), "conv3d_2"), "conv3d_3")
    s3 = outputs["encoder3"] = conv(conv(pool(s2), "conv3d_4"), "conv3d_5")
    h = outputs["decoder3"] = conv(tf.concat([up(pool(s3), "conv3d_transpose"), s3], -1), "conv3d_6")
    h = outputs["decoder2"] = conv(tf.concat([up(h, "conv3d_transpose_1"), s2], -1), "conv3d_7")
    h = outputs["decoder1"] = conv(tf.concat([up(h, "conv3d_transpose_2"), s1], -1), "conv3d_8")
    logits = outputs["head"] = conv(h, "conv3d_9", relu=False)  # the PyTorch 'head' module's output
    return tf.sigmoid(logits).numpy(), {k: v.numpy() for k, v in outputs.items()}


VERIFY = VerifySpec(
    tf_input="img:0",
    tf_output="prob:0",
    feeds={"training:0": False},
    output_kind="probability",
    threshold=0.5,
    spatial_multiple=8,
    size=(128, 128, 128),
    preprocess=("scale_by_max",),
    resize="antialias",
    atol=1e-4,
    tf_reference=tf_reference,
    layers=["encoder1", "encoder2", "encoder3", "decoder3", "decoder2", "decoder1", "head"],
    notes="Input prepared as deepbrain's Extractor.run: resized to 128^3 (skimage.transform.resize "
          "semantics: Gaussian anti-aliasing, linear, constant mode) and divided by its maximum.",
)

# ---------------------------------------------------------------------------------------------
# 6. The mapping
# ---------------------------------------------------------------------------------------------

MAPPING = Mapping(
    name="deepbrain",
    description="deepbrain 0.1 brain-extraction 3D U-Net (frozen graph) -> PyTorch U-Net",
    source=SOURCE,
    targets=[
        Target("tf2pt", "tf2pt's DeepBrainUNet (probability output, sigmoid included)", build_tf2pt, _rules(),
               layers={name: name for name in ["encoder1", "encoder2", "encoder3", "decoder3", "decoder2", "decoder1", "head"]}),
    ],
    ignore=IGNORE,
    model_kwargs=model_kwargs,
    verify=VERIFY,
)
