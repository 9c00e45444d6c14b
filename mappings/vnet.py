"""NiftyNet V-Net -> PyTorch (tf2pt's VNet).

Source: NiftyNet 0.6.0's ``niftynet/network/vnet.py`` (``VNet``, ``VNetBlock``; Milletari et
al., "V-Net", 3DV 2016). Variable scope ``VNet/``; blocks ``L1``..``L4`` (down), ``V_`` (the
bottom), ``R4``..``R1`` (up; ``R1`` a 1x1x1 output block).

A block (``VNetBlock``): ``n_conv`` 5x5x5 ``SAME`` convolutions without bias (``conv_<i>/w``),
an activation after each but the last; the sum with the bypass (``ElementwiseLayer('SUM')``:
zero-padded along channels when the bypass has fewer, ``(out - in) // 2`` before); then its
operation, with bias: a 2x2x2 stride-2 convolution (``downsample``), a 2x2x2 stride-2
transposed convolution (``upsample``, kernel ``[k, k, k, out, in]``) or a 1x1x1 convolution
(``conv_1x1x1``); then an activation (``<func>_activation[_<k>]/alpha`` for PReLU, one alpha per
channel). L1's bypass is the input tiled to ``n_features[0]`` channels; an up block's input is
``concat([upsampled, residual of its level])`` and its bypass the upsampled tensor.

* No normalisation anywhere, and the activation after ``R1`` is applied to the output, so the
  "logits" are activated (ReLU: non-negative) and large.
* 2x2x2 stride-2 ``SAME`` convolutions and transposed convolutions need no padding or crop on
  even sizes, so plain ``nn.Conv3d`` / ``nn.ConvTranspose3d`` are exact here.
* Sizes: NiftyNet asserts multiples of 8, but four stride-2 levels need multiples of 16 (a
  size of 8 mod 16 fails at the concatenations), so verify pads to 16.
* ``n_features`` (NiftyNet's default 16, 32, 64, 128, 256; 70M parameters) is read off the
  checkpoint's kernels, as are the channels in and out and the activation.
* In-channels other than 1 make NiftyNet project the tiled bypass (an ``ElementwiseLayer``
  ``proj`` convolution); such checkpoints are refused.

No MONAI target: MONAI's ``VNet`` (monai.networks.nets.VNet) is a different V-Net: 5x5x5
convolutions with batch norm, ELU/PReLU with one alpha per layer, an input block that adds the
input repeated 16 times and a different channel layout, so NiftyNet's weights do not fit it.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from tf2pt.mapping import TRAINING_ONLY, Mapping, Refuse, Rename, Source, Target, VerifySpec

SCOPE = "VNet/"
FEATURES = (16, 32, 64, 128, 256)  # NiftyNet's n_features
#: (block, kind, n_conv, level of its convolutions' channels, level of its output's channels;
#: None: the classes) in NiftyNet's layer_op order
BLOCKS = (
    ("L1", "down", 1, 0, 1), ("L2", "down", 2, 1, 2), ("L3", "down", 3, 2, 3), ("L4", "down", 3, 3, 4),
    ("V_", "up", 3, 4, 4),
    ("R4", "up", 3, 4, 3), ("R3", "up", 3, 3, 2), ("R2", "up", 2, 2, 1), ("R1", "same", 1, 1, None),
)
FINAL = {"down": ("downsample", "conv3d"), "up": ("upsample", "conv_transpose3d"), "same": ("conv_1x1x1", "conv3d")}
ACT = r"(?:relu|prelu)"


def build_tf2pt(in_channels: int = 1, num_classes: int = 2, activation: str = "relu", features=FEATURES):
    """tf2pt's VNet (``tf2pt.models.vnet``), built from this mapping's block table."""
    from tf2pt.models.vnet import VNet, VNetLayout

    return VNet(VNetLayout(tuple(features), BLOCKS), in_channels, num_classes, activation)


def _suffix(k: int) -> str:
    return "" if k == 0 else f"_{k}"


def _rules() -> List[Rename]:
    s = re.escape(SCOPE)
    rows = []
    for name, kind, n_conv, _, _ in BLOCKS:
        base = f"{s}{re.escape(name)}"
        module = f"blocks.{name}"
        for i in range(n_conv):
            rows.append(Rename(f"{base}/conv_{i}/w", f"{module}.convs.{i}.weight", "conv3d"))
        for k in range(n_conv):  # activations in creation order: after conv_0..conv_{n-2}, then the final one
            key = f"{module}.acts.{k}.weight" if k < n_conv - 1 else f"{module}.final_act.weight"
            rows.append(Rename(f"{base}/prelu_activation{_suffix(k)}/alpha", key))
        op, transform = FINAL[kind]
        rows.append(Rename(f"{base}/{op}/w", f"{module}.final.weight", transform))
        rows.append(Rename(f"{base}/{op}/b", f"{module}.final.bias"))
    return rows


def model_kwargs(checkpoint) -> Dict[str, Any]:
    """Channels in and out, ``n_features`` and the activation, read off the kernels and names."""
    v = checkpoint.variables
    kwargs: Dict[str, Any] = {}
    first = v.get(f"{SCOPE}L1/conv_0/w")
    if first is not None and len(first.shape) == 5:
        kwargs["in_channels"] = int(first.shape[3])
    levels = {}
    for name, _, _, level, _ in BLOCKS:
        info = v.get(f"{SCOPE}{name}/conv_0/w")
        if info is not None and len(info.shape) == 5:
            levels.setdefault(level, int(info.shape[4]))
    if sorted(levels) == list(range(len(FEATURES))):
        kwargs["features"] = [levels[i] for i in range(len(FEATURES))]
    last = v.get(f"{SCOPE}R1/conv_1x1x1/w")
    if last is not None and len(last.shape) == 5:
        kwargs["num_classes"] = int(last.shape[4])
    kwargs["activation"] = "prelu" if any("/prelu_activation" in n for n in v) else "relu"
    return kwargs


LAYERS = [name for name, *_ in BLOCKS]


def tf_reference(variables, x):
    """VNet in TF from ``tf.nn`` ops (``x`` NDHWC); per layer, each block's output."""
    import tensorflow as tf

    get = lambda name: tf.constant(variables[SCOPE + name])
    act = "prelu" if any("/prelu_activation" in n for n in variables.keys()) else "relu"

    def activation(h, scope):
        return tf.nn.relu(h) if act == "relu" else tf.nn.relu(h) + get(f"{scope}/alpha") * tf.minimum(h, 0.0)

    def block(name, kind, n_conv, h, bypass):
        for i in range(n_conv):
            h = tf.nn.convolution(h, get(f"{name}/conv_{i}/w"), padding="SAME")
            if i < n_conv - 1:
                h = activation(h, f"{name}/prelu_activation{_suffix(i)}")
        grow = int(h.shape[-1]) - int(bypass.shape[-1])
        res = h + tf.pad(bypass, [[0, 0]] * 4 + [[grow // 2, grow - grow // 2]])
        op, _ = FINAL[kind]
        w, b = get(f"{name}/{op}/w"), get(f"{name}/{op}/b")
        if kind == "down":
            y = tf.nn.convolution(res, w, strides=2, padding="SAME")
        elif kind == "up":
            shape = [int(res.shape[0])] + [2 * int(n) for n in res.shape[1:4]] + [int(w.shape[3])]
            y = tf.nn.conv3d_transpose(res, w, shape, [1, 2, 2, 2, 1], "SAME")
        else:
            y = tf.nn.convolution(res, w, padding="SAME")
        return res, activation(y + b, f"{name}/prelu_activation{_suffix(n_conv - 1)}")

    out, residuals = {}, []
    h = tf.constant(x)
    f0 = int(variables[SCOPE + "L1/conv_0/w"].shape[4])
    bypass = tf.tile(h, [1, 1, 1, 1, f0])
    downs = [b for b in BLOCKS if b[1] == "down"]
    for name, kind, n_conv, _, _ in downs:
        res, h = block(name, kind, n_conv, h, bypass)
        residuals.append(res)
        out[name] = bypass = h
    name, kind, n_conv, _, _ = BLOCKS[len(downs)]
    _, up = block(name, kind, n_conv, h, h)
    out[name] = up
    for (name, kind, n_conv, _, _), res in zip(BLOCKS[len(downs) + 1:], residuals[::-1]):
        _, up = block(name, kind, n_conv, tf.concat([up, res], -1), up)
        out[name] = up
    return up.numpy(), {k: v.numpy() for k, v in out.items()}


VERIFY = VerifySpec(
    tf_input="images:0",
    tf_output="logits:0",
    output_kind="logits",
    spatial_multiple=16,
    preprocess=("whiten",),
    tf_reference=tf_reference,
    layers=LAYERS,
    notes="The graph is the one tf2pt.testing.niftynet_zoo exports from NiftyNet's own VNet "
          "(images:0 -> logits:0, fixed input size); VNet's outputs are activated (ReLU/PReLU after "
          "its last layer), so the output range is that of activated logits.",
)

MAPPING = Mapping(
    name="vnet",
    description="NiftyNet V-Net (5x5x5 residual blocks, PReLU, no normalisation) -> PyTorch VNet",
    source=Source(
        origin="NiftyNet 0.6.0 niftynet/network/vnet.py (VNet)",
        framework="TensorFlow 1 (NiftyNet)",
        scope=SCOPE,
        variables=sum(n + 2 for _, _, n, _, _ in BLOCKS),  # ReLU; PReLU adds one alpha per activation
        license="NiftyNet: Apache-2.0; weights as published by their authors",
        meta={"in_channels": 1, "spatial_multiple": 16, "n_features": FEATURES},
    ),
    targets=[
        Target("tf2pt", "tf2pt's VNet (NiftyNet's blocks, bypass channel padding, activated output)",
               build_tf2pt, _rules(), layers={name: f"blocks.{name}.final_act" for name in LAYERS},
               notes="No MONAI target: MONAI's VNet has batch norm, per-layer PReLU and another layout."),
    ],
    ignore=[TRAINING_ONLY],
    refuse=[Refuse(re.escape(SCOPE) + r".*/proj/w",
                   "this VNet projects a bypass (more than one input channel): not supported by tf2pt's VNet")],
    model_kwargs=model_kwargs,
    verify=VERIFY,
)
