"""Cosine annealing in the form nnU-Net's trainer drives it: `step(epoch)` once per epoch with the epoch number;
optionally after a linear warm-up (short, high-learning-rate runs such as the demo's)."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import _LRScheduler


def cosine_lr(initial_lr: float, step: int, max_steps: int, min_lr: float = 0.0) -> float:
    """torch's CosineAnnealingLR closed form with T_max = max_steps."""
    return min_lr + (initial_lr - min_lr) * (1 + math.cos(math.pi * step / max_steps)) / 2


def warmup_cosine_lr(initial_lr: float, step: int, max_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Linear warm-up over `warmup_steps` steps (step k at (k + 1) / (warmup_steps + 1) of the rate), then cosine
    annealing over the remaining steps."""
    if step < warmup_steps:
        return initial_lr * (step + 1) / (warmup_steps + 1)
    return cosine_lr(initial_lr, step - warmup_steps, max(max_steps - warmup_steps, 1), min_lr)


class CosineAnnealingScheduler(_LRScheduler):
    """Same values as `torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps, eta_min=min_lr)`
    (without warm-up), computed in closed form from the step number that nnU-Net passes
    (`lr_scheduler.step(self.current_epoch)`), so resuming from a checkpoint lands on the right learning rate; torch's
    own class deprecates `step(epoch)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_steps: int, min_lr: float = 0.0,
                 current_step: int | None = None, warmup_steps: int = 0) -> None:
        self.initial_lr, self.max_steps, self.min_lr, self.warmup_steps = initial_lr, max_steps, min_lr, warmup_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = warmup_cosine_lr(self.initial_lr, current_step, self.max_steps, self.warmup_steps, self.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr
