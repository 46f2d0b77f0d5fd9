"""Phase-2 network: an encoder of Scale-Aware Modulators and multi-head self-attention with a decoder of Lightweight
Attention-based Convolutional Blocks (LACB); 14-class logits on 96^3 patches at 1.5 x 1.5 x 2 mm."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunetv2_flare.networks.building_blocks.helpers import (
    check_spatial_divisibility,
    drop_path_rates,
    init_weights,
    normalize_strides,
    to_channels_first,
    to_channels_last,
)
from nnunetv2_flare.networks.building_blocks.lacb import LACB, UpBlock
from nnunetv2_flare.networks.building_blocks.sam_msa import TransformerBlock, mixers_for_stage


class OrganEncoderStage(nn.Module):
    """Downsampling (conv k3 s2 with bias + LayerNorm; the first stage takes the stem's output as it is), the
    transformer blocks, and a closing LayerNorm. Input and output are channels-first."""

    def __init__(self, in_channels: int, channels: int, mixers: Sequence[str], head_dim: int,
                 sam_kernel_sizes: Sequence[int], mlp_expansion: int, drop_path_rates: Sequence[float],
                 downsample: bool) -> None:
        super().__init__()
        self.downsample = nn.Conv3d(in_channels, channels, 3, stride=2, padding=1) if downsample else None
        self.downsample_norm = nn.LayerNorm(channels) if downsample else None
        self.blocks = nn.ModuleList([
            TransformerBlock(channels, m, head_dim, sam_kernel_sizes, mlp_expansion, dp)
            for m, dp in zip(mixers, drop_path_rates)
        ])
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample_norm(to_channels_last(self.downsample(x)))
        else:
            x = to_channels_last(x)
        for block in self.blocks:
            x = block(x)
        return to_channels_first(self.norm(x))


class FlareOrganEncoder(nn.Module):
    """Stem: conv k3 s2 (no bias: an IN follows) -> IN -> ReLU -> grouped 1x1x1 -> LayerNorm; then the stages."""

    def __init__(self, input_channels: int, features_per_stage: Sequence[int], depths: Sequence[int],
                 stage_mixers: Sequence[str], head_dim: int, sam_kernel_sizes: Sequence[int], mlp_expansion: int,
                 drop_path_rate: float) -> None:
        super().__init__()
        c0 = features_per_stage[0]
        assert c0 % 2 == 0, f"the stem expands c/2 -> c channels with groups c/2; got c = {c0}"
        self.stem = nn.Sequential(
            nn.Conv3d(input_channels, c0 // 2, 3, stride=2, padding=1, bias=False),
            nn.InstanceNorm3d(c0 // 2, affine=False),
            nn.ReLU(inplace=True),
            nn.Conv3d(c0 // 2, c0, 1, groups=c0 // 2),
        )
        self.stem_norm = nn.LayerNorm(c0)
        rates = drop_path_rates(depths, drop_path_rate)
        stages, in_ch = [], c0
        for i, (ch, depth, pattern) in enumerate(zip(features_per_stage, depths, stage_mixers)):
            stages.append(OrganEncoderStage(in_ch, ch, mixers_for_stage(pattern, depth), head_dim, sam_kernel_sizes,
                                            mlp_expansion, rates[i], downsample=i > 0))
            in_ch = ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = to_channels_first(self.stem_norm(to_channels_last(self.stem(x))))
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class LACBDecoder(nn.Module):
    """x = s_n + LACB(s_n); then per level: up block, concat with the skip, LACB; finally ConvTranspose3d x2 and a
    1x1x1 classifier. With `deep_supervision` on, returns [full, 1/2, 1/4, ...] logits; the `ds_heads` exist either
    way so that checkpoints load with deep supervision on or off."""

    def __init__(self, features_per_stage: Sequence[int], num_classes: int, deep_supervision: bool = False) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        f = list(features_per_stage)
        self.bottleneck = LACB(f[-1], f[-1])
        self.ups = nn.ModuleList([UpBlock(f[i + 1], f[i]) for i in reversed(range(len(f) - 1))])
        self.lacbs = nn.ModuleList([LACB(2 * f[i], f[i]) for i in reversed(range(len(f) - 1))])
        self.final_up = nn.ConvTranspose3d(f[0], f[0] // 2, 2, stride=2)
        self.classifier = nn.Conv3d(f[0] // 2, num_classes, 1)
        # heads on every LACB output but the deepest level, deepest first (the order of self.lacbs)
        self.ds_heads = nn.ModuleList([nn.Conv3d(f[i], num_classes, 1) for i in reversed(range(len(f) - 1))])

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1] + self.bottleneck(skips[-1])
        level_outputs = []
        for up, lacb, skip in zip(self.ups, self.lacbs, reversed(skips[:-1])):
            x = lacb(torch.cat((up(x), skip), dim=1))
            level_outputs.append(x)
        out = self.classifier(self.final_up(x))
        if not self.deep_supervision:
            return out
        return [out] + [head(h) for head, h in zip(self.ds_heads, level_outputs)][::-1]


class FlareOrganNet(nn.Module):
    """Built by nnU-Net as `FlareOrganNet(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`.

    Defaults are the paper's configuration (channels 60/120/240/480, depths 2/2/2/2, SAM in stages 1-2 and the even
    blocks of stage 3, MSA with head dim 30 elsewhere): 9,373,994 parameters (plus 5,922 in the deep-supervision
    heads at 14 classes), about 25 G multiply-accumulates per 96^3 patch. Inputs must be divisible by
    `total_stride` (16 by default).
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 features_per_stage: Sequence[int] = (60, 120, 240, 480), depths: Sequence[int] = (2, 2, 2, 2),
                 stage_mixers: Sequence[str] = ("sam", "sam", "sam_msa", "msa"), head_dim: int = 30,
                 sam_kernel_sizes: Sequence[int] = (3, 5, 7), mlp_expansion: int = 2, drop_path_rate: float = 0.1,
                 strides: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        n = len(features_per_stage)
        assert n == len(depths) == len(stage_mixers) >= 2, "one depth and one mixer pattern per stage"
        for a, b in zip(features_per_stage[:-1], features_per_stage[1:]):
            assert b % a == 0, f"LACB groups by the finer level's channels: {b} is not a multiple of {a}"
        levels = [(1, 1, 1)] + [(2, 2, 2)] * n
        self.strides = normalize_strides(strides if strides is not None else levels, levels, "FlareOrganNet")
        self.total_stride = 2 ** n
        self.encoder = FlareOrganEncoder(input_channels, features_per_stage, depths, stage_mixers, head_dim,
                                         sam_kernel_sizes, mlp_expansion, drop_path_rate)
        self.decoder = LACBDecoder(features_per_stage, num_classes, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_spatial_divisibility(x, self.total_stride, "FlareOrganNet")
        return self.decoder(self.encoder(x))

    initialize = staticmethod(init_weights)
