"""How long `nnUNetv2_flare_demo` will take on this machine, estimated up front from a few timed training steps.

CPUs differ by more than the demo's stages do: a 2-core Zen 3 (AVX2) took 1.7x as long as a Zen 4 with AVX-512. So
the estimate reads the machine: it times a few training steps of each phase's network at the demo's batch and
patch (after one warm-up step; nnU-Net's loss on every deep-supervision output), in this process, with the threads
and OpenMP settings the training stages get. Training takes its iterations times the step, plus what an epoch does
besides (`EPOCH_OVERHEAD`) and the start of nnUNetv2_train; every other stage is a number of organ-network steps per
case or per run (`STAGE_STEPS`), from the idle Zen 4 reference run (docs/demo.md, "How long it takes").
"""
from __future__ import annotations

import time
from dataclasses import dataclass

# a training stage's seconds over (iterations x the timed step): the validation batch and checkpoint of each epoch
# of 25 iterations. The timed step equals nnUNetv2_train's own step with the patches loaded in the process to 2 %
# (both networks, the demo's data). Each training stage also starts nnUNetv2_train: TRAINING_START organ steps.
EPOCH_OVERHEAD = 1.05
TRAINING_START = 20.0
# the other stages in organ-network training steps: (fixed, per item), the items being the phantoms made
# ("phantoms", "preprocess") or the held-out cases ("predict", "evaluate")
STAGE_STEPS = {"phantoms": (0.0, 0.39), "plan": (52.0, 0.0), "preprocess": (0.0, 1.10), "predict": (0.0, 15.0),
               "evaluate": (3.0, 0.0)}
TIMED_STEPS = 3


@dataclass(frozen=True)
class StepSeconds:
    """Seconds of one training step of each phase's network on this machine."""
    locator: float
    organs: float


def _network(configuration: dict, num_classes: int):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    arch = configuration["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                     arch.get("_kw_requires_import", []), 1, num_classes, deep_supervision=True)
    return network


def _nnunet_loss(num_outputs: int):
    """nnU-Net's default loss as its trainer builds it: soft Dice + cross-entropy on every deep-supervision output,
    weights halving per scale, the coarsest unused."""
    import numpy as np
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(num_outputs)])
    weights[-1] = 0
    return DeepSupervisionWrapper(loss, weights / weights.sum())


def _step_seconds(network, batch: int, patch: tuple[int, ...], num_classes: int, steps: int = TIMED_STEPS) -> float:
    """Median seconds of a training step as nnU-Net's trainer takes it: forward with deep supervision, its loss on
    every output, backward, AdamW."""
    import statistics

    import torch
    import torch.nn.functional as F
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, *patch, generator=generator)
    target = torch.randint(0, num_classes, (batch, 1, *patch), generator=generator).float()
    with torch.no_grad():
        outputs = network(x)
    shapes = [o.shape[2:] for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    targets = [F.interpolate(target, size=s, mode="nearest") for s in shapes]
    loss_function = _nnunet_loss(len(shapes))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):  # the first step warms up the kernels and the allocator
        start = time.perf_counter()
        loss = loss_function(network(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure_steps(locator_configuration: dict, organ_configuration: dict, batch: int,
                  threads: int | None = None, steps: int = TIMED_STEPS) -> StepSeconds:
    """Time the demo's two networks on random data (their configurations as the demo adds them to the plans)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    locator = _network(locator_configuration, 2)
    organs = _network(organ_configuration, 14)
    return StepSeconds(
        locator=_step_seconds(locator, batch, tuple(locator_configuration["patch_size"]), 2, steps),
        organs=_step_seconds(organs, batch, tuple(organ_configuration["patch_size"]), 14, steps))


def estimate_seconds(steps: StepSeconds, locator_iterations: int, organ_iterations: int, phantoms: int,
                     held_out: int) -> dict[str, float]:
    """Seconds of each stage (see the module docstring)."""
    def other(stage: str, count: int) -> float:
        fixed, per_item = STAGE_STEPS[stage]
        return (fixed + per_item * count) * steps.organs
    return {"phantoms": other("phantoms", phantoms), "plan": other("plan", 0),
            "preprocess": other("preprocess", phantoms),
            "train_locator": locator_iterations * steps.locator * EPOCH_OVERHEAD + TRAINING_START * steps.organs,
            "train_organs": organ_iterations * steps.organs * EPOCH_OVERHEAD + TRAINING_START * steps.organs,
            "predict": other("predict", held_out), "evaluate": other("evaluate", held_out)}


