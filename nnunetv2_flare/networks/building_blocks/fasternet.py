"""FasterNet-style pieces of the Phase-1 locator (partial convolution + inverted bottleneck), in 3D."""
from __future__ import annotations

import torch
from torch import nn

from nnunetv2_flare.networks.building_blocks.helpers import DropPath


class PartialConv3d(nn.Module):
    """3x3x3 convolution on the first `channels // n_div` channels; the other channels pass through untouched.

    Convolving a quarter of the channels is what makes FasterNet cheap: the 1x1x1 layers after it mix everything.
    """

    def __init__(self, channels: int, n_div: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        assert channels % n_div == 0, f"channels ({channels}) must be divisible by n_div ({n_div})"
        self.conv_channels = channels // n_div
        self.conv = nn.Conv3d(self.conv_channels, self.conv_channels, kernel_size, padding=kernel_size // 2,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, tail = torch.split(x, [self.conv_channels, x.shape[1] - self.conv_channels], dim=1)
        return torch.cat((self.conv(head), tail), dim=1)


class FasterNetBlock3d(nn.Module):
    """Partial conv -> 1x1x1 C->eC -> IN -> ReLU -> 1x1x1 eC->C, added to the block input."""

    def __init__(self, channels: int, expansion: int = 2, n_div: int = 4, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.spatial_mixing = PartialConv3d(channels, n_div)
        self.mlp = nn.Sequential(
            nn.Conv3d(channels, hidden, 1, bias=False),
            nn.InstanceNorm3d(hidden, affine=False),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, 1, bias=False),
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.spatial_mixing(x)))


class FasterNetStage3d(nn.Module):
    """Optional strided downsampling (k=s, C_in -> C, + IN), the blocks, then an output IN."""

    def __init__(self, in_channels: int, channels: int, depth: int, stride: int,
                 drop_path_rates: list[float], expansion: int = 2, n_div: int = 4) -> None:
        super().__init__()
        if stride > 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, channels, stride, stride=stride, bias=False),
                nn.InstanceNorm3d(channels, affine=False),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            FasterNetBlock3d(channels, expansion, n_div, drop_path_rates[i]) for i in range(depth)
        ])
        self.norm = nn.InstanceNorm3d(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.downsample(x)))
