"""Training that ends by a wall-clock deadline, with the cosine schedule fitted to the time (CPU runs of minutes).

The deadline comes from the class (`time_budget_s`: the `_5min` / `_30min` trainers) or from the environment
(`nnUNetFlare_demo_deadline`, a Unix time: `nnUNetv2_train` builds trainers without extra arguments, so
`nnUNetv2_flare_demo` passes its budget this way). After every epoch the number of epochs is re-planned from the
measured epoch times (the median of the last few, so a slow first epoch or a busy moment does not swing the plan),
and the cosine schedule's length with it, so the learning rate anneals to (nearly) zero when the time is up rather
than being cut off high. Under DDP rank 0 decides and the other workers follow.

Resuming (`nnUNetv2_train ... --c`): `checkpoint_latest.pth` is written after every epoch (nnU-Net writes it every
50), and every checkpoint carries the seconds each finished epoch took (in nnU-Net's logger). A resumed run starts at
the next epoch, spends what is left of the class budget (the budget counts seconds of training, so a pause between the
runs costs nothing, and the epoch an interruption cut short is not counted), re-plans before its first epoch and so
continues the schedule's learning rate where it was. An environment deadline stays the absolute time it names.
Environment overrides, all optional:

    nnUNetFlare_demo_deadline     Unix time by which training must end
    nnUNetFlare_demo_max_epochs   upper bound on the number of epochs
    nnUNetFlare_demo_iterations   training iterations per epoch
    nnUNetFlare_demo_batch_size   batch size, at most the plans' value
    nnUNetFlare_demo_lr           AdamW learning rate
"""
from __future__ import annotations

import os
import statistics
import time

import torch
from torch import distributed as dist

from nnunetv2_flare.atomic_io import temporary_sibling
from nnunetv2_flare.names import BATCH_SIZE_ENV, DEADLINE_ENV, ITERATIONS_ENV, LR_ENV, MAX_EPOCHS_ENV
from nnunetv2_flare.training.flare_trainer_base import shorten

# what saving the final checkpoint and shutting down the data loaders takes, kept free before the deadline
END_RESERVE_S = 5.0
# the seconds each epoch took, logged with nnU-Net's logger: every checkpoint carries them
EPOCH_SECONDS_KEY = "time_box_epoch_seconds"
# the epoch time that plans the rest: the median of the last few epochs
RECENT_EPOCHS = 5


def env_number(name: str, default: float | None, cast: type = int) -> float | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a {cast.__name__}") from None


def epochs_that_fit(epochs_done: int, seconds_per_epoch: float, seconds_left: float, max_epochs: int) -> int:
    """Total number of epochs when `epochs_done` are done and each further one takes `seconds_per_epoch`."""
    more = int(max(0.0, seconds_left) // max(seconds_per_epoch, 1e-6))
    return max(epochs_done, min(max_epochs, epochs_done + more))


class _BudgetSpent(Exception):
    pass


class TimeBoxedTraining:
    """Mixin for the FLARE trainers (put it first in the bases). Class attributes give the defaults; the
    environment variables above override them."""

    time_budget_s: float | None = None  # None: only an environment deadline applies
    time_box_iterations: int = 10
    time_box_batch_size: int = 2
    time_box_max_epochs: int = 150
    time_box_lr: float | None = None  # None: the trainer's own learning rate
    clock = staticmethod(time.time)  # the clock deadlines are read on (tests replace it)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.time_box_deadline: float | None = env_number(DEADLINE_ENV, None, float)
        self.time_box_max_epochs = int(env_number(MAX_EPOCHS_ENV, self.time_box_max_epochs))
        shorten(self, num_epochs=self.time_box_max_epochs,
                iterations_per_epoch=int(env_number(ITERATIONS_ENV, self.time_box_iterations)), val_iterations=1,
                batch_size=int(env_number(BATCH_SIZE_ENV, self.time_box_batch_size)))
        lr = env_number(LR_ENV, self.time_box_lr, float)
        if lr:
            self.initial_lr = float(lr)
        self.save_every = 1  # checkpoint_latest after every epoch: what --c resumes from
        self.epoch_seconds()
        self._time_box_mark: float | None = None  # where the time of the epoch under way started

    def save_checkpoint(self, filename: str) -> None:
        # under a temporary name, then renamed: a run killed while writing (now every epoch) keeps its last checkpoint
        tmp = temporary_sibling(filename)
        try:
            super().save_checkpoint(str(tmp))
            if tmp.exists():  # only rank 0 writes, and not with --disable_checkpointing
                os.replace(tmp, filename)
        finally:
            tmp.unlink(missing_ok=True)

    def epoch_seconds(self) -> list[float]:
        """Seconds each finished epoch took, over every run of this training (resumed ones included)."""
        return self.logger.local_logger.my_fantastic_logging.setdefault(EPOCH_SECONDS_KEY, [])

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        seconds = self.epoch_seconds()
        if len(seconds) < self.current_epoch:  # a checkpoint without them: nnU-Net's own epoch start / end times
            starts, ends = (self.logger.get_value(k, step=None) for k in ("epoch_start_timestamps",
                                                                           "epoch_end_timestamps"))
            seconds.extend(end - start for start, end in list(zip(starts, ends))[len(seconds):self.current_epoch])

    def on_train_start(self) -> None:
        super().on_train_start()
        spent = sum(self.epoch_seconds()[:self.current_epoch])
        if self.time_box_deadline is None and self.time_budget_s is not None:
            self.time_box_deadline = self.clock() + self.time_budget_s - spent
        self.print_to_log_file(f"time box: up to {self.num_epochs} epochs of {self.num_iterations_per_epoch} "
                               f"iterations, lr {self.initial_lr:g}"
                               + (f", ending by {time.ctime(self.time_box_deadline)}" if self.time_box_deadline
                                  else ""), also_print_to_console=True)
        if self.current_epoch and self.time_box_deadline is not None:
            self.print_to_log_file(f"time box: resumed after epoch {self.current_epoch - 1}, {spent:.0f} s of "
                                   f"training done", also_print_to_console=True)
            planned = self.plan_remaining_epochs()
            # nnU-Net's loop runs to the num_epochs it finds now: the plan ends it earlier (on_epoch_end), and when
            # nothing fits any more the loop is empty and training goes straight to its end
            self.num_epochs = self.time_box_max_epochs if planned > self.current_epoch else self.current_epoch

    def on_epoch_start(self) -> None:
        if self._time_box_mark is None:
            self._time_box_mark = self.clock()
        super().on_epoch_start()

    def seconds_per_epoch(self) -> float:
        return statistics.median(self.epoch_seconds()[:self.current_epoch][-RECENT_EPOCHS:])

    def plan_remaining_epochs(self) -> int:
        """Re-plan the total number of epochs (and the schedule's length) from the epochs done so far."""
        per_epoch = self.seconds_per_epoch()
        left = self.time_box_deadline - END_RESERVE_S - self.clock()
        planned = epochs_that_fit(self.current_epoch, per_epoch, left, self.time_box_max_epochs)
        if getattr(self, "is_ddp", False) and dist.is_initialized():
            decided = torch.tensor([planned], device=self.device)
            dist.broadcast(decided, src=0)
            planned = int(decided.item())
        self.num_epochs = planned
        self.lr_scheduler.max_steps = planned
        self.print_to_log_file(f"time box: {self.current_epoch} epochs done, {per_epoch:.1f} s each, "
                               f"{max(left, 0):.0f} s left -> {planned} epochs in total")
        return planned

    def on_epoch_end(self) -> None:
        # each epoch's time runs from the previous epoch's end (so the previous checkpoint and plot count too) or
        # from the start of this run's first epoch; logged before nnU-Net's checkpoint, which then carries it
        now = self.clock()
        self.logger.log(EPOCH_SECONDS_KEY, now - self._time_box_mark, self.current_epoch)
        self._time_box_mark = now
        super().on_epoch_end()  # increments current_epoch
        if self.time_box_deadline is not None:
            self.plan_remaining_epochs()
        if self.current_epoch >= self.num_epochs:
            raise _BudgetSpent

    def run_training(self) -> None:
        # nnU-Net's loop iterates over a range fixed at its start; leaving it early is how a shorter plan ends it
        try:
            super().run_training()
        except _BudgetSpent:
            self.on_train_end()
