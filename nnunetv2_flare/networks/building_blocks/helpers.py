"""Small pieces shared by both networks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample during training.

    Written here rather than imported from timm because importing timm costs about a second of start-up, which is
    part of the single-case latency on the CPU.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(depths: Sequence[int], max_rate: float) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates over all blocks, split per stage."""
    total = sum(depths)
    rates = torch.linspace(0, max_rate, total).tolist() if total > 1 else [0.0] * total
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def check_spatial_divisibility(x: torch.Tensor, divisor: int, network_name: str) -> None:
    """Raise a clear error when an input cannot pass through the network's strided stages."""
    spatial = tuple(x.shape[2:])
    if len(spatial) != 3 or any(s % divisor for s in spatial):
        raise ValueError(
            f"{network_name} needs a 5D input (batch, channels, z, y, x) whose spatial sizes are all divisible by "
            f"{divisor} (its total stride); got shape {tuple(x.shape)}. Pad the input to a multiple of {divisor}."
        )


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, D, H, W, C): Linear and LayerNorm act on the last dimension."""
    return x.permute(0, 2, 3, 4, 1)


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W, C) -> (B, C, D, H, W) as a view.

    The view of a contiguous channels-last tensor is a tensor in `torch.channels_last_3d` memory format, which
    oneDNN convolutions take as it is (NDHWC; fastest for the depthwise convs) and return in the same format, so that
    `to_channels_last` after them is free too. Making it contiguous here copied every activation twice per block.
    """
    return x.permute(0, 4, 1, 2, 3)


def init_weights(module: nn.Module) -> None:
    """He init for convolutions (as nnU-Net's InitWeights_He), truncated normal for Linear (as ViTs), unit/zero for
    norms. Used as the networks' static `initialize`, which nnU-Net applies with `network.apply(...)`."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm3d, nn.InstanceNorm3d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def normalize_strides(strides: Sequence[Sequence[int] | int], expected: Sequence[Sequence[int]],
                      network_name: str) -> tuple[tuple[int, ...], ...]:
    """Validate the `strides` entry of the plans' arch_kwargs against the network's real resolution levels.

    nnU-Net derives its deep-supervision scales from them (1 / cumprod(strides), without the deepest level), so they
    must describe the network; they are not a free parameter.
    """
    as_tuples = tuple(tuple(s) if isinstance(s, (list, tuple)) else (int(s),) * 3 for s in strides)
    expected_t = tuple(tuple(s) for s in expected)
    if as_tuples != expected_t:
        raise ValueError(f"{network_name}: arch_kwargs['strides'] must be {[list(s) for s in expected_t]} (the "
                         f"network's resolution levels, from which nnU-Net derives the deep-supervision scales); "
                         f"got {[list(s) for s in as_tuples]}")
    return as_tuples
