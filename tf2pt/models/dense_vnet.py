"""PyTorch DenseVNet (NiftyNet 0.6.0's ``niftynet/network/dense_vnet.py``; Gibson et al., IEEE TMI
2018), built from a layer table given by the mapping (``mappings/dense_vnet.py`` has the
architecture notes). Inference only: NiftyNet's affine augmentation and batch-wise dropout are
training-time layers.

TF-exact parts (``tf2pt.nn``): the input's average-pooled copy leaves ``SAME`` padding out of
the mean (``AvgPoolSame``); the stride-2 convolutions pad one-sidedly (``Conv3dSame``); every
resize is TF1's legacy linear resize (``ResizeLinearLegacy``).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from tf2pt.nn import AvgPoolSame, Conv3dSame, ResizeLinearLegacy


class DenseVNetLayout(NamedTuple):
    """NiftyNet's DenseVNet hyperparameters that shape the weights."""

    initial_channels: int  # n_initial_conv_channels
    initial_kernel: int  # the initial stride-2 convolution's kernel
    dense_channels: Sequence[int]  # n_dense_channels, per block
    layers: Sequence[int]  # len(dilation_rates[i]): convolutions per dense feature stack
    seg_channels: Sequence[int]  # n_seg_channels: each block's skip convolution
    down_channels: Sequence[Optional[int]]  # n_down_channels: each block's stride-2 convolution (None: none)
    seg_kernel: int  # seg_kernel_size: the final convolution's kernel
    prior_size: Optional[int] = None  # use_prior: a learned log-prior of prior_size^3, else None


class ConvBN(nn.Module):
    """NiftyNet ``ConvolutionalLayer``: conv (no bias) -> BN -> [ReLU]; TF ``SAME`` padding."""

    def __init__(self, cin, cout, kernel=3, stride=1, relu=True, eps=1e-5):
        super().__init__()
        if stride > 1:
            self.conv = Conv3dSame(cin, cout, kernel, stride=stride, bias=False)
        else:
            self.conv = nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=eps)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class DenseBlock(nn.Module):
    """Dense feature stack (each convolution sees the input and every earlier output), then a
    skip convolution and an optional stride-2 down convolution of the whole stack."""

    def __init__(self, cin, dense, layers, seg, down, eps=1e-5):
        super().__init__()
        self.dfs = nn.ModuleList(ConvBN(cin + j * dense, dense, 3, eps=eps) for j in range(layers))
        stack = cin + layers * dense
        self.skip = ConvBN(stack, seg, 3, eps=eps)
        self.down = ConvBN(stack, down, 3, stride=2, eps=eps) if down is not None else None

    def forward(self, x):
        stack: List[torch.Tensor] = [x]
        for conv in self.dfs:
            stack.append(conv(torch.cat(stack, dim=1)))
        merged = torch.cat(stack, dim=1)
        return self.skip(merged), (self.down(merged) if self.down is not None else None)


class DenseVNet(nn.Module):
    """NiftyNet's DenseVNet; logits at the input's size. Sizes must be multiples of 2 ** blocks."""

    def __init__(self, layout: DenseVNetLayout, in_channels: int = 1, num_classes: int = 9, eps: float = 1e-5):
        super().__init__()
        self.downsample = AvgPoolSame((3, 3, 3), (2, 2, 2))
        self.downsample_bn = nn.BatchNorm3d(in_channels, eps=eps)
        self.initial_conv = ConvBN(in_channels, layout.initial_channels, layout.initial_kernel, stride=2, relu=False,
                                   eps=eps)
        blocks = []
        cin = in_channels + layout.initial_channels
        for dense, n, seg, down in zip(layout.dense_channels, layout.layers, layout.seg_channels, layout.down_channels):
            blocks.append(DenseBlock(cin, dense, n, seg, down, eps))
            cin = down if down is not None else 0
        self.blocks = nn.ModuleList(blocks)
        features = in_channels + sum(layout.seg_channels)
        self.final_conv = nn.Conv3d(features, num_classes, layout.seg_kernel, padding=layout.seg_kernel // 2, bias=True)
        self.resize = ResizeLinearLegacy()
        if layout.prior_size is not None:
            # kept in TF's layout (1, p, p, p, 1), NiftyNet's 'spatial_prior_block/prior'
            self.prior = nn.Parameter(torch.ones(1, *([layout.prior_size] * 3), 1))
        else:
            self.prior = None

    def forward(self, x):
        small = self.downsample_bn(self.downsample(x))
        down = torch.cat([small, self.initial_conv(x)], dim=1)
        maps = [small]
        for block in self.blocks:
            skip, down = block(down)
            maps.append(self.resize(skip, like=small))
        out = self.final_conv(torch.cat(maps, dim=1))
        if self.prior is not None:
            out = out + torch.log(self.resize(self.prior.permute(0, 4, 1, 2, 3), like=small))
        return self.resize(out, like=x)
