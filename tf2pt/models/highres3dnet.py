"""PyTorch HighRes3DNet (NiftyNet's architecture), with the published weights' state-dict layout.

See ``mappings/highresnet.py`` for the architecture notes (pre-activation residual blocks,
channel zero-padding, dilation by ``space_to_batch`` and its equivalence to dilated convolution).

The model takes its layer table as a parameter (as MONAI's ``HighResNet`` takes
``layer_params``): NiftyNet's table is a source fact, declared once by the mapping that builds
the model, and this module imports no mapping.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

from torch import nn

from tf2pt.nn import Conv3dSame, ConvTranspose3dSame


class HeadLayer(NamedTuple):
    """One layer after the residual stages: ``kind`` is ``"conv"`` (conv, BN, [activation]),
    ``"deconv"`` (TF ``SAME`` transposed conv, BN, [activation]) or ``"dropout"``;
    ``features`` ``None`` means the number of classes."""

    kind: str
    features: Optional[int] = None
    kernel: int = 1
    stride: int = 1
    activation: bool = True


class Layout(NamedTuple):
    """A HighRes3DNet family member's layer table: the stem's channels, the residual stages
    ``(name, channels, dilation)``, the blocks per stage and the 1x1x1 feature layer's channels;
    optionally the stem's kernel and stride and the layers after the stages (``head``; default
    NiftyNet HighRes3DNet's: 1x1x1 conv to ``features``, dropout, 1x1x1 conv to the classes)."""

    stem: int
    stages: Sequence[Tuple[str, int, int]]
    blocks_per_stage: int
    features: int
    stem_kernel: int = 3
    stem_stride: int = 1
    head: Optional[Sequence[HeadLayer]] = None

    def head_layers(self) -> Sequence[HeadLayer]:
        if self.head is not None:
            return self.head
        return (HeadLayer("conv", self.features, 1), HeadLayer("dropout"), HeadLayer("conv", None, 1, activation=False))


def _activation(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(num_parameters=channels)  # NiftyNet's alpha is per channel
    raise ValueError(f"activation must be 'relu' or 'prelu', not {name!r}")


class ConvolutionalBlock(nn.Module):
    """``convolutional_block`` = [pad], conv, BN, [activation]  (post-activation), or
    BN, activation, [pad], conv  (pre-activation, inside residual blocks)."""

    def __init__(self, cin, cout, kernel=3, dilation=1, preactivation=False, activation="relu", eps=1e-5, stride=1):
        super().__init__()
        if stride > 1:  # TF SAME with a stride: one-sided padding, computed from the input size
            pad = [nn.Identity()] if kernel > 1 else []
            conv = Conv3dSame(cin, cout, kernel, stride=stride, bias=False)
        else:
            pad = [nn.ConstantPad3d(dilation * (kernel // 2), 0.0)] if kernel > 1 else []
            conv = nn.Conv3d(cin, cout, kernel, dilation=dilation, bias=False)
        if preactivation:
            layers = [nn.BatchNorm3d(cin, eps=eps), _activation(activation, cin), *pad, conv]
        else:
            layers = [*pad, conv, nn.BatchNorm3d(cout, eps=eps)]
            if activation is not None:
                layers.append(_activation(activation, cout))
        self.convolutional_block = nn.Sequential(*layers)

    def forward(self, x):
        return self.convolutional_block(x)


class DeconvolutionalBlock(nn.Module):
    """``convolutional_block`` = TF ``SAME`` transposed conv (output ``stride`` x input), BN,
    [activation]: NiftyNet's ``DeconvolutionalLayer``."""

    def __init__(self, cin, cout, kernel=3, stride=2, activation="relu", eps=1e-5):
        super().__init__()
        layers = [ConvTranspose3dSame(cin, cout, kernel, stride=stride, bias=False), nn.BatchNorm3d(cout, eps=eps)]
        if activation is not None:
            layers.append(_activation(activation, cout))
        self.convolutional_block = nn.Sequential(*layers)

    def forward(self, x):
        return self.convolutional_block(x)


class ResidualBlock(nn.Module):
    """Two pre-activation convolutions plus the identity, zero-padded along channels."""

    def __init__(self, cin, cout, dilation, activation="relu", eps=1e-5):
        super().__init__()
        self.residual_block = nn.Sequential(
            ConvolutionalBlock(cin, cout, 3, dilation, True, activation, eps),
            ConvolutionalBlock(cout, cout, 3, dilation, True, activation, eps),
        )
        grow = cout - cin
        if grow < 0:
            raise ValueError("HighRes3DNet residual blocks never reduce channels")
        self.channel_padding = (grow // 2, grow - grow // 2)

    def forward(self, x):
        before, after = self.channel_padding
        identity = nn.functional.pad(x, (0, 0, 0, 0, 0, 0, before, after)) if before or after else x
        return self.residual_block(x) + identity


class DilationBlock(nn.Module):
    def __init__(self, cin, cout, dilation, repeat, activation="relu", eps=1e-5):
        super().__init__()
        blocks = [ResidualBlock(cin if i == 0 else cout, cout, dilation, activation, eps) for i in range(repeat)]
        self.dilation_block = nn.Sequential(*blocks)

    def forward(self, x):
        return self.dilation_block(x)


class HighRes3DNet(nn.Module):
    """NiftyNet's HighRes3DNet (or HighRes3DNetSmall / Large), built from ``layout`` (its layer table). Its state dict has the
    layout of the published PyTorch weights (fepegar/highresnet,
    ``block.0.convolutional_block.1.weight``, ...).

    ``block.5`` is a dropout layer (identity in eval mode), kept so that keys match the
    published weights; NiftyNet's graph has none at inference.
    """

    def __init__(self, layout: Layout, in_channels: int = 1, num_classes: int = 160, activation: str = "relu",
                 dropout: float = 0.5, eps: float = 1e-5):
        super().__init__()
        blocks: List[nn.Module] = [ConvolutionalBlock(in_channels, layout.stem, layout.stem_kernel, 1, False,
                                                      activation, eps, stride=layout.stem_stride)]
        cin = layout.stem
        for _, cout, dilation in layout.stages:
            blocks.append(DilationBlock(cin, cout, dilation, layout.blocks_per_stage, activation, eps))
            cin = cout
        for layer in layout.head_layers():
            if layer.kind == "dropout":
                blocks.append(nn.Dropout3d(dropout))
                continue
            cout = num_classes if layer.features is None else layer.features
            act = activation if layer.activation else None
            if layer.kind == "deconv":
                blocks.append(DeconvolutionalBlock(cin, cout, layer.kernel, layer.stride, act, eps))
            elif layer.kind == "conv":
                blocks.append(ConvolutionalBlock(cin, cout, layer.kernel, 1, False, act, eps, stride=layer.stride))
            else:
                raise ValueError(f"head layer kind must be 'conv', 'deconv' or 'dropout', not {layer.kind!r}")
            cin = cout
        self.block = nn.Sequential(*blocks)

    def forward(self, x):
        return self.block(x)
