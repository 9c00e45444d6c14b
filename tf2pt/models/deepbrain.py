"""PyTorch port of deepbrain's brain-extraction 3D U-Net (``deepbrain`` 0.1, ``models/graph.pb``).

Read off the frozen graph (see ``mappings/deepbrain.py`` for the node-by-node table):
three encoder stages of two 3x3x3 ``SAME`` convolutions with bias and ReLU, each followed by a
2x2x2 ``VALID`` max-pool and dropout; three decoder stages of a stride-2 3x3x3 ``SAME``
transposed convolution (no bias, output twice the input size), concatenation ``[upsampled,
skip]`` along channels, one 3x3x3 convolution with ReLU and dropout; a 1x1x1 convolution and a
sigmoid. Dropout (rate 0.3: the graph's keep probability is 0.7) is inactive at inference; note
that the graph's ``training`` input *defaults to True*, so TF must be fed ``training=False``.
"""

from __future__ import annotations

import torch
from torch import nn

from tf2pt.nn import ConvTranspose3dSame


def _conv(cin, cout):
    # stride 1, 3x3x3, TF SAME = symmetric padding 1
    return nn.Conv3d(cin, cout, 3, padding=1, bias=True)


class DeepBrainUNet(nn.Module):
    def __init__(self, in_channels: int = 1, base: int = 8, dropout: float = 0.3):
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.encoder1 = nn.Sequential(_conv(in_channels, c1), nn.ReLU(), _conv(c1, c1), nn.ReLU())
        self.encoder2 = nn.Sequential(_conv(c1, c2), nn.ReLU(), _conv(c2, c2), nn.ReLU())
        self.encoder3 = nn.Sequential(_conv(c2, c3), nn.ReLU(), _conv(c3, c3), nn.ReLU())
        self.pool = nn.MaxPool3d(2)  # TF VALID 2x2x2, stride 2
        self.drop = nn.Dropout(dropout)
        self.up3 = ConvTranspose3dSame(c3, c3, 3, stride=2, bias=False)
        self.decoder3 = nn.Sequential(_conv(2 * c3, c3), nn.ReLU())
        self.up2 = ConvTranspose3dSame(c3, c2, 3, stride=2, bias=False)
        self.decoder2 = nn.Sequential(_conv(2 * c2, c2), nn.ReLU())
        self.up1 = ConvTranspose3dSame(c2, c1, 3, stride=2, bias=False)
        self.decoder1 = nn.Sequential(_conv(2 * c1, c1), nn.ReLU())
        self.head = nn.Conv3d(c1, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Brain probability in [0, 1], shape (N, 1, D, H, W); sizes must be multiples of 8."""
        s1 = self.encoder1(x)
        s2 = self.encoder2(self.drop(self.pool(s1)))
        s3 = self.encoder3(self.drop(self.pool(s2)))
        h = self.drop(self.pool(s3))
        h = self.drop(self.decoder3(torch.cat([self.up3(h), s3], dim=1)))
        h = self.drop(self.decoder2(torch.cat([self.up2(h), s2], dim=1)))
        h = self.drop(self.decoder1(torch.cat([self.up1(h), s1], dim=1)))
        return torch.sigmoid(self.head(h))
