"""Splitting a batch over several processes or machines (nnU-Net's -num_parts / -part_id).

nnU-Net's rule: sort the cases by name, part K of N takes every N-th case starting at K (`cases[K::N]`). Every case
lands in exactly one part whatever order the inputs were given in, so N jobs started with the same inputs and
K = 0..N-1 (a SLURM job array) predict each case once. They may share one output folder: the per-case claims of
safety.py keep that safe even if two parts overlapped.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

Case = TypeVar("Case")


def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise ValueError(f"-num_parts must be at least 1; got {num_parts}.")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"-part_id must be in 0..{num_parts - 1} for -num_parts {num_parts}; got {part_id} "
                         f"(parts count from 0, as in nnU-Net).")


def select_part(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0, key=lambda c: c.name) -> list[Case]:
    """Part `part_id` of `num_parts` of `cases` (checked with `check_part`): sorted by `key`, then every
    num_parts-th from part_id."""
    return sorted(cases, key=key)[part_id::num_parts] if num_parts > 1 else list(cases)
