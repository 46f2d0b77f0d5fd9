"""Phase-1 network: a 3D FasterNet-style encoder with a SegFormer all-MLP head that finds the abdomen in the whole CT
resized to 128^3 (2 classes: background / abdomen)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunetv2_flare.networks.building_blocks.fasternet import FasterNetStage3d
from nnunetv2_flare.networks.building_blocks.helpers import (
    check_spatial_divisibility,
    drop_path_rates,
    init_weights,
    normalize_strides,
)
from nnunetv2_flare.networks.building_blocks.segformer_head import SegFormerHead3d


class FlareLocatorEncoder(nn.Module):
    """Stem (conv k=s=stem_stride, no bias, + IN) then stages of FasterNet blocks, each stage output normalized."""

    def __init__(self, input_channels: int, features_per_stage: Sequence[int], depths: Sequence[int],
                 stem_stride: int, expansion: int, n_div: int, drop_path_rate: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(input_channels, features_per_stage[0], stem_stride, stride=stem_stride, bias=False),
            nn.InstanceNorm3d(features_per_stage[0], affine=False),
        )
        rates = drop_path_rates(depths, drop_path_rate)
        stages, in_ch = [], features_per_stage[0]
        for i, (ch, depth) in enumerate(zip(features_per_stage, depths)):
            stages.append(FasterNetStage3d(in_ch, ch, depth, stride=1 if i == 0 else 2, drop_path_rates=rates[i],
                                           expansion=expansion, n_div=n_div))
            in_ch = ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class FlareLocator(nn.Module):
    """Built by nnU-Net as `FlareLocator(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`.

    The defaults are the paper's configuration: 1,367,618 parameters (plus 260 in the deep-supervision heads),
    about 1.0 G multiply-accumulates at 128^3. Inputs must be divisible by `total_stride` (32 by default).
    Outputs with deep supervision on, highest resolution first: full size, 1/stem_stride (the fused logits before
    the final upsampling), then one per intermediate stage.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (2, 2, 2, 2),
                 stem_stride: int = 4, expansion: int = 2, n_div: int = 4, head_embed_dim: int = 64,
                 head_fuse_groups: int = 64, drop_path_rate: float = 0.1,
                 strides: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        assert len(features_per_stage) == len(depths) >= 3, "one depth per stage, at least 3 stages"
        levels = [(1, 1, 1), (stem_stride,) * 3] + [(2, 2, 2)] * (len(features_per_stage) - 1)
        self.strides = normalize_strides(strides if strides is not None else levels, levels, "FlareLocator")
        self.total_stride = stem_stride * 2 ** (len(features_per_stage) - 1)
        self.encoder = FlareLocatorEncoder(input_channels, features_per_stage, depths, stem_stride, expansion,
                                           n_div, drop_path_rate)
        self.decoder = SegFormerHead3d(features_per_stage, head_embed_dim, num_classes, stem_stride,
                                       head_fuse_groups, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_spatial_divisibility(x, self.total_stride, "FlareLocator")
        return self.decoder(self.encoder(x))

    initialize = staticmethod(init_weights)
