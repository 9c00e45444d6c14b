"""Layer kinds: how TF variables group into a layer, how torch modules hold one, and which layout
transform carries each TF variable to each torch key. A new layer family (Keras LSTM/GRU, ...) is
a row in :data:`TF_ROLES`/:func:`classify_tf` and an entry in :data:`TORCH_KINDS`.

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
    if keys in ({"depthwise_kernel"}, {"depthwise_kernel", "bias"}) and len(roles["depthwise_kernel"]) == 4:
        return "depthwise"
    if {"moving_mean", "moving_variance"} <= keys <= {"gamma", "beta", "moving_mean", "moving_variance"}:
        return "batchnorm"
    if keys == {"alpha"}:
        return "prelu"
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

    def transform(self, role: str, tf_shape: Shape, layout: Optional[str] = None) -> str:
        """The transform for a TF variable of ``role``; ``layout="transposed"``: the graph reads
        the kernel transposed (``MatMul`` with ``transpose_b``), so it already is torch's."""
        if layout == "transposed" and self.name == "dense" and role == "kernel":
            return "identity"
        t = self.transforms.get(role, "identity")
        return t(tf_shape) if callable(t) else t


BN_FILL = {"num_batches_tracked": (1, "BatchNorm counter with no TF counterpart: 1 marks the statistics as "
                                      "trained (tf2pt's convention, as in the published HighRes3DNet conversion); "
                                      "unused in eval mode")}

TORCH_KINDS: Dict[str, TorchKind] = {k.name: k for k in [
    TorchKind("conv", "conv", {"weight": "kernel", "bias": "bias"}, {"kernel": _conv_transform("conv")}),
    TorchKind("conv_transpose", "conv_transpose", {"weight": "kernel", "bias": "bias"},
              {"kernel": _conv_transform("conv_transpose")}),
    TorchKind("depthwise", "depthwise", {"weight": "depthwise_kernel", "bias": "bias"},
              {"depthwise_kernel": "depthwise2d"}),
    TorchKind("dense", "dense", {"weight": "kernel", "bias": "bias"}, {"kernel": "dense"}),
    TorchKind("batchnorm", "batchnorm",
              {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"},
              fills=BN_FILL),
    TorchKind("prelu", "prelu", {"weight": "alpha"}),
]}


def classify_torch(module) -> Optional[str]:
    """The :data:`TORCH_KINDS` name of a torch module, or ``None`` (an unknown module with state)."""
    from torch import nn

    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "conv_transpose"
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels \
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
    return None


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
            bias = "" if ("bias" in shapes) else ", no bias"
            return f"{kind or 'conv'} {k(spatial)}, {cin}->{cout}{bias}"
    if kind == "dense":
        s = shapes.get("weight" if torch_layout else "kernel")
        if s is not None:
            cin, cout = (s[1], s[0]) if torch_layout else s
            return f"dense {cin}->{cout}"
    if kind in ("batchnorm", "prelu"):
        any_shape = next(iter(shapes.values()), ())
        return f"{kind} {k(any_shape) or 'scalar'}"
    return (kind or "unknown") + " " + ", ".join(f"{n} {list(s)}" for n, s in sorted(shapes.items()))
