"""Decoder pieces of the Phase-2 organ network: the Lightweight Attention-based Convolutional Block (LACB) and the
up block.

The paper's code works in (x, y, z) order with the slice axis last; nnU-Net arrays are (z, y, x). So the paper's
(1, 1, 3) slice-axis conv is (3, 1, 1) here and its (3, 3, 1) in-slice conv is (1, 3, 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_flare.networks.building_blocks.depthwise_conv import DepthwiseConv3d


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                   groups: int) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel_size)
    return _bn_relu6(nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, groups=groups))


def _bn_relu6(conv: nn.Conv3d) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm3d(conv.out_channels), nn.ReLU6(inplace=True))


class LACB(nn.Module):
    """x = ReLU6(BN(slice-axis conv, groups=out)); out = A(x) + sigmoid(B(x)) * x with
    A = depthwise in-slice conv -> BN -> ReLU6 and B = depthwise 1x1x1 -> BN -> ReLU6 (a per-voxel gate)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        assert in_channels % out_channels == 0, \
            f"LACB groups its first conv by out_channels: in ({in_channels}) must be a multiple of out ({out_channels})"
        self.slice_conv = _conv_bn_relu6(in_channels, out_channels, (3, 1, 1), groups=out_channels)
        self.in_slice = _bn_relu6(DepthwiseConv3d(out_channels, (1, 3, 3)))
        self.gate = _conv_bn_relu6(out_channels, out_channels, (1, 1, 1), groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.slice_conv(x)
        return self.in_slice(x) + torch.sigmoid(self.gate(x)) * x


class UpBlock(nn.Module):
    """Grouped 1x1x1 conv (in -> out, groups = out) -> BN -> ReLU6 -> trilinear x2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu6(in_channels, out_channels, (1, 1, 1), groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2, mode="trilinear", align_corners=False)
