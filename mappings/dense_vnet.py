"""NiftyNet DenseVNet -> PyTorch (tf2pt's DenseVNet).

Source: NiftyNet 0.6.0's ``niftynet/network/dense_vnet.py`` (``DenseVNet``; Gibson et al.,
"Automatic multi-organ segmentation on abdominal CT with dense V-networks", IEEE TMI 2018), the
network of the model zoo's ``dense_vnet_abdominal_ct``. Variable scope ``DenseVNet/``.

Inference graph, from NiftyNet's ``layer_op`` with its default hyperparameters (``TABLE``)::

    x ─ avg-pool 3x3x3 /2 (SAME, padding left out of the mean) ─ BN ──────────────── small ─┐
    x ─ conv_bn: 5x5x5 conv /2 (24) ─ BN  (no activation) ─┐                              │
                               concat([small, conv_bn]) ───┴─ block 0 ─ block 1 ─ block 2  │
    block i: dense feature stack of n convolutions (3x3x3 -> BN -> ReLU, each on the concat of  │
             the input and all earlier outputs), then on the whole stack a skip conv          │
             (``conv_bn_relu``) and, blocks 0 and 1, a stride-2 down conv (``conv_bn_relu_1``); │
             each skip is resized to small's size (TF1 legacy trilinear: 1 -> 1, 2x, 4x)      │
    concat([small, skip0, skip1, skip2]) ─ conv (3x3x3, bias, no BN) ─ [+ log(prior)] ─ resize to x

* Convolutions: TF ``SAME``; stride 2 pads one-sidedly (5x5x5 on even sizes: 1 before, 2 after;
  3x3x3: 0 and 1): ``tf2pt.nn.Conv3dSame``. The average pooling excludes the padding:
  ``tf2pt.nn.AvgPoolSame``. Every resize is ``LinearResizeLayer``: ``tf.image.resize_bilinear``
  (TF1 legacy, no half-pixel centres) on (H, W) and then on D: ``tf2pt.nn.ResizeLinearLegacy``;
  torch's ``interpolate`` differs from it by whole fractions of a voxel.
* The initial convolution has BN but no activation; the final one a bias and neither.
* In block 1 the skip and the down convolution are both 104 -> 24 channels, 3x3x3: their kernels
  have one shape, so only values tell them apart (``tests/data/wrong_dense_vnet.py`` swaps them).
* ``use_prior``: a learned ``spatial_prior_block/prior`` (1 x p x p x p x 1), resized to the
  half-resolution grid; its log is added to every class's logits. Supported (read off the
  checkpoint); the model keeps the prior in TF's layout.
* Sizes: multiples of 8 (NiftyNet asserts ``2 ** len(dilation_rates)``).
* Training-only: the affine augmentation (``is_training`` only) and dropout (``keep_prob`` 1 at
  inference); ``use_bdo`` (batch-wise dropout through channel-sparse convolutions) was not
  checked here.
  Other hyperparameters (channel counts, convolutions per block) are NiftyNet's defaults; a
  checkpoint trained with others fails to convert with every mismatch named.

No MONAI target: MONAI has no DenseVNet (no dense feature stacks, no network that matches these
weights).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from tf2pt.mapping import TRAINING_ONLY, Fill, Mapping, Rename, Source, Target, VerifySpec

SCOPE = "DenseVNet/"
BN_EPS = 1e-5
BN_PARAMS = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]

#: NiftyNet's DenseVNet.__hyper_params__ (the weight-shaping ones), as the model's layout
TABLE = dict(
    initial_channels=24,  # n_initial_conv_channels
    initial_kernel=5,
    dense_channels=(4, 8, 16),  # n_dense_channels
    layers=(5, 10, 10),  # len(dilation_rates[i])
    seg_channels=(12, 24, 24),  # n_seg_channels
    down_channels=(24, 24, None),  # n_down_channels
    seg_kernel=3,  # seg_kernel_size
)


def _layout(prior_size=None):
    from tf2pt.models.dense_vnet import DenseVNetLayout

    return DenseVNetLayout(**TABLE, prior_size=prior_size)


def build_tf2pt(in_channels: int = 1, num_classes: int = 9, prior_size=None, eps: float = BN_EPS):
    """tf2pt's DenseVNet (``tf2pt.models.dense_vnet``), built from this mapping's table."""
    from tf2pt.models.dense_vnet import DenseVNet

    return DenseVNet(_layout(prior_size), in_channels, num_classes, eps)


# ---------------------------------------------------------------------------------------------
# names: NiftyNet's scopes for each layer, and the model's modules
# ---------------------------------------------------------------------------------------------


def _suffix(i: int) -> str:
    return "" if i == 0 else f"_{i}"


def _tf_block(i: int) -> str:
    return f"dense_feature_stack_block{_suffix(i)}"


def _conv_layers() -> List[tuple]:
    """``(TF layer scope under DenseVNet/, module, has BN)`` for every convolution."""
    rows = [("conv_bn", "initial_conv", True)]
    for i, n in enumerate(TABLE["layers"]):
        block = _tf_block(i)
        rows += [(f"{block}/dense_feature_stack_block/conv_bn_relu{_suffix(j)}", f"blocks.{i}.dfs.{j}", True)
                 for j in range(n)]
        rows.append((f"{block}/conv_bn_relu", f"blocks.{i}.skip", True))
        if TABLE["down_channels"][i] is not None:
            rows.append((f"{block}/conv_bn_relu_1", f"blocks.{i}.down", True))
    rows.append(("conv", "final_conv", False))
    return rows


def _rules() -> List[Rename]:
    s = re.escape(SCOPE)
    rows = [Rename(f"{s}batch_norm/{tf}", f"downsample_bn.{pt}") for tf, pt in BN_PARAMS]
    for tf_layer, module, has_bn in _conv_layers():
        if has_bn:
            rows.append(Rename(f"{s}{tf_layer}/conv_/w", f"{module}.conv.weight", "conv3d"))
            rows += [Rename(f"{s}{tf_layer}/bn_/{tf}", f"{module}.bn.{pt}") for tf, pt in BN_PARAMS]
        else:
            rows.append(Rename(f"{s}{tf_layer}/conv_/w", f"{module}.weight", "conv3d"))
            rows.append(Rename(f"{s}{tf_layer}/conv_/b", f"{module}.bias"))
    rows.append(Rename(f"{s}spatial_prior_block/prior", "prior"))  # TF layout kept (see the model)
    return rows


FILL = [Fill(r".*num_batches_tracked", 1, "BatchNorm counter with no TF counterpart (unused in eval mode)")]


def model_kwargs(checkpoint) -> Dict[str, Any]:
    """In/out channels from the first and last kernels; the prior's size if it has one."""
    kwargs: Dict[str, Any] = {}
    v = checkpoint.variables
    first, last, prior = (v.get(f"{SCOPE}conv_bn/conv_/w"), v.get(f"{SCOPE}conv/conv_/w"),
                          v.get(f"{SCOPE}spatial_prior_block/prior"))
    if first is not None and len(first.shape) == 5:
        kwargs["in_channels"] = int(first.shape[3])
    if last is not None and len(last.shape) == 5:
        kwargs["num_classes"] = int(last.shape[4])
    if prior is not None and len(prior.shape) == 5:
        kwargs["prior_size"] = int(prior.shape[1])
    return kwargs


# ---------------------------------------------------------------------------------------------
# verification: a TF reference forward from tf.nn ops, and the per-layer names
# ---------------------------------------------------------------------------------------------

LAYERS = ["input_bn", "conv_bn"] + [
    f"block_{i}_{part}" for i in range(len(TABLE["layers"]))
    for part in (("skip", "down") if TABLE["down_channels"][i] is not None else ("skip",))
] + ["final_conv"]

MODULES = {"input_bn": "downsample_bn", "conv_bn": "initial_conv", "final_conv": "final_conv"}
for _i in range(len(TABLE["layers"])):
    MODULES[f"block_{_i}_skip"] = f"blocks.{_i}.skip"
    if TABLE["down_channels"][_i] is not None:
        MODULES[f"block_{_i}_down"] = f"blocks.{_i}.down"


def tf_reference(variables, x):
    """DenseVNet in TF from ``tf.nn`` ops and ``tf.compat.v1.image.resize_bilinear`` (the op
    NiftyNet's resize uses); ``x`` is NDHWC. Returns ``(logits, {layer: output})``; the
    skip outputs are before their resize, ``final_conv`` before the prior and the last resize."""
    import tensorflow as tf

    get = lambda name: tf.constant(variables[SCOPE + name])

    def bn(h, s):
        return tf.nn.batch_normalization(h, get(f"{s}/moving_mean"), get(f"{s}/moving_variance"),
                                         get(f"{s}/beta"), get(f"{s}/gamma"), BN_EPS)

    def conv_bn(h, s, stride=1, relu=True):
        h = bn(tf.nn.convolution(h, get(f"{s}/conv_/w"), strides=stride, padding="SAME"), f"{s}/bn_")
        return tf.nn.relu(h) if relu else h

    def resize(h, size):
        d, hh, w = (int(n) for n in h.shape[1:4])
        if [d, hh, w] == list(size):
            return h
        c = int(h.shape[-1])
        rb = tf.compat.v1.image.resize_bilinear
        y = tf.reshape(rb(tf.reshape(h, [-1, hh, w, c]), size[1:]), [-1, d, size[1], size[2], c])
        y = tf.transpose(y, [0, 3, 2, 1, 4])
        y = tf.reshape(rb(tf.reshape(y, [-1, size[1], d, c]), [size[1], size[0]]), [-1, size[2], size[1], size[0], c])
        return tf.transpose(y, [0, 3, 2, 1, 4])

    out = {}
    h = tf.constant(x)
    small = out["input_bn"] = bn(tf.nn.pool(h, [3, 3, 3], "AVG", strides=[2, 2, 2], padding="SAME"), "batch_norm")
    size = [int(n) for n in small.shape[1:4]]
    init = out["conv_bn"] = conv_bn(h, "conv_bn", stride=2, relu=False)
    down = tf.concat([small, init], -1)
    maps = [small]
    for i, n in enumerate(TABLE["layers"]):
        block = _tf_block(i)
        stack = [down]
        for j in range(n):
            stack.append(conv_bn(tf.concat(stack, -1), f"{block}/dense_feature_stack_block/conv_bn_relu{_suffix(j)}"))
        merged = tf.concat(stack, -1)
        skip = out[f"block_{i}_skip"] = conv_bn(merged, f"{block}/conv_bn_relu")
        if TABLE["down_channels"][i] is not None:
            down = out[f"block_{i}_down"] = conv_bn(merged, f"{block}/conv_bn_relu_1", stride=2)
        maps.append(resize(skip, size))
    logits = tf.nn.convolution(tf.concat(maps, -1), get("conv/conv_/w"), padding="SAME") + get("conv/conv_/b")
    out["final_conv"] = logits
    if SCOPE + "spatial_prior_block/prior" in variables:
        logits = logits + tf.math.log(resize(get("spatial_prior_block/prior"), size))
    logits = resize(logits, [int(n) for n in x.shape[1:4]])
    return logits.numpy(), {k: v.numpy() for k, v in out.items()}


VERIFY = VerifySpec(
    tf_input="images:0",
    tf_output="logits:0",
    output_kind="logits",
    spatial_multiple=8,
    preprocess=("whiten",),
    tf_reference=tf_reference,
    layers=LAYERS,
    notes="The graph is the one tf2pt.testing.niftynet_zoo exports from NiftyNet's own DenseVNet "
          "(images:0 -> logits:0, a fixed input size: NiftyNet's resize layers need static shapes); "
          "override with --tf-input/--tf-output for graphs NiftyNet's engine exported.",
)

MAPPING = Mapping(
    name="dense_vnet",
    description="NiftyNet DenseVNet (multi-organ abdominal CT) -> PyTorch DenseVNet",
    source=Source(
        origin="NiftyNet 0.6.0 niftynet/network/dense_vnet.py (DenseVNet; model zoo dense_vnet_abdominal_ct)",
        framework="TensorFlow 1 (NiftyNet)",
        scope=SCOPE,
        # 4 (input BN) + 5 per conv with BN + 2 (final conv and bias)
        variables=4 + 5 * (len(_conv_layers()) - 1) + 2,
        license="NiftyNet: Apache-2.0; weights as published by their authors",
        meta={"in_channels": 1, "spatial_multiple": 8, "bn_eps": BN_EPS},
    ),
    targets=[
        Target("tf2pt", "tf2pt's DenseVNet (TF1 legacy resize, SAME average pooling and strided convolutions)",
               build_tf2pt, _rules(), FILL, layers=MODULES,
               notes="No MONAI target: MONAI has no DenseVNet."),
    ],
    ignore=[TRAINING_ONLY],
    model_kwargs=model_kwargs,
    verify=VERIFY,
)
