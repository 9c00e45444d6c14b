"""PyTorch V-Net (NiftyNet 0.6.0's ``niftynet/network/vnet.py``; Milletari et al., 3DV 2016),
built from a layer table given by the mapping (``mappings/vnet.py`` has the architecture notes).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class VNetLayout(NamedTuple):
    """``features``: NiftyNet's ``n_features`` (5 levels); ``blocks``: ``(name, kind, n_conv,
    level of the convolutions' channels, level of the output's channels or None for the
    classes)`` in NiftyNet's order; kind is ``down``, ``up`` or ``same``."""

    features: Sequence[int]
    blocks: Sequence[Tuple[str, str, int, int, int]]


def _act(activation: str, channels: int) -> nn.Module:
    if activation == "relu":
        return nn.ReLU()
    if activation == "prelu":
        return nn.PReLU(num_parameters=channels)  # NiftyNet's alpha is per channel
    raise ValueError(f"activation must be 'relu' or 'prelu', not {activation!r}")


class VNetBlock(nn.Module):
    """``n_conv`` 5x5x5 convolutions (no bias; an activation after all but the last), plus the
    bypass zero-padded along channels (``(out - in) // 2`` before); then the block's own
    operation (2x2x2 stride-2 conv, 2x2x2 stride-2 transposed conv, or 1x1x1 conv; with bias)
    and an activation. Returns ``(residual, output)``."""

    def __init__(self, kind: str, n_conv: int, cin: int, features: int, cout: int, activation: str):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv3d(cin if i == 0 else features, features, 5, padding=2, bias=False)
                                   for i in range(n_conv))
        self.acts = nn.ModuleList(_act(activation, features) for _ in range(n_conv - 1))
        if kind == "down":  # TF SAME, k2 s2 on even sizes: no padding
            self.final = nn.Conv3d(features, cout, 2, stride=2, bias=True)
        elif kind == "up":  # TF SAME, k2 s2, output 2n: nothing to crop
            self.final = nn.ConvTranspose3d(features, cout, 2, stride=2, bias=True)
        elif kind == "same":
            self.final = nn.Conv3d(features, cout, 1, bias=True)
        else:
            raise ValueError(f"block kind must be 'down', 'up' or 'same', not {kind!r}")
        self.final_act = _act(activation, cout)

    def forward(self, x: torch.Tensor, bypass: torch.Tensor):
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.acts):
                h = self.acts[i](h)
        grow = h.shape[1] - bypass.shape[1]
        if grow < 0:
            raise ValueError("NiftyNet projects a bypass with more channels (ElementwiseLayer 'proj'); not supported")
        if grow:
            bypass = F.pad(bypass, (0, 0, 0, 0, 0, 0, grow // 2, grow - grow // 2))
        res = h + bypass
        return res, self.final_act(self.final(res))


class VNet(nn.Module):
    """NiftyNet's VNet. Sizes must be multiples of 16 (four stride-2 levels)."""

    def __init__(self, layout: VNetLayout, in_channels: int = 1, num_classes: int = 2, activation: str = "relu"):
        super().__init__()
        f = list(layout.features)
        # channel counts: a down block's input is the previous output; the bottom block's too;
        # an up block's is concat([previous output, the residual of its level])
        self.blocks = nn.ModuleDict()
        res_channels = {}
        cin = in_channels
        n_down = sum(b[1] == "down" for b in layout.blocks)
        for index, (name, kind, n_conv, feat_level, out_level) in enumerate(layout.blocks):
            cout = num_classes if out_level is None else f[out_level]
            if kind == "down":
                block_in = cin
                res_channels[name] = f[feat_level]
            elif index == n_down:  # the bottom block
                block_in = cin
            else:
                block_in = cin + res_channels[self._skip_for(name, layout)]
            self.blocks[name] = VNetBlock(kind, n_conv, block_in, f[feat_level], cout, activation)
            cin = cout
        self.layout = layout

    @staticmethod
    def _skip_for(name, layout):
        downs = [b[0] for b in layout.blocks if b[1] == "down"]
        ups = [b[0] for b in layout.blocks if b[1] != "down"][1:]  # after the bottom block
        return downs[::-1][ups.index(name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        names = [b[0] for b in self.layout.blocks]
        kinds = {b[0]: b[1] for b in self.layout.blocks}
        downs = [n for n in names if kinds[n] == "down"]
        residuals = {}
        h = x
        bypass = x.repeat(1, self.layout.features[0], 1, 1, 1)  # NiftyNet's tf.tile(images, [1, 1, 1, 1, n_features[0]])
        for name in downs:
            residuals[name], h = self.blocks[name](h, bypass)
            bypass = h
        bottom = names[len(downs)]
        _, up = self.blocks[bottom](h, h)
        for name in names[len(downs) + 1:]:
            skip = residuals[self._skip_for(name, self.layout)]
            _, up = self.blocks[name](torch.cat([up, skip], dim=1), up)
        return up
