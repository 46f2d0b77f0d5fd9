"""Encoder pieces of the Phase-2 organ network: Scale-Aware Modulator (SAM), multi-head self-attention (MSA), the
detail feed-forward and the pre-norm transformer block that holds them.

Tensors inside the blocks are channels-last (B, D, H, W, C) because Linear and LayerNorm act on the last dimension;
the depthwise convolutions switch to channels-first and back.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_flare.networks.building_blocks.depthwise_conv import DepthwiseConv3d
from nnunetv2_flare.networks.building_blocks.helpers import DropPath, to_channels_first, to_channels_last


class ScaleAwareModulator(nn.Module):
    """v = Linear(x); s = Linear(x) split into heads, each head a depthwise conv of its own kernel size; the heads are
    interleaved so every group of `len(kernel_sizes)` channels holds one channel of each scale, mixed by a grouped
    1x1x1 conv (C -> 2C, groups C/heads) -> IN -> GELU -> 1x1x1 (2C -> C). Output: Linear(s * v).
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7), expansion: int = 2) -> None:
        super().__init__()
        heads = len(kernel_sizes)
        assert channels % heads == 0, f"SAM needs channels ({channels}) divisible by its {heads} scales"
        self.head_channels = channels // heads
        self.v = nn.Linear(channels, channels)
        self.s = nn.Linear(channels, channels)
        self.local_convs = nn.ModuleList([
            DepthwiseConv3d(self.head_channels, k) for k in kernel_sizes
        ])
        self.mix = nn.Sequential(
            nn.Conv3d(channels, channels * expansion, 1, groups=self.head_channels),
            nn.InstanceNorm3d(channels * expansion, affine=False),
            nn.GELU(),
            nn.Conv3d(channels * expansion, channels, 1),
        )
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v(x)
        s = to_channels_first(self.s(x))
        per_scale = [conv(chunk) for conv, chunk in zip(self.local_convs, torch.split(s, self.head_channels, dim=1))]
        # (B, C/h, h, D, H, W) -> (B, C, D, H, W): channel 3i+j is channel i of scale j
        s = torch.stack(per_scale, dim=2).flatten(1, 2)
        s = to_channels_last(self.mix(s))
        return self.proj(s * v)


class MultiHeadSelfAttention(nn.Module):
    """Global multi-head self-attention over all voxels of the stage, plus a depthwise 3x3x3 conv of V added to the
    attention output (local detail), then a Linear projection."""

    def __init__(self, channels: int, head_dim: int = 30) -> None:
        super().__init__()
        assert channels % head_dim == 0, f"MSA needs channels ({channels}) divisible by head_dim ({head_dim})"
        self.num_heads = channels // head_dim
        self.qkv = nn.Linear(channels, channels * 3)
        self.local_v = DepthwiseConv3d(channels, 3)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, d * h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, d, h, w, c)
        v_map = to_channels_first(v.transpose(1, 2).reshape(b, d, h, w, c))
        return self.proj(attn + to_channels_last(self.local_v(v_map)))


class DetailFeedForward(nn.Module):
    """Linear C -> eC, GELU(h + depthwise3x3x3(h)), Linear eC -> C."""

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = DepthwiseConv3d(hidden, 3)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = self.act(h + to_channels_last(self.dwconv(to_channels_first(h))))
        return self.fc2(h)


class TransformerBlock(nn.Module):
    """Pre-norm block: x += mixer(LN(x)); x += FFN(LN(x)). `mixer` is 'sam' or 'msa'."""

    def __init__(self, channels: int, mixer: str, head_dim: int, sam_kernel_sizes: Sequence[int],
                 mlp_expansion: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        if mixer == "sam":
            self.mixer = ScaleAwareModulator(channels, sam_kernel_sizes)
        elif mixer == "msa":
            self.mixer = MultiHeadSelfAttention(channels, head_dim)
        else:
            raise ValueError(f"unknown mixer {mixer!r}; expected 'sam' or 'msa'")
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = DetailFeedForward(channels, mlp_expansion)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.ffn(self.norm2(x)))


def mixers_for_stage(pattern: str, depth: int) -> list[str]:
    """'sam' / 'msa' for every block, or 'sam_msa' for SAM on even and MSA on odd blocks."""
    if pattern in ("sam", "msa"):
        return [pattern] * depth
    if pattern == "sam_msa":
        return ["sam" if i % 2 == 0 else "msa" for i in range(depth)]
    raise ValueError(f"unknown stage pattern {pattern!r}; expected 'sam', 'msa' or 'sam_msa'")
