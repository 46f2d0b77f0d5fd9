"""The model interface every backend implements, the choice of backend and the precision check (no torch, no
OpenVINO imported here)."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from nnunetv2_flare.inference.geometry import VoxelGrid

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("fp32", "bf16")


class SegmentationModel(Protocol):
    """Argmax labels (uint8, *shape) for an input (1, 1, *shape), both in the array order as read (z, y, x). Labels,
    not logits: both phases only need the argmax, and OpenVINO computes it inside the network (one byte a voxel
    comes out instead of C floats).

    `grid` is the physical geometry of the input tensor; networks ignore it, oracles in tests use it."""

    def __call__(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray: ...


def tensor_axes(transpose_forward: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Permutations of a (B, C, *spatial) tensor into the network's axis order and back (plans' transpose_forward)."""
    backward = sorted(range(len(transpose_forward)), key=lambda i: transpose_forward[i])
    return (0, 1) + tuple(int(a) + 2 for a in transpose_forward), (0, 1) + tuple(a + 2 for a in backward)


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """`logits.argmax(0)` as uint8 for (C, *spatial) logits, ties to the lower class as argmax does.

    A running maximum over the classes: on the CPU it is several times faster than an argmax over the outer
    dimension of a (C, *spatial) array."""
    logits = np.asarray(logits)
    best = logits[0].copy()
    labels = np.zeros(logits.shape[1:], dtype=np.uint8)
    higher = np.empty(logits.shape[1:], dtype=bool)
    for c in range(1, logits.shape[0]):
        np.greater(logits[c], best, out=higher)
        np.putmask(labels, higher, c)
        np.maximum(best, logits[c], out=best)
    return labels


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """'auto': OpenVINO when it is installed and the device is the CPU, else PyTorch."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    on_cpu = str(device).split(":")[0] == "cpu"
    if backend == "auto":
        return "openvino" if on_cpu and openvino_available() else "torch"
    if backend == "openvino":
        if not on_cpu:
            raise ValueError(f"the openvino backend runs on the CPU; got device {device}")
        if not openvino_available():
            raise RuntimeError('the openvino backend needs OpenVINO: pip install "nnunetv2-flare[openvino]"')
    return backend


def native_bf16() -> bool:
    """Whether OpenVINO can run bf16 natively on this CPU (AVX512_BF16 or AMX). Elsewhere OpenVINO would compute in
    fp32 anyway, so bf16 is never emulated."""
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_precision(precision: str, backend: str) -> str:
    """fp32 (the default) everywhere; bf16 only on OpenVINO on a CPU with native bf16: never emulated."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if backend != "openvino":
            raise ValueError("bf16 runs on the openvino backend only (--backend openvino, or auto with OpenVINO "
                             "installed); the torch backend computes in fp32")
        if not native_bf16():
            raise ValueError("this CPU has no native bf16 (AVX512_BF16 or AMX): OpenVINO would compute in fp32. "
                             "Use --precision fp32")
    return precision
