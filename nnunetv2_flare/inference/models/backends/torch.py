"""The PyTorch backend: a network built from the plans, its checkpoint's weights loaded, run eagerly.

torch is imported inside the functions only: importing this module costs nothing, so the OpenVINO path (which
needs a PyTorch network only to convert a checkpoint on a cache miss) still never loads torch on a cache hit."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.inference.models.backends.base import argmax_labels, tensor_axes
from nnunetv2_flare.names import WINDOW_CHECKPOINT_KEY

if TYPE_CHECKING:
    import torch
    from torch import nn


class NetworkModel:
    """An nn.Module (logits out) as a phase model: applies the plans' transpose_forward around the network and takes
    the argmax."""

    def __init__(self, network: nn.Module, transpose_forward: Sequence[int] = (0, 1, 2),
                 device: str | torch.device = "cpu") -> None:
        import torch
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.trained_window = getattr(network, "trained_window", None)
        self.forward_axes, self.backward_axes = tensor_axes(transpose_forward)

    def logits(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        """(C, *spatial) float32 logits in the array order as read (for ensembles)."""
        import torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            out = self.network(x.permute(self.forward_axes))
            if isinstance(out, (list, tuple)):  # deep supervision left on: full resolution comes first
                out = out[0]
            return out.permute(self.backward_axes)[0].float().cpu().numpy()

    def __call__(self, x: np.ndarray, grid: VoxelGrid | None = None) -> np.ndarray:
        return argmax_labels(self.logits(x, grid))


def clean_state_dict(weights: dict) -> dict:
    """Weights without the prefixes torch.compile and DataParallel add to their names."""
    prefixes = ("_orig_mod.", "module.")
    out = {}
    for k, v in weights.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def build_network(architecture: dict, num_classes: int) -> nn.Module:
    """The plans' network (deep supervision off, no weight init: weights are loaded next), as nnU-Net builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture.get("_kw_requires_import", []), 1, num_classes, allow_init=False,
                                  deep_supervision=False)


def load_network(architecture: dict, num_classes: int, checkpoint_file: Path) -> nn.Module:
    """The plans' network with the checkpoint's weights; `trained_window` holds the window range the checkpoint
    records (window_shapes.py; network axis order), None for a model trained on its patch alone."""
    import torch
    net = build_network(architecture, num_classes)
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    net.load_state_dict(clean_state_dict(checkpoint["network_weights"]))
    net.trained_window = checkpoint.get(WINDOW_CHECKPOINT_KEY)
    return net


def checkpoint_configuration(checkpoint_file: Path) -> str | None:
    """The configuration a checkpoint was trained with (nnU-Net's init_args), if it says."""
    import torch
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    return checkpoint.get("init_args", {}).get("configuration")
