"""SegFormer's all-MLP decoder head, in 3D, with optional deep-supervision heads."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegFormerHead3d(nn.Module):
    """Per stage a 1x1x1 projection to `embed_dim`; nearest upsampling to the finest stage's grid; concatenation
    (deepest stage first, as SegFormer does); a grouped 1x1x1 fuse conv; a 1x1x1 classifier; trilinear upsampling by
    `output_upsample` to the input's resolution.

    With `deep_supervision` on, it also returns logits at the finest stage's grid (before the final upsampling) and
    at stages 2..n-1 (from their projections, through `ds_heads`). `ds_heads` exist either way so that checkpoints
    load with deep supervision on or off.
    """

    def __init__(self, in_channels_per_stage: Sequence[int], embed_dim: int, num_classes: int,
                 output_upsample: int, fuse_groups: int, deep_supervision: bool = False) -> None:
        super().__init__()
        n = len(in_channels_per_stage)
        self.deep_supervision = deep_supervision
        self.output_upsample = output_upsample
        self.projections = nn.ModuleList([nn.Conv3d(c, embed_dim, 1) for c in in_channels_per_stage])
        self.fuse = nn.Conv3d(n * embed_dim, embed_dim, 1, groups=fuse_groups)
        self.classifier = nn.Conv3d(embed_dim, num_classes, 1)
        # one head per intermediate stage (2..n-1); the deepest stage gets none, as in nnU-Net's decoders
        self.ds_heads = nn.ModuleList([nn.Conv3d(embed_dim, num_classes, 1) for _ in range(n - 2)])

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        target = skips[0].shape[2:]
        projected = [proj(s) for proj, s in zip(self.projections, skips)]
        upsampled = [p if p.shape[2:] == target else F.interpolate(p, size=target, mode="nearest")
                     for p in projected]
        fused = self.fuse(torch.cat(upsampled[::-1], dim=1))
        coarse = self.classifier(fused)
        out = F.interpolate(coarse, scale_factor=self.output_upsample, mode="trilinear", align_corners=False)
        if not self.deep_supervision:
            return out
        return [out, coarse] + [head(p) for head, p in zip(self.ds_heads, projected[1:-1])]
