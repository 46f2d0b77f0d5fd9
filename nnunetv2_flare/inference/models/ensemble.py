"""Fold ensembles (nnU-Net's `-f 0 1 2 3 4`): each tile's class probabilities averaged over the folds, argmax after.

Test-time augmentation enters the same way: each member seen mirrored (`Mirrored`, nnU-Net's TTA) or shifted by one
voxel (`Shifted`, the organ network's sampling phases) is one more member.

A single fold keeps the labels-out contract (SegmentationModel), with OpenVINO's argmax inside the graph; an
ensemble needs each member's logits instead (LogitsModel), turns them into probabilities (softmax over classes) and
averages them per tile, so the sliding window and everything after it are unchanged: the ensemble is itself a
SegmentationModel. nnU-Net averages the folds' logits and applies the softmax after; averaging probabilities lets each
fold's confidence count, not its logit scale. Memory: one float32 accumulator of C x patch plus one member's logits
at a time.
"""
from __future__ import annotations

import itertools
from typing import Protocol, Sequence

import numpy as np

from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.inference.models.backends import argmax_labels


class LogitsModel(Protocol):
    """Logits (float, C x *shape) for an input (1, 1, *shape), both in the array order as read (z, y, x)."""

    def logits(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray: ...


def softmax_(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of a float32 array, in place (no second C x patch array)."""
    logits -= logits.max(axis=0, keepdims=True)  # exp of the largest is 1: no overflow
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


# nnU-Net's test-time augmentation in 3D: the identity and the 7 combinations of flipping the spatial axes
MIRROR_AXES: tuple[tuple[int, ...], ...] = tuple(c for n in range(4) for c in itertools.combinations(range(3), n))


class Mirrored:
    """A LogitsModel that sees its input flipped along `axes` (spatial, array order) and flips its logits back."""

    def __init__(self, member: LogitsModel, axes: Sequence[int]) -> None:
        self.member, self.axes = member, tuple(axes)

    def logits(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        if not self.axes:
            return self.member.logits(x, grid)
        flipped = self.member.logits(np.flip(x, tuple(a + 2 for a in self.axes)), grid)
        return np.flip(flipped, tuple(a + 1 for a in self.axes))


# the 8 sampling phases of a stride-2 first layer: no shift, or one voxel along each combination of spatial axes
SHIFT_TTA_OFFSETS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((0, 1), repeat=3))


class Shifted:
    """A LogitsModel that sees its input moved by `shift` voxels (per spatial axis, array order; the first voxels
    repeated) and moves its logits back (the last voxels repeated). With a stride-2 stem, as FlareOrganNet's, the
    logits depend on which voxels the stem samples: shifts of one voxel show the network the other sampling phases.
    `grid` is passed on unchanged (networks ignore it)."""

    def __init__(self, member: LogitsModel, shift: Sequence[int]) -> None:
        self.member, self.shift = member, tuple(int(s) for s in shift)

    def logits(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        if not any(self.shift):
            return self.member.logits(x, grid)
        spatial = x.shape[2:]
        moved = np.pad(x, [(0, 0), (0, 0), *((s, 0) for s in self.shift)], mode="edge")
        moved = moved[(slice(None), slice(None), *(slice(0, n) for n in spatial))]
        logits = np.asarray(self.member.logits(np.ascontiguousarray(moved), grid))
        back = np.pad(logits, [(0, 0), *((0, s) for s in self.shift)], mode="edge")
        return back[(slice(None), *(slice(s, s + n) for s, n in zip(self.shift, spatial)))]


def parse_folds(folds: str | int | Sequence[str | int]) -> tuple[str | int, ...]:
    """'all', 3, '3', ['0', '1'] -> ('all',), (3,), (3,), (0, 1). 'all' is one model and cannot be mixed in."""
    items = [folds] if isinstance(folds, (str, int)) else list(folds)
    if not items:
        raise ValueError("-f needs at least one fold (e.g. -f all, -f 0, -f 0 1 2 3 4).")
    parsed: list[str | int] = []
    for item in items:
        text = str(item).strip()
        if text == "all":
            parsed.append("all")
        elif text.isdigit():
            parsed.append(int(text))
        else:
            raise ValueError(f"-f: {item!r} is not a fold; give 'all' or fold numbers such as 0 1 2 3 4.")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"-f: a fold is named twice ({' '.join(map(str, items))}).")
    return tuple(parsed)


class FoldEnsemble:
    """A SegmentationModel that averages its members' softmax probabilities and takes the argmax."""

    def __init__(self, members: Sequence[LogitsModel]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(members)

    def probabilities(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        total = None
        for member in self.members:
            p = softmax_(np.array(member.logits(x, grid), dtype=np.float32))  # a copy: softmax_ works in place
            if total is None:
                total = p
            else:
                total += p
        total /= len(self.members)
        return total

    def scores(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        """What the labels are the argmax of: one member's logits (nnU-Net's export interpolates logits; no softmax
        to pay for), several members' mean probabilities."""
        if len(self.members) == 1:
            return np.asarray(self.members[0].logits(x, grid), dtype=np.float32)
        return self.probabilities(x, grid)

    def __call__(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        return argmax_labels(self.scores(x, grid))
