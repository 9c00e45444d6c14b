"""Layer kinds: how TF variables group into a layer, how torch modules hold one, and which layout
transform carries each TF variable to each torch key. A new layer family is a row in
:data:`TF_ROLES`/:func:`classify_tf` (or, for Keras files, :data:`KERAS_CLASSES`) and an entry in
:data:`TORCH_KINDS`.

The recurrent rows reuse the transforms the hand-written Keras rules use
(:func:`tf2pt.keras_rules.keras_layer_rules`): Keras' LSTM gates i,f,c,o are torch's i,f,g,o
(``dense``: transposed only), a GRU's z,r,h become torch's r,z,n (``gru_kernel``, ``gru_bias*``);
a Bidirectional layer's backward copy fills the ``_reverse`` keys (roles ``reverse_*``).

Everything here is data and pure functions: no torch at import time, no TensorFlow ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

Shape = Tuple[int, ...]

#: TF leaf names -> the role the variable plays in its layer
TF_ROLES: Dict[str, str] = {
    "kernel": "kernel", "w": "kernel", "W": "kernel", "weights": "kernel", "filter": "kernel", "filters": "kernel",
    "bias": "bias", "b": "bias", "biases": "bias",
    "gamma": "gamma", "scale": "gamma",
    "beta": "beta", "offset": "beta",
    "moving_mean": "moving_mean", "moving_variance": "moving_variance",
    "alpha": "alpha",
    "depthwise_kernel": "depthwise_kernel",
    # Keras layers
    "recurrent_kernel": "recurrent_kernel", "pointwise_kernel": "pointwise_kernel", "embeddings": "embeddings",
}

#: Keras layer classes -> the kind of layer they are (SeparableConv is split into its depthwise and
#: pointwise halves; Bidirectional takes its wrapped layer's kind; see tflayers.keras_layers)
KERAS_CLASSES: Dict[str, str] = {
    "Dense": "dense", "Conv1D": "conv", "Conv2D": "conv", "Conv3D": "conv",
    "Conv1DTranspose": "conv_transpose", "Conv2DTranspose": "conv_transpose", "Conv3DTranspose": "conv_transpose",
    "DepthwiseConv1D": "depthwise", "DepthwiseConv2D": "depthwise",
    "SeparableConv1D": "separable", "SeparableConv2D": "separable",
    "BatchNormalization": "batchnorm", "LayerNormalization": "layernorm", "Embedding": "embedding",
    "PReLU": "prelu", "LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn",
}

#: TF graph ops that consume a kernel, by what they say about the layer
CONV_OPS = {"Conv1D", "Conv2D", "Conv3D"}
CONV_TRANSPOSE_OPS = {"Conv2DBackpropInput", "Conv3DBackpropInput", "Conv3DBackpropInputV2"}
DENSE_OPS = {"MatMul", "BatchMatMul", "BatchMatMulV2"}
DEPTHWISE_OPS = {"DepthwiseConv2dNative"}
BATCHNORM_OPS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}


def classify_tf(roles: Dict[str, Shape], op: Optional[str], name: str) -> Optional[str]:
    """The kind of a TF layer from its variables' roles and shapes, the graph op that reads its
    kernel (``None`` without a graph) and its scope name (a hint only where the graph is missing):
    ``conv``, ``conv_transpose``, ``dense``, ``depthwise``, ``batchnorm``, ``prelu``; ``None``
    when the variables fit no known kind."""
    keys = set(roles)
    if keys in ({"kernel"}, {"kernel", "bias"}):
        rank = len(roles["kernel"])
        if rank == 2:
            return "dense"
        if rank not in (3, 4, 5):
            return None
        if op in CONV_TRANSPOSE_OPS:
            return "conv_transpose"
        if op in DEPTHWISE_OPS:
            return "depthwise" if rank == 4 else None
        if op is None and any(t in name.lower() for t in ("transpose", "deconv")):
            return "conv_transpose"
        return "conv"
    if keys in ({"depthwise_kernel"}, {"depthwise_kernel", "bias"}) and len(roles["depthwise_kernel"]) in (3, 4):
        return "depthwise"
    if keys == {"embeddings"} and len(roles["embeddings"]) == 2:
        return "embedding"
    recurrent = classify_recurrent(roles)
    if recurrent is not None:
        return recurrent
    if {"moving_mean", "moving_variance"} <= keys <= {"gamma", "beta", "moving_mean", "moving_variance"}:
        return "batchnorm"
    if keys == {"alpha"}:
        return "prelu"
    return None


def classify_recurrent(roles: Dict[str, Shape]) -> Optional[str]:
    """``lstm``, ``gru`` (a ``reset_after`` bias ``[2, 3u]``), ``gru_reset_before`` (a ``[3u]``
    bias) or ``rnn`` from a Keras recurrent layer's kernels: ``recurrent_kernel [u, g * u]``
    says the gate count ``g``; a Bidirectional layer's ``reverse_*`` copy must agree."""
    keys = set(roles)
    forward = {k for k in keys if not k.startswith("reverse_")}
    if not {"kernel", "recurrent_kernel"} <= forward <= {"kernel", "recurrent_kernel", "bias"}:
        return None
    if keys - forward and {f"reverse_{k}" for k in forward} != keys - forward:
        return None
    kernel, rec = roles["kernel"], roles["recurrent_kernel"]
    if len(kernel) != 2 or len(rec) != 2 or rec[0] < 1 or kernel[1] != rec[1] or rec[1] % rec[0]:
        return None
    gates = rec[1] // rec[0]
    bias = roles.get("bias")
    if gates == 4:
        return "lstm" if bias is None or tuple(bias) == (rec[1],) else None
    if gates == 1:
        return "rnn" if bias is None or tuple(bias) == (rec[1],) else None
    if gates == 3:
        if bias is None or tuple(bias) == (2, rec[1]):
            return "gru"
        return "gru_reset_before" if tuple(bias) == (rec[1],) else None
    return None


def _conv_transform(prefix: str) -> Callable[[Shape], str]:
    return lambda shape: f"{prefix}{len(shape) - 2}d"


@dataclass(frozen=True)
class TorchKind:
    """One family of torch modules: which TF kind fills it, and how each of its keys is filled."""

    name: str
    tf_kind: str
    #: torch key (the module's local name) -> TF role
    params: Dict[str, str]
    #: TF role -> transform name, or a function of the TF shape giving it
    transforms: Dict[str, object] = field(default_factory=dict)
    #: torch keys with no TF counterpart -> (value, reason)
    fills: Dict[str, Tuple[object, str]] = field(default_factory=dict)
    #: torch key -> transform, where one TF variable fills two keys differently (a GRU's bias)
    key_transforms: Dict[str, str] = field(default_factory=dict)

    def transform(self, role: str, tf_shape: Shape, layout: Optional[str] = None, key: Optional[str] = None,
                  flatten: Optional[Shape] = None) -> str:
        """The transform for a TF variable of ``role`` going to torch key ``key``;
        ``layout="transposed"``: the graph reads the kernel transposed (``MatMul`` with
        ``transpose_b``), so it already is torch's. ``flatten``: the module is a ``Linear``
        that reads a channels-first map flattened, whose TF (channels-last) shape this is."""
        if self.name == "dense" and role == "kernel":
            if layout == "transposed":
                return "identity"
            if flatten is not None:
                return "dense_after_flatten:" + "x".join(str(int(s)) for s in flatten)
        if key is not None and key in self.key_transforms:
            return self.key_transforms[key]
        t = self.transforms.get(role, "identity")
        return t(tf_shape) if callable(t) else t


BN_FILL = {"num_batches_tracked": (1, "BatchNorm counter with no TF counterpart: 1 marks the statistics as "
                                      "trained (tf2pt's convention, as in the published HighRes3DNet conversion); "
                                      "unused in eval mode")}

def _recurrent(gates: str, bias_ih: Optional[str], bias_hh: Optional[str], reason: Optional[str]):
    """params, transforms, fills and key transforms of a recurrent kind, both directions."""
    params, fills, key_t = {}, {}, {}
    for suffix, prefix in (("_l0", ""), ("_l0_reverse", "reverse_")):
        params[f"weight_ih{suffix}"] = prefix + "kernel"
        params[f"weight_hh{suffix}"] = prefix + "recurrent_kernel"
        params[f"bias_ih{suffix}"] = prefix + "bias"
        key_t[f"weight_ih{suffix}"] = key_t[f"weight_hh{suffix}"] = gates
        if bias_ih:
            key_t[f"bias_ih{suffix}"] = bias_ih
        if bias_hh:  # the one TF bias also fills the recurrent one
            params[f"bias_hh{suffix}"] = prefix + "bias"
            key_t[f"bias_hh{suffix}"] = bias_hh
        else:
            fills[f"bias_hh{suffix}"] = (0.0, reason)
    return params, fills, key_t


def _recurrent_kind(name: str, gates: str, bias_ih: Optional[str], bias_hh: Optional[str] = None,
                    reason: Optional[str] = None) -> "TorchKind":
    params, fills, key_t = _recurrent(gates, bias_ih, bias_hh, reason)
    return TorchKind(name, name, params, fills=fills, key_transforms=key_t)


TORCH_KINDS: Dict[str, TorchKind] = {k.name: k for k in [
    TorchKind("conv", "conv", {"weight": "kernel", "bias": "bias"}, {"kernel": _conv_transform("conv")}),
    TorchKind("conv_transpose", "conv_transpose", {"weight": "kernel", "bias": "bias"},
              {"kernel": _conv_transform("conv_transpose")}),
    TorchKind("depthwise", "depthwise", {"weight": "depthwise_kernel", "bias": "bias"},
              {"depthwise_kernel": _conv_transform("depthwise")}),
    TorchKind("dense", "dense", {"weight": "kernel", "bias": "bias"}, {"kernel": "dense"}),
    TorchKind("batchnorm", "batchnorm",
              {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"},
              fills=BN_FILL),
    TorchKind("prelu", "prelu", {"weight": "alpha"}),
    TorchKind("embedding", "embedding", {"weight": "embeddings"}),
    TorchKind("layernorm", "layernorm", {"weight": "gamma", "bias": "beta"}),
    _recurrent_kind("lstm", "dense", None,
                    reason="Keras LSTM has one bias; torch's second (recurrent) bias is zero"),
    _recurrent_kind("rnn", "dense", None,
                    reason="Keras SimpleRNN has one bias; torch's second (recurrent) bias is zero"),
    _recurrent_kind("gru", "gru_kernel", "gru_bias_ih", "gru_bias_hh"),
    _recurrent_kind("gru_reset_before", "gru_kernel", "gru_bias",
                    reason="Keras GRU(reset_after=False) has one bias; the recurrent bias is zero"),
]}


def classify_torch(module) -> Optional[str]:
    """The :data:`TORCH_KINDS` name of a torch module, or ``None`` (an unknown module with state)."""
    from torch import nn

    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "conv_transpose"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1 and module.groups == module.in_channels \
            and module.out_channels % module.in_channels == 0:
        return "depthwise"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv" if module.groups == 1 else None
    if isinstance(module, nn.Linear):
        return "dense"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return "batchnorm"
    if isinstance(module, nn.PReLU):
        return "prelu"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.LayerNorm):
        return "layernorm" if len(module.normalized_shape) == 1 else None
    return _classify_recurrent_module(module)


def _classify_recurrent_module(module) -> Optional[str]:
    """torch's and tf2pt.nn's one-layer LSTM/GRU/RNN (a stacked ``num_layers > 1`` one holds
    several TF layers: no kind)."""
    from torch import nn

    from ..nn import recurrent as tfr

    if isinstance(module, nn.RNNBase):
        if module.num_layers != 1 or getattr(module, "proj_size", 0):
            return None
        return {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}.get(module.mode)
    if isinstance(module, tfr.LSTM):
        return "lstm"
    if isinstance(module, tfr.GRU):
        return "gru" if module.reset_after else "gru_reset_before"
    if isinstance(module, tfr.SimpleRNN):
        return "rnn"
    return None


RECURRENT_KINDS = ("lstm", "gru", "gru_reset_before", "rnn")


def describe_shapes(kind: Optional[str], shapes: Dict[str, Shape], torch_layout: bool = False) -> str:
    """``conv 3x3x3, 16->32``-style words for a layer (TF layout, or torch's)."""
    def k(s):
        return "x".join(map(str, s))

    if kind in ("conv", "conv_transpose", "depthwise") or (kind is None and len(shapes.get("kernel", ())) >= 3):
        key = "weight" if torch_layout else ("depthwise_kernel" if kind == "depthwise" else "kernel")
        s = shapes.get(key)
        if s is not None:
            if torch_layout:
                cin, cout = (s[0], s[1]) if kind == "conv_transpose" else (s[1], s[0])
                spatial = s[2:]
            else:
                spatial = s[:-2]
                cin, cout = (s[-1], s[-2]) if kind == "conv_transpose" else (s[-2], s[-1])
                if kind == "depthwise":  # [..., in, multiplier]
                    cout = s[-2] * s[-1]
            bias = "" if ("bias" in shapes) else ", no bias"
            return f"{kind or 'conv'} {k(spatial)}, {cin}->{cout}{bias}"
    if kind == "dense":
        s = shapes.get("weight" if torch_layout else "kernel")
        if s is not None:
            cin, cout = (s[1], s[0]) if torch_layout else s
            return f"dense {cin}->{cout}"
    if kind in ("batchnorm", "prelu", "layernorm"):
        any_shape = next(iter(shapes.values()), ())
        return f"{kind} {k(any_shape) or 'scalar'}"
    if kind == "embedding":
        s = shapes.get("weight" if torch_layout else "embeddings")
        if s is not None and len(s) == 2:
            return f"embedding {s[0]}x{s[1]}"
    if kind in RECURRENT_KINDS:
        ih = shapes.get("weight_ih_l0" if torch_layout else "kernel")
        hh = shapes.get("weight_hh_l0" if torch_layout else "recurrent_kernel")
        if ih is not None and hh is not None and len(ih) == 2 and len(hh) == 2:
            cin, units = (ih[1], hh[1]) if torch_layout else (ih[0], hh[0])
            two = any(n.endswith("_reverse") or n.startswith("reverse_") for n in shapes)
            bias = "" if any(n.startswith(("bias", "reverse_bias")) for n in shapes) else ", no bias"
            return f"{kind} {cin}->{units}{', bidirectional' if two else ''}{bias}"
    return (kind or "unknown") + " " + ", ".join(f"{n} {list(s)}" for n, s in sorted(shapes.items()))
