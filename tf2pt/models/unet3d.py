"""PyTorch 3D U-Net (NiftyNet 0.6.0's ``niftynet/network/unet.py``, ``UNet3D``; Cicek et al.,
MICCAI 2016), built from a layer table given by the mapping (``mappings/unet.py`` has the notes).

Its layer modules are named as NiftyNet names its layers (``<channels>_bn_<activation>[_<k>]``,
``up_2x2_bn``), so the state dict reads like the checkpoint: ``blocks.L1.layers.32_bn_prelu.conv.weight``.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn


class UNetLayout(NamedTuple):
    """``features``: NiftyNet's ``n_features`` (5 levels); ``blocks``: ``(name, kind, convs,
    kernels, skip)``: ``convs`` are output channel levels (``None``: the classes), ``kind`` is
    ``down`` (2x2x2 max-pool after), ``up`` (2x2x2 stride-2 transposed conv + BN after) or
    ``none``; ``skip`` names the down block whose pre-pool output is concatenated *before* this
    block's input (``concat([skip, input])``), or ``None``."""

    features: Sequence[int]
    blocks: Sequence[Tuple[str, str, Sequence[Optional[int]], Sequence[int], Optional[str]]]
    border: int = 44


def layer_names(channels: Sequence[int], activation: str) -> List[str]:
    """NiftyNet's names for a block's ``ConvolutionalLayer``s, named by their channels: repeated
    names within a block get ``_1``, ``_2``, ... (TF's unique scope names)."""
    seen: Dict[str, int] = {}
    out = []
    for c in channels:
        base = f"{c}_bn_{activation}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}_{k}")
    return out


class ConvBNAct(nn.Module):
    def __init__(self, cin, cout, kernel, activation, eps=1e-5):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False)  # stride 1 SAME
        self.bn = nn.BatchNorm3d(cout, eps=eps)
        self.act = nn.PReLU(num_parameters=cout) if activation == "prelu" else nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class UpBN(nn.Module):
    """NiftyNet's ``DeconvolutionalLayer(kernel 2, stride 2)``: TF ``SAME`` k2 s2 (output 2n,
    nothing cropped) + BN, no activation."""

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.conv = nn.ConvTranspose3d(channels, channels, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm3d(channels, eps=eps)

    def forward(self, x):
        return self.bn(self.conv(x))


class UNetBlock(nn.Module):
    def __init__(self, kind, cin, channels, kernels, activation, eps=1e-5):
        super().__init__()
        self.kind = kind
        self.layers = nn.ModuleDict()
        for name, c, k in zip(layer_names(channels, activation), channels, kernels):
            self.layers[name] = ConvBNAct(cin, c, k, activation, eps)
            cin = c
        self.branch = nn.Identity()  # the block's pre-pool / pre-upsampling output (per-layer checks)
        self.pool = nn.MaxPool3d(2) if kind == "down" else None  # TF SAME k2 s2 on even sizes: no padding
        self.up = UpBN(channels[-1], eps) if kind == "up" else None
        self.out = nn.Identity()  # the block's output

    def forward(self, x):
        for layer in self.layers.values():
            x = layer(x)
        branch = self.branch(x)
        if self.pool is not None:
            x = self.pool(branch)
        elif self.up is not None:
            x = self.up(branch)
        return self.out(x), branch


class UNet3D(nn.Module):
    """NiftyNet's UNet3D: the output is the input size minus ``2 * border`` (88) along each axis;
    sizes must be multiples of 8 and at least 89 (NiftyNet asserts both)."""

    def __init__(self, layout: UNetLayout, in_channels: int = 1, num_classes: int = 2, activation: str = "prelu",
                 eps: float = 1e-5):
        super().__init__()
        f = list(layout.features)
        self.layout = layout
        self.blocks = nn.ModuleDict()
        out_channels: Dict[str, int] = {}
        branch_channels: Dict[str, int] = {}
        cin = in_channels
        for name, kind, convs, kernels, skip in layout.blocks:
            channels = [num_classes if c is None else f[c] for c in convs]
            block_in = cin + (branch_channels[skip] if skip else 0)
            self.blocks[name] = UNetBlock(kind, block_in, channels, kernels, activation, eps)
            branch_channels[name] = channels[-1]
            cin = channels[-1]
        self.border = layout.border

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches: Dict[str, torch.Tensor] = {}
        h = x
        for name, _, _, _, skip in self.layout.blocks:
            if skip:
                h = torch.cat([branches[skip], h], dim=1)
            h, branches[name] = self.blocks[name](h)
        b = self.border
        return h[:, :, b:h.shape[2] - b, b:h.shape[3] - b, b:h.shape[4] - b]
