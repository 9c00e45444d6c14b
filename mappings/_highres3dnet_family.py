"""The HighRes3DNet family (NiftyNet's ``HighRes3DNet``, ``HighRes3DNetSmall``,
``HighRes3DNetLarge``): one mapping factory, :func:`highres3dnet_mapping`, generates a mapping's
rename rules, the torch-free ``spec``, the TF reference forward, the per-layer module names and
the model's layer table from one table (stem, stages, head). The mapping modules
``highresnet``, ``highres3dnet_small`` and ``highres3dnet_large`` each declare their table and
call it. (The leading underscore keeps the registry from taking this module for a mapping.)

What the members share, from NiftyNet's source (``HighResBlock``, ``ConvolutionalLayer``,
``DeconvolutionalLayer``, ``BNLayer``, ``DilatedTensor``):

* a stem ``conv_0``: conv (16 channels) -> BN -> activation; HighRes3DNetSmall's has stride 2;
* residual stages of pre-activation blocks (BN -> activation -> 3x3x3 conv, twice, plus the
  identity zero-padded along channels: ``(out - in) // 2`` before, the rest after), dilated by
  ``space_to_batch`` (equal to a dilated convolution with zero padding ``d`` when sizes divide
  by ``d``, see ``mappings/highresnet.py``);
* a head of ``ConvolutionalLayer`` / ``DeconvolutionalLayer`` layers (conv -> BN -> activation;
  the last has no activation and outputs logits);
* no biases, TF ``SAME`` padding (one-sided for stride 2: ``tf2pt.nn.Conv3dSame`` and
  ``ConvTranspose3dSame``), BN ``eps = 1e-5``, ReLU or per-channel PReLU.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from tf2pt.mapping import TRAINING_ONLY, Fill, Mapping, Rename, Source, Target, VerifySpec

BN_EPS = 1e-5
BN_PARAMS = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]
ACT = r"(?:relu|prelu)"
#: NiftyNet's ActiLayer scopes are ``<func>_<name>`` (``prelu_acti_``, ``prelu_acti_0``); tf2pt's
#: own HighRes3DNet writer (tf2pt.testing.niftynet) names them without the prefix: accept both
PRELU = r"(?:prelu_)?"


class Head(NamedTuple):
    """A layer after the residual stages, as NiftyNet names it: ``name`` (``conv_1``, ``deconv``,
    ...), ``kind`` (``conv``, ``deconv``, ``dropout``), output ``features`` (``None``: the classes),
    kernel, stride and whether an activation follows."""

    name: str
    kind: str
    features: Optional[int] = None
    kernel: int = 1
    stride: int = 1
    activation: bool = True


class Table(NamedTuple):
    """One family member's layer table (a source fact: NiftyNet's ``self.layers``)."""

    scope: str  # NiftyNet's variable scope, e.g. "HighRes3DNet/"
    stem: int  # conv_0's channels
    stem_kernel: int
    stem_stride: int
    stages: Sequence[Tuple[str, int, int]]  # (name, channels, dilation)
    blocks_per_stage: int
    head: Sequence[Head]

    def layout(self):
        """The model's :class:`tf2pt.models.highres3dnet.Layout` (imports torch)."""
        from tf2pt.models.highres3dnet import HeadLayer, Layout

        convs = [h for h in self.head if h.kind != "dropout"]
        return Layout(stem=self.stem, stages=tuple(self.stages), blocks_per_stage=self.blocks_per_stage,
                      features=convs[0].features, stem_kernel=self.stem_kernel, stem_stride=self.stem_stride,
                      head=tuple(HeadLayer(h.kind, h.features, h.kernel, h.stride, h.activation) for h in self.head))

    # -- names ---------------------------------------------------------------------------------

    def head_module(self, i: int) -> int:
        """``block.<n>`` index of head layer ``i`` in tf2pt's model."""
        return 1 + len(self.stages) + i

    def convs(self) -> List[Tuple[int, Head]]:
        return [(i, h) for i, h in enumerate(self.head) if h.kind != "dropout"]

    def tf_layer(self, h: Head) -> str:
        """NiftyNet's layer scope: ``<name>_bn[_<activation>]``."""
        return f"{h.name}_bn" + (f"_{ACT}" if h.activation else "")

    def receptive_radius(self) -> int:
        """How many input voxels away an output voxel can see, per side (an upper bound: every
        convolution counted on the path, 3x3x3 ones in the residual blocks; a strided layer's
        reach scaled by the stride so far, never divided back)."""
        radius, jump = (self.stem_kernel - 1) // 2, self.stem_stride
        for _, _, dilation in self.stages:
            radius += jump * self.blocks_per_stage * 2 * dilation
        for _, h in self.convs():
            radius += jump * (h.kernel - 1) // 2
            if h.kind == "conv":
                jump *= h.stride
        return radius

    def layers(self) -> List[str]:
        """Per-layer names, in order: conv_0, every residual block, every head conv."""
        return (["conv_0"] + [f"{stage}_{j}" for stage, _, _ in self.stages for j in range(self.blocks_per_stage)]
                + [h.name for _, h in self.convs()])


# ---------------------------------------------------------------------------------------------
# tf2pt's model: keys
# ---------------------------------------------------------------------------------------------

_TF2PT_PART = {"bn": 0, "act": 1, "conv": 3}


def _tf2pt_res_key(stage: int, block: int, layer: int, part: str) -> str:
    return f"block.{stage}.dilation_block.{block}.residual_block.{layer}.convolutional_block.{_TF2PT_PART[part]}"


def _tf2pt_conv_keys(module: int, kind: str, kernel: int, stride: int, activation: bool):
    """``(conv, bn, act)`` keys of a ConvolutionalBlock/DeconvolutionalBlock at ``block.<module>``:
    a kxkxk convolution is preceded by its padding module (index 0)."""
    first = 1 if kind == "conv" and kernel > 1 else 0
    base = f"block.{module}.convolutional_block"
    return f"{base}.{first}", f"{base}.{first + 1}", (f"{base}.{first + 2}" if activation else None)


def _tf2pt_layers(t: Table) -> Dict[str, Tuple[str, str, Optional[str], str]]:
    """``{NiftyNet layer: (conv key, bn key, act key, transform)}`` of the stem and the head."""
    out = {"conv_0": (*_tf2pt_conv_keys(0, "conv", t.stem_kernel, t.stem_stride, True), "conv3d")}
    for i, h in t.convs():
        out[h.name] = (*_tf2pt_conv_keys(t.head_module(i), h.kind, h.kernel, h.stride, h.activation),
                       "conv_transpose3d" if h.kind == "deconv" else "conv3d")
    return out


# ---------------------------------------------------------------------------------------------
# the factory
# ---------------------------------------------------------------------------------------------


def highres3dnet_mapping(name: str, table: Table, *, description: str, origin: str, default_classes: int,
                         variables_note: str = "", monai: bool = False, why_no_monai: str = "",
                         verify_overrides: Optional[Dict[str, Any]] = None, source_meta: Optional[Dict] = None,
                         license: str = "NiftyNet: Apache-2.0; weights as published by their authors",
                         tf2pt_description: str = "tf2pt's HighRes3DNet family model") -> Mapping:
    """A complete mapping for one member of the family, generated from ``table``."""
    t = table
    scope = t.scope

    def build_tf2pt(in_channels: int = 1, num_classes: int = default_classes, activation: str = "relu",
                    dropout: float = 0.5, eps: float = BN_EPS):
        from tf2pt.models.highres3dnet import HighRes3DNet

        return HighRes3DNet(t.layout(), in_channels, num_classes, activation, dropout, eps)

    build_tf2pt.__doc__ = f"tf2pt's HighRes3DNet built from the {name} mapping's table."
    tf2pt_layers = _tf2pt_layers(t)

    def spec_tf2pt(in_channels: int = 1, num_classes: int = default_classes, activation: str = "relu",
                   dropout: float = 0.5, eps: float = BN_EPS):
        """``build_tf2pt(...).state_dict()`` as ``{key: (shape, dtype)}``, without torch."""
        out = {}

        def conv(key, cin, cout, k, transposed=False):
            out[f"{key}.weight"] = (((cin, cout) if transposed else (cout, cin)) + (k, k, k), "float32")

        def bn(key, c):
            for p in ("weight", "bias", "running_mean", "running_var"):
                out[f"{key}.{p}"] = ((c,), "float32")
            out[f"{key}.num_batches_tracked"] = ((), "int64")

        def act(key, c):
            if key is not None and activation == "prelu":
                out[f"{key}.weight"] = ((c,), "float32")

        conv_key, bn_key, act_key, _ = tf2pt_layers["conv_0"]
        conv(conv_key, in_channels, t.stem, t.stem_kernel)
        bn(bn_key, t.stem)
        act(act_key, t.stem)
        cin = t.stem
        for s, (_, cout, _) in enumerate(t.stages, start=1):
            for j in range(t.blocks_per_stage):
                for i, c in enumerate((cin, cout)):  # pre-activation: BN and activation on the input
                    bn(_tf2pt_res_key(s, j, i, "bn"), c)
                    act(_tf2pt_res_key(s, j, i, "act"), c)
                    conv(_tf2pt_res_key(s, j, i, "conv"), c, cout, 3)
                cin = cout
        for _, h in t.convs():
            cout = num_classes if h.features is None else h.features
            conv_key, bn_key, act_key, _ = tf2pt_layers[h.name]
            conv(conv_key, cin, cout, h.kernel, transposed=h.kind == "deconv")
            bn(bn_key, cout)
            act(act_key, cout)
            cin = cout
        return out

    # -- rename rules ------------------------------------------------------------------------

    def conv_layer_rows(tf_layer, kind, conv_key, bn_key, act_key, transform) -> List[Rename]:
        leaf = "deconv_" if kind == "deconv" else "conv_"
        rows = [Rename(f"{re.escape(scope)}{tf_layer}/{leaf}/w", f"{conv_key}.weight", transform)]
        rows += [Rename(f"{re.escape(scope)}{tf_layer}/bn_/{tf}", f"{bn_key}.{pt}") for tf, pt in BN_PARAMS]
        if act_key is not None:
            rows.append(Rename(f"{re.escape(scope)}{tf_layer}/{PRELU}acti_/alpha", f"{act_key}.weight"))
        return rows

    def res_rows(key_for) -> List[Rename]:
        rows = []
        for s, (stage, _, _) in enumerate(t.stages, start=1):
            for j in range(t.blocks_per_stage):
                for i in range(2):
                    base = f"{re.escape(scope)}{stage}_{j}"
                    rows.append(Rename(f"{base}/conv_{i}/w", key_for(s, j, i, "conv") + ".weight", "conv3d"))
                    rows += [Rename(f"{base}/bn_{i}/{tf}", key_for(s, j, i, "bn") + f".{pt}") for tf, pt in BN_PARAMS]
                    rows.append(Rename(f"{base}/{PRELU}acti_{i}/alpha", key_for(s, j, i, "act") + ".weight"))
        return rows

    def tf2pt_rules() -> List[Rename]:
        stem = Head("conv_0", "conv", t.stem, t.stem_kernel, t.stem_stride)
        rows = conv_layer_rows(t.tf_layer(stem), "conv", *tf2pt_layers["conv_0"])
        rows += res_rows(_tf2pt_res_key)
        for _, h in t.convs():
            rows += conv_layer_rows(t.tf_layer(h), h.kind, *tf2pt_layers[h.name])
        return rows

    fill = [Fill(r".*num_batches_tracked", 1,
                 "BatchNorm counter with no TF counterpart: 1, as in the published conversion (unused in eval mode)")]

    last = t.convs()[-1][1]

    def model_kwargs(checkpoint) -> Dict[str, Any]:
        """In/out channels and activation, read from the first and last kernels and the layer names."""
        kwargs: Dict[str, Any] = {}
        for var, info in checkpoint.variables.items():
            if re.fullmatch(f"{re.escape(scope)}conv_0_bn_{ACT}/conv_/w", var) and len(info.shape) == 5:
                kwargs["in_channels"] = int(info.shape[3])
                kwargs["activation"] = "prelu" if "_bn_prelu/" in var else "relu"
            elif re.fullmatch(f"{re.escape(scope)}{t.tf_layer(last)}/conv_/w", var) and len(info.shape) == 5:
                kwargs["num_classes"] = int(info.shape[4])
        return kwargs

    # -- the TF reference forward --------------------------------------------------------------

    def tf_reference(variables, x):
        """The network in TF from ``tf.nn`` ops: dilated convolutions (``dilations``), not
        NiftyNet's ``space_to_batch``; ``variables`` maps TF names to arrays, ``x`` is NDHWC.
        Returns ``(logits, {layer: output})``."""
        import tensorflow as tf

        act = "prelu" if f"{scope}conv_0_bn_prelu/conv_/w" in variables else "relu"
        get = lambda v: tf.constant(variables[scope + v])

        def bn(h, s):
            return tf.nn.batch_normalization(h, get(f"{s}/moving_mean"), get(f"{s}/moving_variance"),
                                             get(f"{s}/beta"), get(f"{s}/gamma"), BN_EPS)

        def activation(h, s):
            if act == "relu":
                return tf.nn.relu(h)
            scope_, leaf = s.rsplit("/", 1)
            name = f"{scope_}/prelu_{leaf}/alpha"  # NiftyNet's name, else tf2pt's writer's
            alpha = get(name) if scope + name in variables else get(f"{s}/alpha")
            return tf.nn.relu(h) + alpha * tf.minimum(h, 0.0)

        def conv(h, s, dilation=1, stride=1):
            return tf.nn.convolution(h, get(f"{s}/w"), strides=stride, padding="SAME", dilations=dilation)

        def deconv(h, s, stride):
            w = get(f"{s}/w")
            shape = [int(h.shape[0])] + [int(n) * stride for n in h.shape[1:4]] + [int(w.shape[3])]
            return tf.nn.conv3d_transpose(h, w, shape, [1, stride, stride, stride, 1], "SAME")

        outputs = {}
        h = tf.constant(x)
        layer = f"conv_0_bn_{act}"
        h = outputs["conv_0"] = activation(bn(conv(h, f"{layer}/conv_", stride=t.stem_stride), f"{layer}/bn_"),
                                           f"{layer}/acti_")
        for stage, cout, dilation in t.stages:
            for j in range(t.blocks_per_stage):
                block = f"{stage}_{j}"
                y = h
                for i in range(2):
                    y = conv(activation(bn(y, f"{block}/bn_{i}"), f"{block}/acti_{i}"), f"{block}/conv_{i}", dilation)
                grow = cout - int(h.shape[-1])
                h = outputs[block] = y + tf.pad(h, [[0, 0]] * 4 + [[grow // 2, grow - grow // 2]])
        for _, hd in t.convs():
            layer = t.tf_layer(hd).replace(ACT, act)
            if hd.kind == "deconv":
                h = deconv(h, f"{layer}/deconv_", hd.stride)
            else:
                h = conv(h, f"{layer}/conv_", stride=hd.stride)
            h = bn(h, f"{layer}/bn_")
            if hd.activation:
                h = activation(h, f"{layer}/acti_")
            outputs[hd.name] = h
        return h.numpy(), {k: v.numpy() for k, v in outputs.items()}

    layers = t.layers()
    verify_kwargs = dict(
        tf_input="images:0", tf_output="logits:0", output_kind="logits",
        # NiftyNet asserts multiples of 8; space_to_batch needs the stem's output to divide by each dilation
        spatial_multiple=max(8, t.stem_stride * max(d for _, _, d in t.stages)),
        preprocess=("whiten",), tf_reference=tf_reference, layers=layers, receptive_radius=t.receptive_radius(),
        notes="The graph is the one tf2pt.testing.niftynet_zoo exports from NiftyNet's own network code "
              "(images:0 -> logits:0); override with --tf-input/--tf-output for graphs NiftyNet's engine "
              "exported. Input is z-scored over the foreground (NiftyNet's whitening).",
    )
    verify_kwargs.update(verify_overrides or {})

    def tf2pt_modules() -> Dict[str, str]:
        out = {"conv_0": "block.0"}
        for s, (stage, _, _) in enumerate(t.stages, start=1):
            for j in range(t.blocks_per_stage):
                out[f"{stage}_{j}"] = f"block.{s}.dilation_block.{j}"
        for i, h in t.convs():
            out[h.name] = f"block.{t.head_module(i)}"
        return out

    n_convs = 1 + 2 * len(t.stages) * t.blocks_per_stage + len(t.convs())
    targets = [Target("tf2pt", tf2pt_description, build_tf2pt, tf2pt_rules(), fill, spec=spec_tf2pt,
                      layers=tf2pt_modules(),
                      notes=("" if monai else f"No MONAI target: {why_no_monai}"))]
    if monai:
        targets.append(_monai_target(t, conv_layer_rows, res_rows, fill))
    return Mapping(
        name=name,
        description=description,
        source=Source(
            origin=origin,
            framework="TensorFlow 1 (NiftyNet)",
            scope=scope,
            variables=n_convs * 5,  # ReLU: a kernel and a batch norm's 4 per convolution
            license=license,
            meta={"in_channels": 1, "num_classes": default_classes, "spatial_multiple": verify_kwargs["spatial_multiple"],
                  "bn_eps": BN_EPS, **(source_meta or {})},
        ),
        targets=targets,
        ignore=[TRAINING_ONLY],
        model_kwargs=model_kwargs,
        verify=VerifySpec(**verify_kwargs),
    )


# ---------------------------------------------------------------------------------------------
# MONAI's HighResNet (HighRes3DNet's table only: a 3x3x3 stride-1 stem, stages, two 1x1x1 convs)
# ---------------------------------------------------------------------------------------------


def _monai_target(t: Table, conv_layer_rows, res_rows, fill) -> Target:
    convs = t.convs()
    if t.stem_stride != 1 or len(convs) != 2 or any(h.kind != "conv" or h.kernel != 1 for _, h in convs):
        raise ValueError("MONAI's HighResNet has a stride-1 stem and exactly two 1x1x1 convolutions after the stages")
    n_blocks = len(t.stages) * t.blocks_per_stage

    def build_monai(in_channels: int = 1, num_classes: int = 160, activation: str = "relu", dropout: float = 0.0,
                    eps: float = BN_EPS):
        """MONAI's ``HighResNet`` configured as NiftyNet's, with one change: MONAI applies its
        activation after the last block; NiftyNet's last layer has none and outputs logits, so
        that activation is replaced by ``nn.Identity``."""
        from monai.networks.nets import HighResNet
        from torch import nn

        if activation != "relu":
            from tf2pt.errors import MappingError

            raise MappingError(
                f"target 'monai' supports ReLU checkpoints only, this one uses {activation}",
                hint="MONAI's PReLU has one alpha per layer, NiftyNet's one per channel; use the default target 'tf2pt'",
            )
        params = ([{"name": "conv_0", "n_features": t.stem, "kernel_size": t.stem_kernel}]
                  + [{"name": s, "n_features": c, "kernels": (3, 3), "repeat": t.blocks_per_stage}
                     for s, c, _ in t.stages]
                  + [{"name": convs[0][1].name, "n_features": convs[0][1].features, "kernel_size": 1},
                     {"name": convs[1][1].name, "kernel_size": 1}])
        model = HighResNet(
            spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
            norm_type=("batch", {"affine": True, "eps": eps}), acti_type=("relu", {"inplace": False}),
            dropout_prob=dropout, bias=False, channel_matching="pad", layer_params=params,
        )
        model.blocks[-1].adn.A = nn.Identity()
        return model

    part = {"bn": 0, "act": 0, "conv": 1}

    def key(s, j, i, p):
        block = 1 + (s - 1) * t.blocks_per_stage + j
        index = 2 * i + part[p]
        return f"blocks.{block}.layers.{index}" + (".N" if p == "bn" else ".conv" if p == "conv" else ".A")

    stem = Head("conv_0", "conv", t.stem, t.stem_kernel, 1)
    rows = conv_layer_rows(t.tf_layer(stem), "conv", "blocks.0.conv", "blocks.0.adn.N", None, "conv3d")
    rows += [r for r in res_rows(key) if not r.pattern.endswith("alpha")]
    for n, (_, h) in enumerate(convs):
        block = 1 + n_blocks + n
        rows += conv_layer_rows(t.tf_layer(h), "conv", f"blocks.{block}.conv", f"blocks.{block}.adn.N", None, "conv3d")
    layers = {"conv_0": "blocks.0", convs[0][1].name: f"blocks.{1 + n_blocks}",
              convs[1][1].name: f"blocks.{2 + n_blocks}"}
    for s, (stage, _, _) in enumerate(t.stages, start=1):
        for j in range(t.blocks_per_stage):
            layers[f"{stage}_{j}"] = f"blocks.{1 + (s - 1) * t.blocks_per_stage + j}"
    return Target(
        "monai",
        "MONAI HighResNet, final activation replaced by Identity to output NiftyNet's logits",
        build_monai, rows, fill, requires=("monai",), extra="monai",
        notes="MONAI applies ReLU after its last block; NiftyNet does not. The target swaps it for Identity.",
        layers=layers,
    )
