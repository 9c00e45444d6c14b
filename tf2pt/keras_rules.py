"""Ready rules for Keras layers, by layer class: a mapping for a Keras model is one call per layer.

:func:`keras_layer_rules` returns the :class:`~tf2pt.mapping.Rename` and
:class:`~tf2pt.mapping.Fill` rules that move one Keras layer's weights into one torch module::

    RULES = (keras_layer_rules("conv2d", "Conv2D", "0")
             + keras_layer_rules("batch_normalization", "BatchNormalization", "1")
             + keras_layer_rules("dense", "Dense", "3", feature_map=(4, 4, 8))   # after Flatten
             + keras_layer_rules("bidirectional", "Bidirectional", "lstm", inner="LSTM"))
    Target("default", "...", build, RULES.rename, RULES.fill)

The rules match the weights' readable names, with or without Keras 2's ``:0`` suffix:
``dense_1/kernel``, ``batch_normalization/moving_mean``, ``lstm/lstm_cell/recurrent_kernel``
(older Keras 2 files have no ``lstm_cell/`` level, a Keras 3 file without names may say
``cell/``; all match), ``bidirectional/forward_lstm/lstm_cell/kernel`` (or ``forward_layer/``). ``scope`` prefixes them (a nested model's
name, say). Keys are ``torch_prefix + "." + torch name`` (no dot for an empty prefix).

The torch side, per Keras class:

=============================  ===============================================================
Keras                          torch
=============================  ===============================================================
Dense                          ``nn.Linear`` (``feature_map=(H, W, C)`` after a Flatten of a
                               channels-last map, for a plain ``nn.Flatten`` of NCHW)
Conv1D/2D/3D                   ``nn.ConvNd``; ``tf2pt.nn.ConvNdSame`` for ``padding="same"``
                               with a stride (TF pads asymmetrically)
Conv1D/2D/3DTranspose          ``nn.ConvTransposeNd`` / ``tf2pt.nn.ConvTransposeNdSame``
DepthwiseConv1D/2D             ``nn.ConvNd(in, in * multiplier, groups=in)``
SeparableConv1D/2D             two convs, ``<prefix>.depthwise`` (``groups=in``, no bias) and
                               ``<prefix>.pointwise`` (1x1, with the layer's bias)
BatchNormalization             ``nn.BatchNormNd`` with :func:`torch_kwargs` (its ``eps``)
LayerNormalization             ``nn.LayerNorm(C)`` with :func:`torch_kwargs` (``axis=-1``)
Embedding                      ``nn.Embedding``
LSTM / GRU / SimpleRNN         ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``batch_first=True``), or
                               :mod:`tf2pt.nn.recurrent`'s where torch's cannot compute the
                               layer (see :func:`recurrent_module`)
Bidirectional                  the same, ``bidirectional=True`` (``_reverse`` keys)
=============================  ===============================================================
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping as TMapping, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import MappingError
from .mapping import Fill, Rename
from .transforms import dense_after_flatten


class Rules(NamedTuple):
    """Rename and fill rules; ``+`` joins them."""

    rename: Sequence[Rename] = ()
    fill: Sequence[Fill] = ()

    def __add__(self, other: "Rules") -> "Rules":  # type: ignore[override]
        return Rules(list(self.rename) + list(other.rename), list(self.fill) + list(other.fill))


#: the Keras layer classes :func:`keras_layer_rules` knows
LAYER_CLASSES = ("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                 "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "BatchNormalization",
                 "LayerNormalization", "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional")

#: the recurrent classes' default activations (Keras 2 and 3 agree since TF 2.0)
_RECURRENT_DEFAULTS = {"LSTM": ("tanh", "sigmoid"), "GRU": ("tanh", "sigmoid"), "SimpleRNN": ("tanh", None)}


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _cfg(config: Optional[TMapping[str, Any]]) -> Dict[str, Any]:
    """A layer config, from either ``get_config()`` or a file's ``{"class_name", "config"}``."""
    if not config:
        return {}
    if "config" in config and "class_name" in config:
        return dict(config["config"])
    return dict(config)


def keras_layer_rules(layer_name: str, layer_class: str, torch_prefix: str, config: Optional[TMapping[str, Any]] = None,
                      *, scope: str = "", feature_map: Optional[Sequence[int]] = None, inner: Optional[str] = None,
                      depthwise: str = "depthwise", pointwise: str = "pointwise") -> Rules:
    """The rules for one Keras layer named ``layer_name`` of class ``layer_class`` into the torch
    module at ``torch_prefix`` (see the module docstring for which module).

    ``config`` is the layer's config (``layer.get_config()``, or what a Keras file stores) and
    decides what the weights are: ``use_bias``, ``center``/``scale``, a GRU's ``reset_after``, a
    Bidirectional's inner layer. Missing keys take Keras' defaults. ``feature_map`` (Dense only):
    the channels-last shape flattened into this layer, ``(H, W, C)`` or ``(L, C)`` or
    ``(D, H, W, C)``. ``inner`` (Bidirectional only): the wrapped class, when ``config`` does
    not say. Raises :class:`~tf2pt.errors.MappingError` for a class or configuration these
    rules cannot convert exactly.
    """
    cfg = _cfg(config)
    where = re.escape(scope + layer_name) + "/"
    if layer_class not in LAYER_CLASSES:
        raise MappingError(f"no ready rules for Keras layer class {layer_class!r} (layer {layer_name!r})",
                           hint="known: " + ", ".join(LAYER_CLASSES))
    if feature_map is not None and layer_class != "Dense":
        raise MappingError(f"feature_map is for a Dense layer after a Flatten, not {layer_class!r} ({layer_name!r})")

    def rule(weight: str, key: str, transform: Any = "identity", cell: str = "") -> Rename:
        return Rename(where + cell + weight + r"(?::\d+)?", _key(torch_prefix, key), transform)

    use_bias = bool(cfg.get("use_bias", True))
    if layer_class == "Dense":
        transform = "dense" if feature_map is None else dense_after_flatten(*feature_map)
        rules = [rule("kernel", "weight", transform)]
        return Rules(rules + ([rule("bias", "bias")] if use_bias else []), [])
    m = re.fullmatch(r"(Conv|DepthwiseConv|SeparableConv)([123])D(Transpose)?", layer_class)
    if m:
        kind, nd, transpose = m.group(1), m.group(2), m.group(3)
        if kind == "Conv":
            transform = f"conv_transpose{nd}d" if transpose else f"conv{nd}d"
            rules = [rule("kernel", "weight", transform)]
            return Rules(rules + ([rule("bias", "bias")] if use_bias else []), [])
        if kind == "DepthwiseConv":  # Keras 3 names the kernel "kernel", Keras 2 "depthwise_kernel"
            rules = [rule("(?:depthwise_)?kernel", "weight", f"depthwise{nd}d")]
            return Rules(rules + ([rule("bias", "bias")] if use_bias else []), [])
        rules = [rule("depthwise_kernel", _key(depthwise, "weight"), f"depthwise{nd}d"),
                 rule("pointwise_kernel", _key(pointwise, "weight"), f"conv{nd}d")]
        return Rules(rules + ([rule("bias", _key(pointwise, "bias"))] if use_bias else []), [])
    if layer_class in ("BatchNormalization", "LayerNormalization"):
        if cfg.get("rms_scaling"):
            raise MappingError(f"layer {layer_name!r}: LayerNormalization(rms_scaling=True) is not nn.LayerNorm",
                               hint="map it by hand onto an RMS norm module")
        center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
        rules, fills = [], []
        if scale:
            rules.append(rule("gamma", "weight"))
        if center:
            rules.append(rule("beta", "bias"))
        if center != scale:  # torch's affine is both or neither
            missing, value = ("weight", 1.0) if not scale else ("bias", 0.0)
            fills.append(Fill(re.escape(_key(torch_prefix, missing)), value,
                              f"Keras {layer_class}({'scale' if not scale else 'center'}=False): no "
                              f"{'gamma' if not scale else 'beta'}, so torch's {missing} is {value}"))
        if layer_class == "BatchNormalization":
            rules += [rule("moving_mean", "running_mean"), rule("moving_variance", "running_var")]
            fills.append(Fill(re.escape(_key(torch_prefix, "num_batches_tracked")), 0,
                              "BatchNorm counter, not in Keras"))
        return Rules(rules, fills)
    if layer_class == "Embedding":
        return Rules([rule("embeddings", "weight")], [])
    if layer_class == "Bidirectional":
        layer = cfg.get("layer") or {}
        inner_class = inner or layer.get("class_name")
        if inner_class not in _RECURRENT_DEFAULTS:
            raise MappingError(f"layer {layer_name!r}: Bidirectional needs the wrapped class (LSTM, GRU or SimpleRNN), "
                               f"got {inner_class!r}", hint="pass inner='LSTM' (or the config)")
        inner_cfg = _cfg(layer)
        if cfg.get("merge_mode", "concat") != "concat":
            raise MappingError(f"layer {layer_name!r}: Bidirectional(merge_mode={cfg['merge_mode']!r}); torch's "
                               "bidirectional layers concatenate", hint="only merge_mode='concat' maps onto them")
        out = Rules()
        for direction, suffix in (("forward", "_l0"), ("backward", "_l0_reverse")):
            out = out + _recurrent_rules(where + direction + r"_[^/]+/", inner_class, inner_cfg, torch_prefix, suffix,
                                         layer_name)
        return out
    if cfg.get("go_backwards"):
        raise MappingError(f"layer {layer_name!r}: {layer_class}(go_backwards=True) reads its input reversed; torch's "
                           "layers do not", hint="flip the input along time before the torch layer, and map it as usual")
    return _recurrent_rules(where, layer_class, cfg, torch_prefix, "_l0", layer_name)


def _recurrent_rules(where: str, layer_class: str, cfg: Dict[str, Any], prefix: str, suffix: str,
                     layer_name: str) -> Rules:
    # "lstm_cell/" since TF 2 (a Keras 3 file without names: "cell/"); old Keras 2 files have none
    cell = r"(?:(?:[^/]+_)?cell/)?"

    def rule(weight: str, key: str, transform: str) -> Rename:
        return Rename(where + cell + weight + r"(?::\d+)?", _key(prefix, key + suffix), transform)

    use_bias = bool(cfg.get("use_bias", True))
    zero_hh = Fill(re.escape(_key(prefix, "bias_hh" + suffix)), 0.0,
                   f"Keras {layer_class} has one bias; torch's second (recurrent) bias is zero")
    if layer_class in ("LSTM", "SimpleRNN"):
        rules = [rule("kernel", "weight_ih", "dense"), rule("recurrent_kernel", "weight_hh", "dense")]
        if not use_bias:
            return Rules(rules, [])
        return Rules(rules + [rule("bias", "bias_ih", "identity")], [zero_hh])
    # GRU
    rules = [rule("kernel", "weight_ih", "gru_kernel"), rule("recurrent_kernel", "weight_hh", "gru_kernel")]
    if not use_bias:
        return Rules(rules, [])
    if cfg.get("reset_after", True):
        return Rules(rules + [rule("bias", "bias_ih", "gru_bias_ih"), rule("bias", "bias_hh", "gru_bias_hh")], [])
    return Rules(rules + [rule("bias", "bias_ih", "gru_bias")],
                 [Fill(re.escape(_key(prefix, "bias_hh" + suffix)), 0.0,
                       "Keras GRU(reset_after=False) has one bias; the recurrent bias is zero")])


def keras_activation(name: Any, keras_version: Optional[int] = None) -> str:
    """A Keras activation (a name, or a serialised ``{"class_name": ..}`` dict) as a
    :data:`tf2pt.nn.ACTIVATIONS` name. ``hard_sigmoid`` needs ``keras_version``: Keras 2 means
    ``clip(0.2x + 0.5)`` by it, Keras 3 ``clip(x/6 + 0.5)`` (torch's ``Hardsigmoid``)."""
    if isinstance(name, dict):
        inner = name.get("config")
        name = inner.get("name") if isinstance(inner, dict) and "name" in inner else name.get("class_name")
    if name is None:
        return "linear"
    name = str(name)
    if name == "hard_sigmoid":
        if keras_version not in (2, 3):
            raise MappingError("the layer uses 'hard_sigmoid', which Keras 2 and Keras 3 define differently "
                               "(clip(0.2x + 0.5, 0, 1) vs torch's Hardsigmoid, clip(x/6 + 0.5, 0, 1))",
                               hint="say which Keras wrote the file: keras_version=2 or 3")
        return f"keras{keras_version}_hard_sigmoid"
    return name


def torch_kwargs(layer_class: str, config: Optional[TMapping[str, Any]] = None,
                 input_rank: Optional[int] = None) -> Dict[str, Any]:
    """Keyword arguments for the torch module that takes a Keras layer's weights, from the
    layer's config: for BatchNormalization and LayerNormalization their ``eps`` (Keras'
    default is 1e-3, torch's 1e-5; momentum does not matter for inference) and ``affine`` /
    ``elementwise_affine``; for the recurrent layers ``hidden_size``, ``bias`` and
    ``batch_first=True`` (Keras is batch-major)."""
    cfg = _cfg(config)
    if layer_class == "BatchNormalization":
        axis = cfg.get("axis", -1)
        if isinstance(axis, (list, tuple)):
            axis = axis[0] if len(axis) == 1 else axis
        if not isinstance(axis, int):
            raise MappingError(f"BatchNormalization over axes {axis!r} has no torch BatchNorm")
        return {"eps": float(cfg.get("epsilon", 1e-3)), "affine": bool(cfg.get("center", True) or cfg.get("scale", True))}
    if layer_class == "LayerNormalization":
        axis = cfg.get("axis", -1)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        # Keras 2 stores the axis made positive once built ([2] for a [batch, time, C] input)
        last = -1 if input_rank is None else input_rank - 1
        if len(axes) != 1 or not isinstance(axes[0], int) or (axes[0] >= 0 and input_rank is not None
                                                              and axes[0] != last) or (axes[0] < 0 and axes[0] != -1):
            raise MappingError(f"LayerNormalization(axis={list(axes)!r}) normalises other axes than nn.LayerNorm(C), "
                               "which normalises the last", hint="only the last axis maps onto nn.LayerNorm(C) directly")
        return {"eps": float(cfg.get("epsilon", 1e-3)),
                "elementwise_affine": bool(cfg.get("center", True) or cfg.get("scale", True))}
    if layer_class in _RECURRENT_DEFAULTS:
        return {"hidden_size": int(cfg["units"]), "bias": bool(cfg.get("use_bias", True)), "batch_first": True}
    raise MappingError(f"torch_kwargs knows BatchNormalization, LayerNormalization, LSTM, GRU and SimpleRNN, not {layer_class!r}")


def recurrent_module(layer_class: str, config: TMapping[str, Any], input_size: int, bidirectional: bool = False,
                     keras_version: Optional[int] = None):
    """The torch module for a Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` (``batch_first=True``):
    ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` where they compute the layer exactly, else
    :mod:`tf2pt.nn.recurrent`'s (a GRU with ``reset_after=False``, activations torch's do not
    have, such as Keras 2's ``hard_sigmoid``). The rules of :func:`keras_layer_rules` fill both."""
    from torch import nn

    from . import nn as tfnn

    cfg = _cfg(config)
    kwargs = dict(torch_kwargs(layer_class, cfg), bidirectional=bidirectional)
    act_default, rec_default = _RECURRENT_DEFAULTS[layer_class]
    act = keras_activation(cfg.get("activation", act_default), keras_version)
    rec = keras_activation(cfg.get("recurrent_activation", rec_default), keras_version) if rec_default else None
    if layer_class == "SimpleRNN":
        if act in ("tanh", "relu"):
            return nn.RNN(input_size, nonlinearity=act, **kwargs)
        return tfnn.SimpleRNN(input_size, activation=act, **kwargs)
    exact = act == "tanh" and rec == "sigmoid"
    if layer_class == "LSTM":
        return nn.LSTM(input_size, **kwargs) if exact else tfnn.LSTM(input_size, activation=act, recurrent_activation=rec,
                                                                     **kwargs)
    reset_after = bool(cfg.get("reset_after", True))
    if exact and reset_after:
        return nn.GRU(input_size, **kwargs)
    return tfnn.GRU(input_size, activation=act, recurrent_activation=rec, reset_after=reset_after, **kwargs)


def tf1_cell_rules(scope: str, cell_class: str, torch_prefix: str, *, forget_bias: float = 1.0,
                   num_proj: Optional[int] = None, suffix: str = "_l0") -> Rules:
    """Rules for a TF1 ``tf.compat.v1.nn.rnn_cell`` cell whose variables live under ``scope``
    (e.g. ``rnn/lstm_cell/``):

    * ``LSTMCell`` / ``BasicLSTMCell`` (``kernel [in + u, 4u]`` i,j,f,o, ``bias``) into
      ``nn.LSTM``: the kernel split into ``weight_ih``/``weight_hh``, the gates reordered to
      i,f,g,o, the cell's run-time ``forget_bias`` (never stored) folded into the f bias, the
      recurrent bias zero. ``num_proj``: the ``projection/kernel`` into ``weight_hr``
      (``nn.LSTM(proj_size=num_proj)``). Peepholes and clipping have no torch equivalent:
      those variables are refused by the plan (no rule matches them).
    * ``GRUCell`` into :class:`tf2pt.nn.TF1GRU` (``nn.GRU`` resets after the matmul, TF1 before).
    """
    where = re.escape(scope.rstrip("/") + "/") if scope else ""

    def rule(weight: str, key: str, transform) -> Rename:
        return Rename(where + weight + r"(?::\d+)?", _key(torch_prefix, key), transform)

    if cell_class in ("LSTMCell", "BasicLSTMCell"):
        from .transforms import tf1_lstm_bias, tf1_lstm_kernel

        rules = [rule("kernel", "weight_ih" + suffix, tf1_lstm_kernel("ih", num_proj)),
                 rule("kernel", "weight_hh" + suffix, tf1_lstm_kernel("hh", num_proj)),
                 rule("bias", "bias_ih" + suffix, tf1_lstm_bias(forget_bias))]
        if num_proj is not None:
            rules.append(rule("projection/kernel", "weight_hr" + suffix, "dense"))
        return Rules(rules, [Fill(re.escape(_key(torch_prefix, "bias_hh" + suffix)), 0.0,
                                  "TF1 LSTMCell has one bias; torch's recurrent bias is zero")])
    if cell_class == "GRUCell":
        return Rules([rule("gates/kernel", "gates_weight_ih", "tf1_gru_gates_kernel_ih"),
                      rule("gates/kernel", "gates_weight_hh", "tf1_gru_gates_kernel_hh"),
                      rule("gates/bias", "gates_bias", "identity"),
                      rule("candidate/kernel", "candidate_weight_ih", "tf1_gru_candidate_kernel_ih"),
                      rule("candidate/kernel", "candidate_weight_hh", "tf1_gru_candidate_kernel_hh"),
                      rule("candidate/bias", "candidate_bias", "identity")], [])
    raise MappingError(f"no ready rules for TF1 cell {cell_class!r}", hint="known: LSTMCell, BasicLSTMCell, GRUCell")
