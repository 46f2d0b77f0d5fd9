"""Window shapes of the organ network: the range a model is trained on, and the windows fitted to a crop.

A model trained on one fixed patch is run on that patch (the fewest tiles that cover the crop, sliding_window.py):
its InstanceNorms and global attention see other statistics and another token grid on other shapes. A model trained
for any window (training/any_window.py) saw, at every iteration, a window drawn from a `WindowRange`: each axis a
multiple of the network's total stride between `minimum` and `maximum`, at most `max_voxels` voxels in all. Such a
model is run on windows fitted to the crop (`fitted_window`): one window over the whole crop where it fits, else the
fewest near-equal windows that cover it. The range travels in the checkpoint (names.WINDOW_CHECKPOINT_KEY) as a
dict in the network's axis order.

Pure Python and NumPy: the trainers (torch) and the OpenVINO path (no torch) both use it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def round_up(n: int, stride: int) -> int:
    return int(math.ceil(n / stride) * stride)


@dataclass(frozen=True)
class WindowRange:
    """Window shapes a model was trained on (one axis order throughout: the network's, or the array's once
    reordered with `permuted`)."""
    minimum: tuple[int, ...]
    maximum: tuple[int, ...]
    max_voxels: int
    stride: int

    def __post_init__(self) -> None:
        if not (len(self.minimum) == len(self.maximum) == 3):
            raise ValueError(f"a window range needs 3 axes; got {self.minimum} .. {self.maximum}")
        for lo, hi in zip(self.minimum, self.maximum):
            if lo < self.stride or lo % self.stride or hi % self.stride or hi < lo:
                raise ValueError(f"window range {self.minimum} .. {self.maximum}: each axis needs multiples of the "
                                 f"stride {self.stride}, minimum <= maximum")
        if self.max_voxels < math.prod(self.minimum):
            raise ValueError(f"max_voxels {self.max_voxels} is below the smallest window {self.minimum}")

    @classmethod
    def around(cls, patch: Sequence[int], stride: int, batch_size: int, smallest: float = 1 / 3,
               largest: float = 3.0) -> "WindowRange":
        """The range around a nominal patch: per axis `smallest` to `largest` times the patch (multiples of the
        stride, at least two: the deepest stage then sees more than one voxel), and the voxels of one nominal batch
        (`batch_size` patches), so a step costs about what the fixed patch's step costs and memory stays bounded."""
        minimum = tuple(max(2 * stride, round_up(int(p * smallest), stride)) for p in patch)
        maximum = tuple(max(lo, round_up(int(p * largest), stride)) for lo, p in zip(minimum, patch))
        return cls(minimum, maximum, int(batch_size * math.prod(patch)), int(stride))

    def permuted(self, axes: Sequence[int]) -> "WindowRange":
        """The same range with its axes reordered: axis i of the result is axis `axes[i]` of this one."""
        return WindowRange(tuple(self.minimum[a] for a in axes), tuple(self.maximum[a] for a in axes),
                           self.max_voxels, self.stride)

    def to_dict(self) -> dict:
        return {"minimum": list(self.minimum), "maximum": list(self.maximum), "max_voxels": self.max_voxels,
                "stride": self.stride}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowRange":
        return cls(tuple(int(v) for v in d["minimum"]), tuple(int(v) for v in d["maximum"]), int(d["max_voxels"]),
                   int(d["stride"]))

    def draw(self, rng: np.random.Generator | None = None, max_batch: int = 1) -> tuple[tuple[int, ...], int]:
        """A window shape for one training batch, and how many such windows fit `max_voxels` (1..max_batch).
        Each axis uniform over its multiples of the stride; shapes over the voxel budget are drawn again (the
        smallest window always fits)."""
        rng = rng or np.random.default_rng()
        choices = [np.arange(lo, hi + 1, self.stride) for lo, hi in zip(self.minimum, self.maximum)]
        for _ in range(1000):
            shape = tuple(int(rng.choice(c)) for c in choices)
            if math.prod(shape) <= self.max_voxels:
                break
        else:
            shape = self.minimum
        return shape, int(min(max_batch, max(1, self.max_voxels // math.prod(shape))))

    def clipped_to(self, shape: Sequence[int], extent: Sequence[int]) -> tuple[int, ...]:
        """`shape` no larger along each axis than `extent` rounded up to the stride (and no smaller than the
        minimum): a window beyond the data would only add padding, which prediction never shows the network."""
        return tuple(max(lo, min(s, round_up(e, self.stride))) for s, e, lo in zip(shape, extent, self.minimum))


def axis_windows(length: int, parts: int, stride: int, minimum: int) -> int:
    """The window along one axis when `length` voxels are split into `parts` near-equal windows."""
    return max(minimum, round_up(math.ceil(length / parts), stride))


def fitted_window(shape: Sequence[int], window_range: WindowRange) -> tuple[int, ...]:
    """The window shape for a crop of `shape` (array order, the range in the same order): one window over the whole
    crop (each axis rounded up to the stride) where it is within the range; else the fewest windows, each axis
    split into near-equal parts, then the fewest voxels computed. The sliding window tiles the crop with this shape
    (sliding_window.tile_starts), which gives exactly those parts."""
    r = window_range
    options = []
    per_axis = [range(1, max(1, math.ceil(n / lo)) + 1) for n, lo in zip(shape, r.minimum)]
    for parts in itertools.product(*per_axis):
        window = tuple(axis_windows(n, k, r.stride, lo) for n, k, lo in zip(shape, parts, r.minimum))
        if any(w > hi for w, hi in zip(window, r.maximum)) or math.prod(window) > r.max_voxels:
            continue
        count = math.prod(parts)
        options.append((count, count * math.prod(window), window))
    # the split into minimum-size windows is always an option: the range's minimum fits its own budget
    return min(options)[2]
