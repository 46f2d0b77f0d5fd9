"""Load the two phases from standard nnU-Net results folders, without nnU-Net's trainer lookup.

A phase is a callable model (`x, grid -> logits`, array order as read) plus what the cascade needs around it:
normalization, patch size and target spacing. Networks are built from the plans (`get_network_from_plans`), so the
folders only need plans.json, dataset.json and fold_<f>/<checkpoint>.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from torch import nn

from nnunetv2_flare.inference.geometry import VoxelGrid

from nnunetv2_flare.inference.defaults import (CHECKPOINT, LOCATOR_CONFIGURATION, LOCATOR_TRAINER,  # noqa: F401
                                               ORGAN_CONFIGURATION, ORGAN_TRAINER, PLANS)


class SegmentationModel(Protocol):
    """Logits (1, C, *shape) for an input (1, 1, *shape), both in the array order as read (z, y, x).

    `grid` is the physical geometry of the input tensor; networks ignore it, oracles in tests use it."""

    def __call__(self, x: torch.Tensor, grid: VoxelGrid) -> torch.Tensor: ...


@dataclass(frozen=True)
class CTNormalization:
    """nnU-Net's CTNormalization: clip to the dataset's foreground 0.5 / 99.5 percentiles, z-score with its
    foreground mean and std."""
    lower: float
    upper: float
    mean: float
    std: float

    @classmethod
    def from_intensity_properties(cls, props: dict) -> "CTNormalization":
        return cls(float(props["percentile_00_5"]), float(props["percentile_99_5"]), float(props["mean"]),
                   float(props["std"]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """In place on a float tensor."""
        return x.clamp_(self.lower, self.upper).sub_(self.mean).div_(max(self.std, 1e-8))


class NetworkModel:
    """An nn.Module as a phase model: applies the plans' transpose_forward around the network."""

    def __init__(self, network: nn.Module, transpose_forward: Sequence[int] = (0, 1, 2),
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.forward_axes = (0, 1) + tuple(int(a) + 2 for a in transpose_forward)
        backward = sorted(range(len(transpose_forward)), key=lambda i: transpose_forward[i])
        self.backward_axes = (0, 1) + tuple(a + 2 for a in backward)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, grid: VoxelGrid | None = None) -> torch.Tensor:
        out = self.network(x.to(self.device).permute(self.forward_axes))
        if isinstance(out, (list, tuple)):  # deep supervision left on: full resolution comes first
            out = out[0]
        return out.permute(self.backward_axes)


@dataclass
class Phase:
    model: SegmentationModel
    normalization: CTNormalization
    patch_size: tuple[int, int, int]  # array order as read
    spacing: tuple[float, float, float] | None  # array order as read; None: resize to patch_size (the locator)
    num_classes: int
    source: str = "injected"


def _to_array_order(values: Sequence, transpose_forward: Sequence[int]) -> tuple:
    """Plans values are in network order (after transpose_forward); the cascade works in the order as read."""
    out = [None] * len(values)
    for network_axis, array_axis in enumerate(transpose_forward):
        out[array_axis] = values[network_axis]
    return tuple(out)


def fold_folder_name(fold: str | int) -> str:
    return "fold_all" if str(fold) == "all" else f"fold_{int(fold)}"


def configuration_of_folder(folder: Path) -> str:
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise ValueError(f"{folder}: not an nnU-Net results folder name (<Trainer>__<Plans>__<configuration>).")
    return parts[2]


def _clean_state_dict(weights: dict) -> dict:
    prefixes = ("_orig_mod.", "module.")
    out = {}
    for k, v in weights.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_phase(model_folder: str | os.PathLike, fold: str | int = "all", checkpoint_name: str = CHECKPOINT,
               device: str | torch.device = "cpu", configuration: str | None = None) -> Phase:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(model_folder)
    checkpoint_file = folder / fold_folder_name(fold) / checkpoint_name
    for needed in (folder / "plans.json", folder / "dataset.json", checkpoint_file):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: {folder} must be a trained nnU-Net model folder "
                                    f"(plans.json, dataset.json, {fold_folder_name(fold)}/{checkpoint_name}). "
                                    f"Check -f / -chk, or train that fold first.")
    plans = PlansManager(str(folder / "plans.json"))
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    configuration = configuration or checkpoint.get("init_args", {}).get("configuration") \
        or configuration_of_folder(folder)
    config = plans.get_configuration(configuration)
    scheme = config.normalization_schemes[0]
    if scheme != "CTNormalization":
        raise ValueError(f"{folder}: configuration {configuration} uses {scheme}; the cascade supports "
                         f"CTNormalization only.")
    label_manager = plans.get_label_manager(load_json(str(folder / "dataset.json")))
    num_classes = label_manager.num_segmentation_heads
    arch = config.configuration["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     1, num_classes, allow_init=False, deep_supervision=False)
    network.load_state_dict(_clean_state_dict(checkpoint["network_weights"]))
    transpose = plans.transpose_forward
    return Phase(model=NetworkModel(network, transpose, device),
                 normalization=CTNormalization.from_intensity_properties(
                     plans.foreground_intensity_properties_per_channel["0"]),
                 patch_size=_to_array_order([int(p) for p in config.patch_size], transpose),
                 spacing=_to_array_order([float(s) for s in config.spacing], transpose),
                 num_classes=num_classes, source=str(checkpoint_file))


def resolve_model_folders(dataset: str | int, locator_trainer: str = LOCATOR_TRAINER,
                          locator_configuration: str = LOCATOR_CONFIGURATION, organ_trainer: str = ORGAN_TRAINER,
                          organ_configuration: str = ORGAN_CONFIGURATION, plans: str = PLANS,
                          results_folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The locator and organ model folders of a dataset under $nnUNet_results."""
    results = results_folder or os.environ.get("nnUNet_results")
    if not results:
        raise RuntimeError("nnUNet_results is not set: export nnUNet_results=/path/to/results, or name the model "
                           "folders directly with -m1 LOCATOR_FOLDER -m2 ORGAN_FOLDER.")
    results = Path(results)
    name = str(dataset)
    if not name.startswith("Dataset"):
        dataset_id = int(name)
        matches = sorted(p.name for p in results.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
        if len(matches) != 1:
            raise FileNotFoundError(f"{'No' if not matches else 'More than one'} dataset with id {dataset_id} in "
                                    f"{results} ({matches}).")
        name = matches[0]
    folders = (results / name / f"{locator_trainer}__{plans}__{locator_configuration}",
               results / name / f"{organ_trainer}__{plans}__{organ_configuration}")
    for f in folders:
        if not f.is_dir():
            raise FileNotFoundError(f"Model folder {f} not found. Train it first, or pick the trainer / "
                                    f"configuration / plans with -tr1 -c1 -tr2 -c2 -p, or use -m1/-m2.")
    return folders
