"""CPU time of one training step of the organ network with `DepthwiseConv3d`'s backward against PyTorch's own, in
one run.

    python tools/benchmark_training_step.py [--configuration flare_organs_narrow] [--patch 48] [--batch 2]
                                            [--rounds 20] [--threads N]

Two copies of the same network (same weights): as built (depthwise convolutions as `DepthwiseConv3d`) and with every
`DepthwiseConv3d` replaced by a plain `nn.Conv3d`. They take turns, one AdamW step each on the same random batch
(deep-supervision outputs, cross-entropy against random labels), so that a busy host slows both alike. Prints a
Markdown table with the median step of each, their ratio, the largest gradient difference after the first step
(relative to the largest gradient) and the CPU flags. The defaults are the demo's Phase 2: the narrow network,
48^3 patches, batch 2.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmark_cascade import cpu_flags
from torch import nn

from nnunetv2_flare.inference.models.loading import resolve_configuration
from nnunetv2_flare.networks import FlareOrganNet
from nnunetv2_flare.networks.building_blocks.depthwise_conv import DepthwiseConv3d

PLANS_TEMPLATE = Path(__file__).resolve().parents[1] / "plans" / "flare_plans.json"


def with_plain_convs(network: nn.Module) -> nn.Module:
    """A copy whose DepthwiseConv3d modules are nn.Conv3d with the same weights (PyTorch's backward)."""
    plain = copy.deepcopy(network)
    for _, module in list(plain.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is DepthwiseConv3d:
                conv = nn.Conv3d(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                                 groups=child.groups, bias=child.bias is not None)
                conv.load_state_dict(child.state_dict())
                setattr(module, child_name, conv)
    return plain


def loss_of(network: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the deep-supervision outputs, each against the target at its own size."""
    return sum(F.cross_entropy(o, F.interpolate(target[:, None].float(), size=o.shape[2:]).long()[:, 0])
               for o in network(x))


def step(network: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor) -> float:
    t = time.perf_counter()
    loss = loss_of(network, x, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t


def gradient_difference(a: nn.Module, b: nn.Module) -> float:
    largest = max(p.grad.abs().max().item() for p in a.parameters())
    return max((pa.grad - pb.grad).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters())) / largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configuration", default="flare_organs_narrow", help="organ configuration of the plans "
                        "template (flare_organs: the paper's width)")
    parser.add_argument("--patch", type=int, default=48, help="cube edge of the training patch (default 48)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch_kwargs = dict(resolve_configuration(json.loads(PLANS_TEMPLATE.read_text()),
                                             args.configuration)["architecture"]["arch_kwargs"])
    arch_kwargs["drop_path_rate"] = 0.0  # the same function in both copies
    ours = FlareOrganNet(1, 14, deep_supervision=True, **arch_kwargs)
    theirs = with_plain_convs(ours)
    x = torch.randn(args.batch, 1, *(args.patch,) * 3)
    target = torch.randint(0, 14, (args.batch, *(args.patch,) * 3))
    optimizers = {n: torch.optim.AdamW(net.parameters(), 1e-3) for n, net in (("ours", ours), ("theirs", theirs))}

    # one step each from the same weights: the gradients must agree before timing means anything
    for net in (ours, theirs):
        net.zero_grad()
        loss_of(net, x, target).backward()
    difference = gradient_difference(ours, theirs)

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for round_ in range(args.rounds + 1):
        for name, net in (("ours", ours), ("theirs", theirs)) if round_ % 2 else (("theirs", theirs), ("ours", ours)):
            seconds = step(net, optimizers[name], x, target)
            if round_:  # the first round builds oneDNN primitives
                times[name].append(seconds)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    print(f"CPU: {platform.processor() or platform.machine()} ({cpu_flags()}), {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.configuration}, batch {args.batch} x "
          f"{args.patch}^3, median of {args.rounds} steps each, taking turns")
    print("| depthwise convolutions | step (s) | speed-up |")
    print("|---|---|---|")
    print(f"| nn.Conv3d (PyTorch's backward) | {theirs_s:.3f} | 1.00x |")
    print(f"| DepthwiseConv3d | {ours_s:.3f} | {theirs_s / ours_s:.2f}x |")
    print(f"largest gradient difference after one step: {difference:.1e} of the largest gradient")


if __name__ == "__main__":
    main()
