"""CPU forward latency of both FLARE networks next to nnU-Net's default 3d_fullres PlainConvUNet, in one run.

    python tools/benchmark_networks.py [--repeats 5] [--threads N] [--size 96]

Prints a Markdown table: median latency of `--repeats` timed passes after one warm-up pass (the first pass in a
process also builds oneDNN primitives; it is reported separately), parameters, MACs, and the ratio to PlainConvUNet.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_flare.networks import FlareLocator, FlareOrganNet


def nnunet_default_3d_fullres(num_classes: int = 14) -> nn.Module:
    """nnU-Net's default 3d_fullres network for a 96^3-ish patch: 6 stages, 32..320 features, 2 convs per stage."""
    return PlainConvUNet(
        input_channels=1, n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320], conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, n_conv_per_stage=[2] * 6,
        num_classes=num_classes, n_conv_per_stage_decoder=[2] * 5, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False)


def macs(net: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 2


def time_forward(net: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    with torch.inference_mode():
        t = time.perf_counter()
        net(x)
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--size", type=int, default=96, help="cube edge of the input (default 96)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = args.size
    x = torch.randn(1, 1, s, s, s)
    rows = []
    for name, net in [("nnU-Net 3d_fullres PlainConvUNet", nnunet_default_3d_fullres()),
                      ("FlareOrganNet (Phase 2)", FlareOrganNet(1, 14)),
                      ("FlareLocator (Phase 1)", FlareLocator(1, 2))]:
        net.eval()
        params = sum(p.numel() for p in net.parameters())
        first, median = time_forward(net, x, args.repeats)
        rows.append((name, params, macs(net, x), first, median))
    # the locator's own input size, for reference (the ratio column still compares against PlainConvUNet at s^3)
    locator, x128 = FlareLocator(1, 2).eval(), torch.randn(1, 1, 128, 128, 128)
    first, median = time_forward(locator, x128, args.repeats)
    rows.append(("FlareLocator at its 128^3 input", sum(p.numel() for p in locator.parameters()),
                 macs(locator, x128), first, median))
    base = rows[0][4]
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, input 1x1x{s}^3, median of {args.repeats} after 1 warm-up")
    print("| network | parameters | GMAC | first pass (s) | median (s) | speed-up vs PlainConvUNet |")
    print("|---|---|---|---|---|---|")
    for name, params, m, first, median in rows:
        print(f"| {name} | {params / 1e6:.2f} M | {m / 1e9:.1f} | {first:.2f} | {median:.2f} | {base / median:.1f}x |")


if __name__ == "__main__":
    main()
